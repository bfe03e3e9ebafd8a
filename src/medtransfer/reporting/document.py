"""A tiny document model rendered twice: to Markdown (``report.md``) and to self-contained HTML (``report.html``).

The report is built once as a list of blocks, so both files carry the same content by construction, and the
HTML needs no Markdown parser. Text inside blocks is a sequence of :class:`Span` (plain, bold, code, italic);
each renderer escapes it for its own format, so error messages with ``|``, ``*`` or ``<`` stay literal.

The one exception is caller-supplied discussion text (:class:`Markdown`): it goes into ``report.md`` verbatim and
into the HTML through :func:`render_notes_html` (markdown-it-py: CommonMark with tables; raw HTML is escaped and
images are not loaded).
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from markdown_it import MarkdownIt


@dataclass(frozen=True)
class Span:
    """A run of inline text with one style: ``plain``, ``bold``, ``code`` or ``italic``."""

    text: str
    style: str = "plain"


Inline = str | Span | Sequence["str | Span"]


def bold(text: str) -> Span:
    return Span(text, "bold")


def code(text: str) -> Span:
    return Span(text, "code")


def italic(text: str) -> Span:
    return Span(text, "italic")


@dataclass(frozen=True)
class Heading:
    level: int
    text: Inline


@dataclass(frozen=True)
class Paragraph:
    text: Inline


@dataclass(frozen=True)
class BulletList:
    items: Sequence[Inline]


@dataclass(frozen=True)
class Table:
    """A table; ``align`` holds ``"l"`` or ``"r"`` per column (numbers read better right-aligned)."""

    header: Sequence[str]
    rows: Sequence[Sequence[Inline]]
    align: Sequence[str] = field(default_factory=tuple)


@dataclass(frozen=True)
class Image:
    """A PNG: linked by ``rel_path`` from Markdown, inlined from ``path`` as a data URI in HTML."""

    alt: str
    rel_path: str
    path: Path


@dataclass(frozen=True)
class CodeBlock:
    text: str


@dataclass(frozen=True)
class Markdown:
    """Markdown written by the caller (e.g. discussion notes)."""

    text: str


Block = Heading | Paragraph | BulletList | Table | Image | CodeBlock | Markdown


def _spans(text: Inline) -> list[Span]:
    if isinstance(text, str):
        return [Span(text)]
    if isinstance(text, Span):
        return [text]
    return [s if isinstance(s, Span) else Span(s) for s in text]


# ---------------------------------------------------------------- Markdown

# Escape only what Markdown would interpret here (emphasis, code, cells, tags, links), so the raw file stays
# readable: "p<0.05" and "[0.7, 0.9]" need no backslashes, "<oom>" and "a|b" do.
_MD_SPECIAL = re.compile(r"([\\`*_|])|(<(?=[A-Za-z/!?]))|(\](?=[(\[:]))")


def _md_code(text: str, in_table: bool) -> str:
    # A fence one backtick longer than any run inside keeps backticks in error messages literal.
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    if in_table:
        text = text.replace("|", r"\|")  # GFM splits cells on '|' even inside code spans
    return f"{fence}{pad}{text}{pad}{fence}"


def _md_inline(text: Inline, in_table: bool = False) -> str:
    out = []
    for s in _spans(text):
        t = re.sub(r"\s+", " ", s.text) if in_table else s.text  # a newline would end the table row
        if s.style == "code":
            out.append(_md_code(t, in_table))
            continue
        t = _MD_SPECIAL.sub(lambda m: "\\" + m.group(0), t)
        out.append({"bold": f"**{t}**", "italic": f"*{t}*"}.get(s.style, t) if t else t)
    return "".join(out)


def _md_table(table: Table) -> str:
    align = list(table.align) + ["l"] * (len(table.header) - len(table.align))
    lines = ["| " + " | ".join(_md_inline(h, True) for h in table.header) + " |"]
    lines.append("|" + "|".join("---:" if a == "r" else ":---" for a in align) + "|")
    for row in table.rows:
        lines.append("| " + " | ".join(_md_inline(c, True) for c in row) + " |")
    return "\n".join(lines)


def to_markdown(blocks: Sequence[Block]) -> str:
    """Render blocks as GitHub-flavoured Markdown.

    Example:
        >>> to_markdown([Heading(1, "Study"), Table(["arm", "AUC"], [["a|b", bold("0.9")]], "lr")])
        '# Study\\n\\n| arm | AUC |\\n|:---|---:|\\n| a\\\\|b | **0.9** |\\n'
    """
    parts = []
    for b in blocks:
        if isinstance(b, Heading):
            parts.append("#" * b.level + " " + _md_inline(b.text))
        elif isinstance(b, Paragraph):
            parts.append(_md_inline(b.text))
        elif isinstance(b, BulletList):
            parts.append("\n".join("- " + _md_inline(item) for item in b.items))
        elif isinstance(b, Table):
            parts.append(_md_table(b))
        elif isinstance(b, Image):
            parts.append(f"![{_md_inline(b.alt)}]({b.rel_path})")
        elif isinstance(b, CodeBlock):
            fence = "`" * max(3, max((len(m) + 1 for m in re.findall(r"`{3,}", b.text)), default=3))
            parts.append(f"{fence}\n{b.text}\n{fence}")
        elif isinstance(b, Markdown):
            parts.append(b.text.strip())
    return "\n\n".join(parts) + "\n"


# ---------------------------------------------------------------- HTML

# Everything the page needs is inline; the CSP makes a browser refuse (and log) any external fetch.
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1100px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #ddd; padding-bottom: .2em; }
h2 { border-bottom: 1px solid #eee; padding-bottom: .15em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: .8em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: .3em .6em; vertical-align: top; }
th { background: #f3f3f3; }
td.r, th.r { text-align: right; font-variant-numeric: tabular-nums; }
tr:nth-child(even) td { background: #fafafa; }
code, pre { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 0.9em; background: #f5f5f5; }
code { padding: 0 .2em; }
pre { padding: .6em; overflow-x: auto; white-space: pre-wrap; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
"""


def _html_inline(text: Inline) -> str:
    tags = {"bold": "strong", "code": "code", "italic": "em"}
    out = []
    for s in _spans(text):
        t = html.escape(s.text)
        tag = tags.get(s.style)
        out.append(f"<{tag}>{t}</{tag}>" if tag and t else t)
    return "".join(out)


def _html_table(table: Table) -> str:
    align = list(table.align) + ["l"] * (len(table.header) - len(table.align))
    cls = [' class="r"' if a == "r" else "" for a in align]
    head = "".join(f"<th{c}>{_html_inline(h)}</th>" for h, c in zip(table.header, cls, strict=False))
    body = "".join(
        "<tr>" + "".join(f"<td{c}>{_html_inline(v)}</td>" for v, c in zip(row, cls, strict=False)) + "</tr>\n"
        for row in table.rows
    )
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody>\n</table>"


def render_notes_html(text: str) -> str:
    """HTML for caller-written notes (a study's discussion): CommonMark with tables, by markdown-it-py. Raw HTML in
    the notes is shown as text and images are not loaded, so the page stays self-contained under its CSP.

    Example:
        >>> render_notes_html("Scratch **lags**.\\n\\n- one\\n- two")
        '<p>Scratch <strong>lags</strong>.</p>\\n<ul>\\n<li>one</li>\\n<li>two</li>\\n</ul>'
    """
    md = MarkdownIt("commonmark", {"html": False}).enable("table").disable("image")
    return md.render(text.strip("\n")).strip()


def to_html(blocks: Sequence[Block], title: str) -> str:
    """Render blocks as one self-contained HTML page: inline CSS, PNGs as base64 data URIs, no scripts or URLs.

    Example:
        >>> page = to_html([Heading(1, "Study"), Paragraph(["AUC ", bold("0.9")])], "Study")
        >>> "<strong>0.9</strong>" in page and "http" not in page.split("<body>")[1]
        True
    """
    body = []
    for b in blocks:
        if isinstance(b, Heading):
            body.append(f"<h{b.level}>{_html_inline(b.text)}</h{b.level}>")
        elif isinstance(b, Paragraph):
            body.append(f"<p>{_html_inline(b.text)}</p>")
        elif isinstance(b, BulletList):
            body.append("<ul>\n" + "\n".join(f"<li>{_html_inline(i)}</li>" for i in b.items) + "\n</ul>")
        elif isinstance(b, Table):
            body.append(_html_table(b))
        elif isinstance(b, Image):
            data = base64.b64encode(Path(b.path).read_bytes()).decode("ascii")
            body.append(f'<p><img alt="{html.escape(b.alt)}" src="data:image/png;base64,{data}"></p>')
        elif isinstance(b, CodeBlock):
            body.append(f"<pre><code>{html.escape(b.text)}</code></pre>")
        elif isinstance(b, Markdown):
            body.append(render_notes_html(b.text))
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )

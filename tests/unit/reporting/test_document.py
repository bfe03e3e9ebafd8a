"""One block model, two renderings: Markdown escaping, HTML escaping, inlined images, caller notes."""

from __future__ import annotations

import base64

from medtransfer.reporting.document import (
    CSP,
    BulletList,
    CodeBlock,
    Heading,
    Image,
    Markdown,
    Paragraph,
    Table,
    bold,
    code,
    render_notes_html,
    to_html,
    to_markdown,
)


def test_markdown_escapes_only_what_markdown_would_interpret():
    md = to_markdown(
        [
            Paragraph("p<0.05 within [0.7, 0.9]; a *star*, a_b and <tag>"),
            Table(["arm", "err"], [["a|b", code("x | `y`")]], "lr"),
        ]
    )
    assert r"p<0.05 within [0.7, 0.9]; a \*star\*, a\_b and \<tag>" in md
    assert r"| a\|b | `` x \| `y` `` |" in md
    assert "|:---|---:|" in md


def test_table_cells_keep_one_line_and_spaces():
    md = to_markdown([Table(["a"], [[["0.8", " [0.7, 0.9]", "\nnext"]]])])
    assert md.splitlines()[-1] == "| 0.8 [0.7, 0.9] next |"


def test_html_escapes_and_styles(tmp_path):
    png = tmp_path / "f.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\nfake")
    page = to_html(
        [
            Heading(1, "T <1>"),
            Paragraph(["AUC ", bold("0.9"), " & ", code("<x>")]),
            BulletList(["one", ["two ", bold("2")]]),
            Table(["arm", "AUC"], [["a", bold("0.9")]], "lr"),
            Image("fig", "figures/f.png", png),
            CodeBlock("cmd --x <y>"),
        ],
        "T <1>",
    )
    assert "<title>T &lt;1&gt;</title>" in page and "<h1>T &lt;1&gt;</h1>" in page
    assert "<p>AUC <strong>0.9</strong> &amp; <code>&lt;x&gt;</code></p>" in page
    assert "<li>two <strong>2</strong></li>" in page
    assert '<td class="r"><strong>0.9</strong></td>' in page
    assert f'src="data:image/png;base64,{base64.b64encode(png.read_bytes()).decode()}"' in page
    assert "<pre><code>cmd --x &lt;y&gt;</code></pre>" in page
    assert f'content="{CSP}"' in page and "figures/f.png" not in page


def test_same_blocks_in_both_renderings():
    blocks = [Heading(2, "Discussion"), Markdown("Text with **bold**.")]
    assert to_markdown(blocks) == "## Discussion\n\nText with **bold**.\n"
    assert "<h2>Discussion</h2>\n<p>Text with <strong>bold</strong>.</p>" in to_html(blocks, "x")


def test_notes_are_commonmark_without_raw_html():
    notes = (
        "# Head\n\nA *b* and `c*d*`\n\n- one\n- two\n\n```\nx <y>\n```\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n<b>x</b>"
    )
    page = render_notes_html(notes)
    assert page.startswith("<h1>Head</h1>\n<p>A <em>b</em> and <code>c*d*</code></p>")
    assert "<li>one</li>" in page and "<pre><code>x &lt;y&gt;\n</code></pre>" in page
    assert "<table>" in page and "<td>1</td>" in page  # tables
    assert "&lt;b&gt;x&lt;/b&gt;" in page and "<b>" not in page  # raw HTML stays text

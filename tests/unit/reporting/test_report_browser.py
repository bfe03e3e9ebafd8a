"""report.html in headless Chromium: no console messages, and every figure decodes (naturalWidth > 0).

Chromium prints a page's console to stderr with ``--enable-logging=stderr`` as
``[...:INFO:CONSOLE:2] "message", source: file:///... (2)`` (older builds: ``CONSOLE(2)] "message"``), at the same
level for log, warn and error, so any console line counts as a failure: the report itself has no scripts.
To read ``naturalWidth`` the test loads a copy of the page with a probe script appended that writes the widths
into the DOM after ``load``; ``--dump-dom`` prints that DOM. The report's Content-Security-Policy blocks scripts,
so the copy adds ``script-src 'unsafe-inline'`` and nothing else: any external fetch is still refused and logged.
A deliberately broken page checks that both detections fire, so a silently passing browser run cannot hide.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from medtransfer.reporting.document import CSP

INSTALL = "apt-get update && apt-get install -y --no-install-recommends chromium"
_CONSOLE = re.compile(r'(?:CONSOLE\(\d+\)\]|:CONSOLE:\d+\])\s*"(?P<msg>.*)", source: (?P<src>.*)$')
_PROBE = (
    "<script>window.addEventListener('load', () => document.body.setAttribute('data-img-widths',"
    " Array.from(document.images).map(i => i.naturalWidth).join(',')));</script>"
)


@pytest.fixture(scope="module")
def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip(f"Chromium is not installed; install it with `{INSTALL}` (make test tries to)")


def load_in_chromium(browser: str, page: Path, work: Path) -> tuple[list[str], list[int] | None]:
    """Console messages and image naturalWidths of ``page`` (probed in a copy written under ``work``)."""
    text = page.read_text(encoding="utf-8")
    assert text.count(CSP) == 1, "the page should carry the report's CSP"
    probed = text.replace(CSP, CSP + "; script-src 'unsafe-inline'").replace("</body>", _PROBE + "</body>")
    copy = work / f"probe-{page.name}"
    copy.write_text(probed, encoding="utf-8")
    cmd = [
        browser,
        "--headless=new",
        "--no-sandbox",  # tests may run as root in a container
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-extensions",
        "--no-first-run",
        f"--user-data-dir={work / 'profile'}",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=5000",
        "--dump-dom",
        copy.as_uri(),
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert "<body" in run.stdout, f"Chromium printed no DOM (rc {run.returncode}):\n{run.stderr[-2000:]}"
    console = [m.group("msg") for line in run.stderr.splitlines() if (m := _CONSOLE.search(line))]
    console += [line for line in run.stderr.splitlines() if "Uncaught" in line and not _CONSOLE.search(line)]
    widths = re.search(r'data-img-widths="([^"]*)"', run.stdout)
    return console, None if widths is None else [int(w) for w in widths.group(1).split(",") if w]


def test_detection_catches_console_errors_and_broken_images(chromium, tmp_path):
    good_png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
    broken = tmp_path / "broken.html"
    broken.write_text(
        f'<!DOCTYPE html><html><head><meta http-equiv="Content-Security-Policy" content="{CSP}"></head><body>'
        f'<img src="data:image/png;base64,{good_png}"><img src="data:image/png;base64,AAAA">'
        '<img src="https://example.invalid/x.png">'
        "<script>console.error('deliberate'); notDefined();</script></body></html>",
        encoding="utf-8",
    )
    console, widths = load_in_chromium(chromium, broken, tmp_path)
    assert any("deliberate" in m for m in console)
    assert any("Uncaught ReferenceError" in m for m in console)
    assert any("Content Security Policy" in m for m in console)  # the external image is refused and logged
    assert widths == [1, 0, 0]


def test_report_html_loads_clean_with_figures(chromium, report, tmp_path):
    console, widths = load_in_chromium(chromium, report["report_html"], tmp_path)
    assert console == []
    assert widths is not None and len(widths) == 3 and all(w > 0 for w in widths)  # curves, fits, differences

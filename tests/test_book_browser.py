"""Render pages in headless Chromium and check what a reader sees (scripts/browser_check.py).

* test_built_lesson_page: the built book's lesson 1 page has typeset equations, figures
  and drawn widgets, offline. Skipped until the book is built (jupyter-book build .).
* test_check_passes_on_a_good_page / test_check_fails_on_a_broken_page: the check itself,
  on two tiny hand-made sites, so we know it can tell good from bad.

All skip, with the reason, when Chromium is not installed (Debian: apt-get install chromium).
"""
import importlib.util
import shutil
import struct
import zlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / "_build" / "html"
LESSON_PAGE = "lessons/01_forward_process_2d.html"
VENDOR = ROOT / "book" / "static" / "offline"


def _load_script(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bc = _load_script("browser_check")
needs_chromium = pytest.mark.skipif(bc.find_chromium() is None,
                                    reason="Chromium is not installed (Debian: apt-get install chromium)")


def _png(width, height):
    """A valid grey PNG of the given size, made with zlib only."""
    row = b"\x00" + b"\x80" * width
    raw = zlib.compress(row * height)

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", raw) + chunk(b"IEND", b""))


def _page(body, head=""):
    return f"<!doctype html><html><head><meta charset='utf-8'><title>t</title>{head}</head><body>{body}</body></html>"


@needs_chromium
@pytest.mark.skipif(not (SITE / LESSON_PAGE).is_file(),
                    reason=f"the book is not built ({LESSON_PAGE} missing): run jupyter-book build .")
def test_built_lesson_page(tmp_path, capsys):
    code = bc.main(["--site", str(SITE), "--page", LESSON_PAGE, "--screenshot", str(tmp_path / "shot.png")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert (tmp_path / "shot.png").stat().st_size > 10_000, "the screenshot is empty"


@needs_chromium
@pytest.mark.skipif(not (VENDOR / "mathjax" / "tex-chtml-full.js").is_file(),
                    reason="MathJax is not fetched: run python scripts/fetch_web_assets.py")
def test_check_passes_on_a_good_page(tmp_path, capsys):
    shutil.copytree(VENDOR / "mathjax", tmp_path / "mathjax")
    (tmp_path / "fig.png").write_bytes(_png(120, 80))
    body = ("<p>Inline <span class='math'>\\(\\bar\\alpha_t\\)</span> and display</p>"
            "<div class='math'>\\[ x_t = \\sqrt{\\bar\\alpha_t}\\,x_0 + \\sqrt{1-\\bar\\alpha_t}\\,\\varepsilon \\]</div>"
            "<div class='cell_output'><img src='fig.png'></div>")
    (tmp_path / "page.html").write_text(_page(body, "<script defer src='mathjax/tex-chtml-full.js'></script>"))
    code = bc.main(["--site", str(tmp_path), "--page", "page.html", "--min-math", "2",
                    "--screenshot", str(tmp_path / "shot.png")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "2 math nodes, 2 typeset" in out
    assert "1 in cell outputs with a real size 120x80" in out


@needs_chromium
def test_check_fails_on_a_broken_page(tmp_path, capsys):
    # no MathJax, a raw $$ equation, a missing image, an unrendered widget, a script from another host
    body = ("<div class='math'>$$ x^2 $$</div>"
            "<div class='cell_output'><img src='missing.png'></div>"
            "<script type='application/vnd.jupyter.widget-view+json'>{\"model_id\": \"x\"}</script>")
    head = "<script src='https://cdn.example.org/lib.js'></script>"
    (tmp_path / "page.html").write_text(_page(body, head))
    code = bc.main(["--site", str(tmp_path), "--page", "page.html", "--screenshot", str(tmp_path / "shot.png")])
    out = capsys.readouterr().out
    assert code == 1, out
    for reason in ["typeset equation", "not typeset", "unrendered TeX", "figure(s) in cell outputs",
                   "did not load", "saved widgets were drawn", "other hosts"]:
        assert reason in out, f"expected a failure mentioning {reason!r}:\n{out}"


def test_missing_site_is_reported(tmp_path, capsys):
    code = bc.main(["--site", str(tmp_path), "--page", "nope.html"])
    assert code == 2
    assert "build the book first" in capsys.readouterr().err

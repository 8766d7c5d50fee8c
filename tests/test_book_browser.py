"""Render pages in headless Chromium and check what a reader sees (scripts/browser_check.py).

* test_built_site: every page of the built book has its equations typeset, its figures and
  widgets drawn, no console error and no request to another host. Skipped until the book
  is built (make book).
* test_check_passes_on_a_good_page / test_check_fails_on_a_broken_page /
  test_all_pages_of_a_small_site / test_saved_widgets_are_counted /
  test_console_errors_and_other_hosts_fail_a_page: the check itself, on tiny hand-made
  sites, so we know it can tell good from bad without building the book.
* test_small_book_is_offline_and_quiet: a two-page Jupyter Book built with this repository's
  _config.yml and book/_ext (no lesson executed): the page with a matplotlib animation loads
  nothing from a CDN, and no page logs the doubled ``THEBE_JS_URL`` script.

All skip, with the reason, when Chromium or Playwright is not installed
(Debian: apt-get install chromium; pip install -e ".[test]").
"""
import json
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from conftest import load_script

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / "_build" / "html"
LESSON_PAGE = "lessons/01_forward_process_2d.html"
VENDOR = ROOT / "book" / "static" / "offline"


bc = load_script("browser_check")
needs_chromium = pytest.mark.skipif(
    bc.find_chromium() is None or not bc.have_playwright(),
    reason="Chromium or Playwright is not installed (Debian: apt-get install chromium; pip install -e '.[test]')")
needs_mathjax = pytest.mark.skipif(not (VENDOR / "mathjax" / "tex-chtml-full.js").is_file(),
                                   reason="MathJax is not fetched: run python scripts/fetch_web_assets.py")
needs_widgets = pytest.mark.skipif(not (VENDOR / "html-manager" / "embed-amd.js").is_file(),
                                   reason="the widget manager is not fetched: run python scripts/fetch_web_assets.py")


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


MATH_BODY = ("<p>Inline <span class='math'>\\(\\bar\\alpha_t\\)</span> and display</p>"
             "<div class='math'>\\[ x_t = \\sqrt{\\bar\\alpha_t}\\,x_0 + \\sqrt{1-\\bar\\alpha_t}\\,\\varepsilon \\]</div>")


@needs_chromium
@pytest.mark.skipif(not (SITE / LESSON_PAGE).is_file(),
                    reason=f"the book is not built ({LESSON_PAGE} missing): run make book")
def test_built_site(capsys):
    code = bc.main(["--site", str(SITE), "--all"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "0 failed" in out


@needs_chromium
@needs_mathjax
def test_check_passes_on_a_good_page(tmp_path, capsys):
    shutil.copytree(VENDOR / "mathjax", tmp_path / "mathjax")
    (tmp_path / "fig.png").write_bytes(_png(120, 80))
    body = MATH_BODY + "<div class='cell_output'><img src='fig.png'></div>"
    (tmp_path / "page.html").write_text(_page(body, "<script defer src='mathjax/tex-chtml-full.js'></script>"))
    code = bc.main(["--site", str(tmp_path), "--page", "page.html", "--min-math", "2",
                    "--screenshot", str(tmp_path / "shot.png")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "2 math nodes, 2 typeset" in out
    assert "1 in cell outputs with a real size 120x80" in out
    assert "no saved widgets on this page" in out and "no widgets to draw" in out
    assert (tmp_path / "shot.png").stat().st_size > 1000


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
                   "did not load", "0 of 1 saved widgets were drawn", "other hosts"]:
        assert reason in out, f"expected a failure mentioning {reason!r}:\n{out}"
    assert "https://cdn.example.org/lib.js" in out


@needs_chromium
def test_console_errors_and_other_hosts_fail_a_page(tmp_path, capsys):
    # the doubled inline script that Sphinx 7.4 writes for sphinx-thebe, and an image and a
    # stylesheet that a page requests from other hosts after it has loaded
    dup = "<script>const THEBE_JS_URL = 'x';</script>"
    late = ("<script>addEventListener('load', () => { const i = new Image(); i.src = 'https://img.example.org/a.png';"
            " document.body.appendChild(i); });</script>")
    head = dup + dup + "<link rel='stylesheet' href='https://maxcdn.example.com/font-awesome.min.css'>"
    (tmp_path / "page.html").write_text(_page("<p>text</p>" + late, head))
    code = bc.main(["--site", str(tmp_path), "--page", "page.html", "--min-math", "0", "--min-figures", "0",
                    "--screenshot", str(tmp_path / "shot.png")])
    out = capsys.readouterr().out
    assert code == 1, out
    assert "THEBE_JS_URL" in out and "console logged" in out
    assert "https://maxcdn.example.com/font-awesome.min.css" in out
    assert "requested 2 file(s) from other hosts" in out


@needs_chromium
@needs_mathjax
def test_all_pages_of_a_small_site(tmp_path, capsys):
    """--all visits every page but Sphinx's asset folders, follows the redirect stub, and asks
    math and figures of lesson pages only."""
    shutil.copytree(VENDOR / "mathjax", tmp_path / "_static" / "mathjax")
    (tmp_path / "_static" / "stray.html").write_text(_page("<div class='math'>$$ never checked $$</div>"))
    (tmp_path / "index.html").write_text('<meta http-equiv="Refresh" content="0; url=intro.html" />')
    (tmp_path / "intro.html").write_text(_page("<p>Plain prose, no math, no figure.</p>"))
    (tmp_path / "lessons").mkdir()
    (tmp_path / "lessons" / "fig.png").write_bytes(_png(60, 40))
    (tmp_path / "lessons" / "01.html").write_text(_page(
        MATH_BODY + "<div class='cell_output'><img src='fig.png'></div>",
        "<script defer src='../_static/mathjax/tex-chtml-full.js'></script>"))
    (tmp_path / "lessons" / "02.html").write_text(_page("<p>A lesson page without math or figures.</p>"))
    code = bc.main(["--site", str(tmp_path), "--all"])
    out = capsys.readouterr().out
    assert code == 1, out
    assert "OK: index.html: redirects to intro.html" in out
    assert "OK: intro.html" in out and "OK: lessons/01.html: 2 equations typeset" in out
    assert "FAIL: lessons/02.html: expected at least 1 typeset equation" in out
    assert "stray" not in out
    assert "4 pages, 3 passed, 1 failed (lessons/02.html)" in out
    (tmp_path / "lessons" / "02.html").unlink()
    assert bc.main(["--site", str(tmp_path), "--all"]) == 0, capsys.readouterr().out


@needs_chromium
@needs_widgets
def test_saved_widgets_are_counted(tmp_path, capsys):
    import ipywidgets as W
    from ipywidgets.embed import embed_data

    for name in ("requirejs", "html-manager"):
        shutil.copytree(VENDOR / name, tmp_path / name)
    data = embed_data(views=[W.IntProgress(value=3, max=10), W.IntSlider(value=4)])
    state = json.dumps(data["manager_state"])
    views = "".join(f"<div class='cell_output'><script type='application/vnd.jupyter.widget-view+json'>"
                    f"{json.dumps(v)}</script></div>" for v in data["view_specs"])
    head = ("<script src='requirejs/require.js'></script><script src='html-manager/embed-amd.js'></script>"
            f"<script type='application/vnd.jupyter.widget-state+json'>{state}</script>")
    (tmp_path / "page.html").write_text(_page(views, head))
    code = bc.main(["--site", str(tmp_path), "--page", "page.html", "--min-math", "0", "--min-figures", "0",
                    "--screenshot", str(tmp_path / "shot.png")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "2 of 2 saved views drawn" in out and "2 of 2 saved widgets drawn" in out


@needs_chromium
@needs_mathjax
@needs_widgets
def test_small_book_is_offline_and_quiet(tmp_path, capsys):
    pytest.importorskip("jupyter_book", reason="the book extra is not installed (pip install -e '.[book]')")
    yaml = pytest.importorskip("yaml")
    import matplotlib
    import nbformat

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.animation import FuncAnimation

    book = tmp_path / "book"
    (book / "book").mkdir(parents=True)
    shutil.copytree(ROOT / "book" / "_ext", book / "book" / "_ext", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "book" / "static", book / "book" / "static")
    (book / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "fetch_web_assets.py", book / "scripts")
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    config["execute"]["execute_notebooks"] = "off"  # the notebook below carries its output already
    (book / "_config.yml").write_text(yaml.safe_dump(config))
    (book / "_toc.yml").write_text("format: jb-book\nroot: intro\nchapters:\n  - file: anim\n")
    (book / "intro.md").write_text("# Intro\n\nInline $x_t$ and\n\n$$ x_t = \\sqrt{\\bar\\alpha_t}\\,x_0 $$\n")
    fig, ax = plt.subplots(figsize=(2, 2))
    anim = FuncAnimation(fig, lambda i: ax.plot([0, i]), frames=2)
    html = anim.to_jshtml(default_mode="once")  # what diffedu.plot.animate returns
    plt.close(fig)
    assert "font-awesome" in html, "matplotlib no longer links Font Awesome: this test can go"
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                           "language": "python"}})
    cell = nbformat.v4.new_code_cell("dd.plot.animate(...)", execution_count=1)
    cell.outputs = [nbformat.v4.new_output("display_data", data={"text/html": html, "text/plain": "<HTML>"})]
    nb.cells = [nbformat.v4.new_markdown_cell("# Anim\n\nMath $y$."), cell]
    nbformat.write(nb, book / "anim.ipynb")
    build = subprocess.run([sys.executable, "-c", "from jupyter_book.cli.main import main; main()", "build", str(book)],
                           capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    site = book / "_build" / "html"
    for page in ("intro.html", "anim.html"):
        text = (site / page).read_text()
        assert text.count("const THEBE_JS_URL") == 1, f"{page}: the sphinx-thebe script is not written once"
    assert "font-awesome" not in (site / "anim.html").read_text()
    code = bc.main(["--site", str(site), "--all"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "OK: anim.html" in out and "icons           : 0 in total" not in out


def test_missing_site_is_reported(tmp_path, capsys):
    code = bc.main(["--site", str(tmp_path), "--page", "nope.html"])
    assert code == 2
    assert "build the book first" in capsys.readouterr().err
    assert bc.main(["--site", str(tmp_path), "--all"]) == 2


def test_site_pages_skip_asset_folders(tmp_path):
    for rel in ("index.html", "a/b.html", "_static/x.html", "_sources/y.html", ".hidden/z.html"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("<p>x</p>")
    assert bc.site_pages(tmp_path) == ["a/b.html", "index.html"]


def test_without_a_browser_make_test_warns_instead_of_failing(tmp_path, capsys, monkeypatch):
    (tmp_path / "index.html").write_text("<html><body>hi</body></html>")
    monkeypatch.setattr(bc, "find_chromium", lambda *a: None)
    assert bc.main(["--site", str(tmp_path), "--page", "index.html"]) == 2
    assert "no Chromium found" in capsys.readouterr().err
    assert bc.main(["--site", str(tmp_path), "--page", "index.html", "--skip-without-browser"]) == 0
    assert "NOT checked in a browser" in capsys.readouterr().err

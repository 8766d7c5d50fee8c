"""Slides for lecturers: slide metadata (scripts/slide_metadata.py) and offline reveal.js decks
(scripts/build_slides.py, make slides).

* test_slide_types_follow_the_rules / test_slide_metadata_is_idempotent_and_keeps_the_rest:
  the script on a small hand-made notebook.
* test_every_lesson_has_slide_metadata: every cell of every lesson carries the slide type the
  script would give it (run ``python scripts/slide_metadata.py`` after editing a lesson).
* test_deck_of_a_small_notebook_loads_nothing_from_other_hosts: a deck built from a small
  notebook has more than one slide, and every script, stylesheet, image or font it names is
  in its own offline/ folder (links to papers are fine: they are not loaded).
* test_deck_renders_offline_in_chromium: the same deck in headless Chromium with every request
  to another host refused: reveal.js starts, MathJax typesets, the console stays clean.
"""
import html.parser
import re
from pathlib import Path

import pytest
from conftest import load_script

nbformat = pytest.importorskip("nbformat")

ROOT = Path(__file__).resolve().parents[1]
LESSONS = sorted((ROOT / "lessons").glob("*.ipynb"))


sm = load_script("slide_metadata")
bs = load_script("build_slides")
fwa = load_script("fetch_web_assets")

md, code = nbformat.v4.new_markdown_cell, nbformat.v4.new_code_cell


def small_notebook():
    derivation = "We expand:\n$$ a = b $$\nand then\n$$ b = c. $$"
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                           "language": "python"}})
    nb.cells = [
        md("# 1. A tiny lesson\n\n**Promise:** $x_t$ in one line."),
        code("print('setup')", metadata={"tags": ["remove-cell"]}),
        code("import math"),
        md("## The first section\n\nInline $\\bar\\alpha_t$ and a [paper](https://arxiv.org/abs/2006.11239)."),
        md("Short text after the section."),
        code("x = 1"),
        md(derivation),
        md("### A subsection"),
        md("## Your turn\n\n**Exercise 1.** Compute it."),
        code("def my_thing():\n    return None"),
        code("# Solution\ndef solution_thing():\n    return 1", metadata={"tags": ["hide-input"]}),
        md("**Exercise 2.** Predict it."),
        md("<details><summary>Solution 2</summary>\n\nBecause.\n</details>"),
        md("x" * (sm.LONG_CHARS + 1)),
        md("## Summary\n\n$$ q(x_t \\mid x_0) = \\mathcal N(\\sqrt{\\bar\\alpha_t} x_0, (1-\\bar\\alpha_t) I) $$"),
    ]
    return nb


def test_slide_types_follow_the_rules():
    nb = small_notebook()
    sm.apply(nb)
    got = [c.metadata["slideshow"]["slide_type"] for c in nb.cells]
    assert got == ["slide", "skip", "fragment", "slide", "-", "fragment", "subslide", "subslide", "slide",
                   "fragment", "notes", "subslide", "notes", "subslide", "slide"]


def test_slide_metadata_is_idempotent_and_keeps_the_rest(tmp_path):
    nb = small_notebook()
    nb.cells[2].metadata["slideshow"] = {"slide_type": "slide", "other": 1}
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)
    ids = [c.id for c in nb.cells]
    assert sm.main([str(path)]) == 0
    first = path.read_text()
    again = nbformat.read(path, as_version=4)
    assert [c.id for c in again.cells] == ids
    assert again.cells[2].metadata["slideshow"] == {"slide_type": "fragment", "other": 1}
    assert again.cells[1].metadata["tags"] == ["remove-cell"]
    assert all(c.outputs == [] for c in again.cells if c.cell_type == "code")
    assert sm.main([str(path), "--check"]) == 0
    assert sm.main([str(path)]) == 0 and path.read_text() == first, "a second run changed the notebook"
    assert first == nbformat.writes(again) + "\n"


@pytest.mark.parametrize("lesson", LESSONS, ids=[p.stem for p in LESSONS])
def test_every_lesson_has_slide_metadata(lesson):
    nb = nbformat.read(lesson, as_version=4)
    wrong = [(i, c.metadata.get("slideshow", {}).get("slide_type"), sm.slide_type(c, i))
             for i, c in enumerate(nb.cells) if c.metadata.get("slideshow", {}).get("slide_type") != sm.slide_type(c, i)]
    assert not wrong, (f"{lesson.name}: {len(wrong)} cell(s) lack their slide type (cell, has, should have): "
                       f"{wrong[:5]}; run python scripts/slide_metadata.py")


class _Refs(html.parser.HTMLParser):
    """Every URL a page would load: src of any element, href of <link>, url()/@import in styles."""

    def __init__(self):
        super().__init__()
        self.loads, self._in_style = [], False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("src"):
            self.loads.append(attrs["src"])
        if tag == "link" and attrs.get("href"):
            self.loads.append(attrs["href"])
        self._in_style = tag == "style"

    def handle_endtag(self, tag):
        self._in_style = False

    def handle_data(self, data):
        if self._in_style:
            data = re.sub(r"/\*.*?\*/", "", data, flags=re.S)  # comments name URLs they do not load
            self.loads += re.findall(r"""url\(\s*["']?([^"')]+)""", data)
            self.loads += re.findall(r"""@import\s+["']([^"']+)""", data)


@pytest.fixture(scope="module")
def deck(tmp_path_factory):
    pytest.importorskip("nbconvert", reason="nbconvert is not installed (pip install -e '.[course]')")
    if not (fwa.is_current("site") and fwa.is_current("slides")):
        pytest.skip("reveal.js, MathJax and the widget manager are not vendored: run python scripts/fetch_web_assets.py")
    out = tmp_path_factory.mktemp("slides")
    nb = small_notebook()
    sm.apply(nb)
    path = tmp_path_factory.mktemp("lesson") / "01_tiny.ipynb"
    nbformat.write(nb, path)
    assert bs.main([str(path), "--out", str(out), "--no-execute"]) == 0
    return out, out / "01_tiny.slides.html"


def test_deck_of_a_small_notebook_loads_nothing_from_other_hosts(deck):
    out, page = deck
    text = page.read_text()
    assert text.count("<section") > 1, "the deck has a single slide"
    assert '<aside class="notes">' in text, "the hidden solution is not a speaker note"
    refs = _Refs()
    refs.feed(text)
    assert refs.loads, "found no script or stylesheet at all"
    remote = [u for u in refs.loads if re.match(r"(https?:)?//", u)]
    assert not remote, f"the deck loads from other hosts: {remote}"
    local = [u for u in refs.loads if not u.startswith(("data:", "#"))]
    outside = [u for u in local if not u.startswith(bs.OFFLINE + "/")]
    assert not outside, f"the deck loads files outside its {bs.OFFLINE}/ folder: {outside}"
    missing = [u for u in local if not (out / u.split("?")[0]).is_file()]
    assert not missing, f"the deck names files that are not there: {missing}"
    assert (out / "index.html").is_file() and "01_tiny.slides.html" in (out / "index.html").read_text()


browser_check = load_script("browser_check")


@pytest.mark.skipif(browser_check.find_chromium() is None or not browser_check.have_playwright(),
                    reason="Chromium or Playwright is not installed")
def test_deck_renders_offline_in_chromium(deck):
    out, page = deck
    server = browser_check.serve(out)
    origin = f"http://127.0.0.1:{server.server_address[1]}"
    browser = browser_check.Browser(browser_check.find_chromium(), origin, 300)
    try:
        p = browser.open(f"{origin}/{page.name}")
        p.wait_for_function("() => window.Reveal && Reveal.isReady()", timeout=300_000)
        slides = p.evaluate("() => Reveal.getTotalSlides()")
        typeset = p.evaluate("() => document.querySelectorAll('mjx-container').length")
        assert slides > 1, f"reveal.js shows {slides} slide(s)"
        assert typeset >= 3, f"MathJax typeset {typeset} equation(s) of the deck's 4"
        assert not browser.external, f"the deck requested files from other hosts: {browser.external}"
        assert not browser.failed, f"files of the deck could not be loaded: {browser.failed}"
        assert not browser.console, f"the browser console logged errors: {browser.console}"
    finally:
        browser.close()
        server.shutdown()

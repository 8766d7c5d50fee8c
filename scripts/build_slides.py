"""Build a reveal.js slide deck of every lesson into _build/slides/ (``make slides``).

    python scripts/build_slides.py                        # every lesson, with its outputs
    python scripts/build_slides.py --no-execute           # code and text only (seconds)
    python scripts/build_slides.py lessons/01_*.ipynb --out /tmp/slides

Cells become slides by their ``slideshow.slide_type`` metadata (``scripts/slide_metadata.py``
sets it). The decks work offline, from a USB stick or a lecture-hall PC without a network:
reveal.js, MathJax, require.js and the widget manager are copied from the vendored folders
(``python scripts/fetch_web_assets.py``) into ``_build/slides/offline/``, and the decks load
nothing else. The same as one nbconvert command per lesson:

    jupyter nbconvert --to slides lessons/01_forward_process_2d.ipynb --output-dir _build/slides \\
        --TemplateExporter.extra_template_basedirs=scripts/templates --template course_reveal \\
        --SlidesExporter.reveal_url_prefix=offline/reveal.js --SlidesExporter.reveal_theme=white \\
        --HTMLExporter.mathjax_url=offline/mathjax/tex-chtml-full.js \\
        --HTMLExporter.require_js_url=offline/requirejs/require.js \\
        --HTMLExporter.widget_renderer_url=offline/html-manager/embed-amd.js

(``scripts/templates/course_reveal`` is nbconvert's reveal template with MathJax 3 and
without the jQuery and Mermaid it loads from CDNs.)

Outputs: a lesson's figures come from an earlier run whose code is the same as the lesson's
(``_build/jupyter_execute/``, written by ``make book``, or ``_build/executed/``, written by
``make test``); otherwise the
lesson is executed here, as the book does (cwd lessons/, static widgets, one thread),
printing one line per lesson with its time.

Present: open ``_build/slides/index.html``; ``S`` opens the speaker view with the notes
(the hidden solutions), ``F`` full screen, ``Esc`` the overview.
"""
import argparse
import html
import os
import re
import shutil
import sys
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
SITE_VENDOR = ROOT / "book" / "static" / "offline"
SLIDES_VENDOR = ROOT / "book" / "static_slides"
EXECUTED = (ROOT / "_build" / "jupyter_execute" / "lessons",  # make book
            ROOT / "_build" / "executed" / "lessons")  # make test (scripts/nbval_outputs.py)
TEMPLATES = Path(__file__).resolve().parent / "templates"
OFFLINE = "offline"  # the folder of the deck's scripts, next to the decks
LESSON_LINK = re.compile(r'href="(?:\./)?(\d\d_[A-Za-z0-9_]+)\.ipynb(#[^"]*)?"')
VENDORED = {"reveal.js": SLIDES_VENDOR / "reveal.js", "mathjax": SITE_VENDOR / "mathjax",
            "requirejs": SITE_VENDOR / "requirejs", "html-manager": SITE_VENDOR / "html-manager"}


def exporter():
    from nbconvert import SlidesExporter
    from traitlets.config import Config

    c = Config()
    c.TemplateExporter.extra_template_basedirs = [str(TEMPLATES)]
    c.SlidesExporter.template_name = "course_reveal"
    c.SlidesExporter.reveal_url_prefix = f"{OFFLINE}/reveal.js"
    c.SlidesExporter.reveal_theme = "white"  # its fonts ship with reveal.js ("simple" loads Google Fonts)
    c.SlidesExporter.reveal_width = "1280"
    c.SlidesExporter.reveal_height = "800"
    c.SlidesExporter.reveal_number = "c/t"
    c.HTMLExporter.mathjax_url = f"{OFFLINE}/mathjax/tex-chtml-full.js"
    c.HTMLExporter.require_js_url = f"{OFFLINE}/requirejs/require.js"
    c.HTMLExporter.widget_renderer_url = f"{OFFLINE}/html-manager/embed-amd.js"
    return SlidesExporter(config=c)


def _code(nb):
    return [c.source for c in nb.cells if c.cell_type == "code"]


def with_outputs(path: Path, nb, mode: str):
    """The notebook with outputs: from the book build or the tests' run if its code is the same, else executed here.
    Returns (notebook, where the outputs came from)."""
    if mode == "never":
        return nb, "no outputs (--no-execute)"
    for built in (folder / path.name for folder in EXECUTED):
        if mode != "auto" or not built.is_file():
            continue
        done = nbformat.read(built, as_version=4)
        if _code(done) == _code(nb):
            by_id = {c.get("id"): c for c in done.cells}
            for cell in nb.cells:
                if cell.cell_type == "code" and cell.get("id") in by_id:
                    cell.outputs = by_id[cell.get("id")].get("outputs", [])
                    cell.execution_count = by_id[cell.get("id")].get("execution_count")
            if "widgets" in done.metadata:
                nb.metadata["widgets"] = done.metadata["widgets"]
            return nb, f"outputs of an earlier run ({built.relative_to(ROOT)})"
    from nbclient import NotebookClient

    env_before = dict(os.environ)
    os.environ.update(DIFFEDU_WIDGETS="static", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"),
                      PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    try:
        NotebookClient(nb, timeout=600, kernel_name=nb.metadata.get("kernelspec", {}).get("name", "python3"),
                       resources={"metadata": {"path": str(path.parent)}}).execute()
    finally:
        os.environ.clear()
        os.environ.update(env_before)
    return nb, "executed"


def copy_vendored(out: Path) -> None:
    missing = [name for name, src in VENDORED.items() if not src.is_dir()]
    if missing:
        raise SystemExit(f"error: {', '.join(missing)} not vendored yet: run python scripts/fetch_web_assets.py")
    for name, src in VENDORED.items():
        dest = out / OFFLINE / name
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(src, dest, ignore=shutil.ignore_patterns(".gitignore", "versions.json"))


def write_index(out: Path, decks: list) -> None:
    items = "\n".join(f'<li><a href="{html.escape(f)}">{html.escape(t)}</a></li>' for f, t in decks)
    (out / "index.html").write_text(
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Slides</title>"
        "<style>body{font-family:sans-serif;max-width:46em;margin:3em auto;line-height:1.6}</style></head>"
        f"<body><h1>Slides</h1><p>One deck per lesson. Keys: arrows to move, <kbd>S</kbd> speaker view "
        f"(notes), <kbd>F</kbd> full screen, <kbd>Esc</kbd> overview.</p><ol>\n{items}\n</ol></body></html>\n")


def title_of(nb, fallback: str) -> str:
    for cell in nb.cells:
        if cell.cell_type == "markdown" and cell.source.lstrip().startswith("# "):
            return cell.source.lstrip()[2:].splitlines()[0].strip()
    return fallback


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("notebooks", nargs="*", type=Path, help="default: lessons/*.ipynb")
    ap.add_argument("--out", type=Path, default=ROOT / "_build" / "slides", help="default _build/slides")
    group = ap.add_mutually_exclusive_group()
    group.add_argument("--no-execute", dest="execute", action="store_const", const="never",
                       help="decks without outputs")
    group.add_argument("--execute", dest="execute", action="store_const", const="always",
                       help="execute every lesson, even when the book build has its outputs")
    ap.set_defaults(execute="auto")
    args = ap.parse_args(argv)
    paths = [p.resolve() for p in args.notebooks] or sorted((ROOT / "lessons").glob("*.ipynb"))
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    copy_vendored(out)
    slides = exporter()
    decks = []
    for i, path in enumerate(paths, 1):
        start = time.perf_counter()
        nb = nbformat.read(path, as_version=4)
        nb, source = with_outputs(path, nb, args.execute)
        body, _ = slides.from_notebook_node(nb, resources={"metadata": {"name": path.stem, "path": str(path.parent)}})
        # a link to another lesson opens that lesson's deck
        body = LESSON_LINK.sub(lambda m: f'href="{m.group(1)}.slides.html{m.group(2) or ""}"', body)
        deck = out / f"{path.stem}.slides.html"
        deck.write_text(body, encoding="utf-8")
        n = body.count("<section")
        decks.append((deck.name, title_of(nb, path.stem)))
        print(f"slides {i:2d}/{len(paths)}  {deck.name}: {n} sections, {source}, "
              f"{time.perf_counter() - start:.1f} s", flush=True)
    write_index(out, decks)
    print(f"slides: open {out / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

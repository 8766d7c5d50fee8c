"""Give every cell of the lessons its reveal.js slide type (cell metadata ``slideshow.slide_type``).

    python scripts/slide_metadata.py                  # all of lessons/*.ipynb, in place
    python scripts/slide_metadata.py --check          # only report; exit 1 if a lesson would change
    python scripts/slide_metadata.py path/to/nb.ipynb ...

``jupyter nbconvert --to slides`` (``make slides``) and RISE in JupyterLab cut a notebook
into slides by this metadata. The type follows from the cell itself, so the script is
deterministic and idempotent (run it again after editing a lesson; a second run changes
nothing):

* ``slide``: the title cell (the first cell, a ``# `` heading) and every Markdown cell
  that starts with a ``## `` section heading;
* ``subslide`` (a slide below the current one): a ``### `` heading, an exercise
  (``**Exercise N.**``), and a long Markdown cell - a derivation with two or more display
  equations, or more than 1,000 characters - which would not fit under the text before it;
* ``notes`` (speaker notes, shown only in the speaker view): the hidden solutions, i.e.
  code cells tagged ``hide-input`` and Markdown ``<details>`` solution blocks;
* ``skip``: cells the book removes (tag ``remove-cell``, e.g. the Colab setup cell);
* ``fragment`` (appears on the next key press): every other code cell, with its output;
* ``-`` (continues the current slide): everything else.

Only ``metadata.slideshow`` is written: cell ids, sources, other metadata and the (empty)
outputs stay as they are, and the file is written the way nbformat writes it.
"""
import argparse
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
LONG_CHARS = 1000
DISPLAY_MATH = re.compile(r"\$\$.+?\$\$|\\begin\{(?:align|equation|gather|multline)\*?\}", re.S)
EXERCISE = re.compile(r"^\*\*Exercise\b")
SOLUTION_BLOCK = re.compile(r"^\s*<details>", re.I)


def slide_type(cell, index: int) -> str:
    """The reveal.js slide type of one cell (see the module docstring for the rules)."""
    source = cell.source if isinstance(cell.source, str) else "".join(cell.source)
    text = source.lstrip()
    tags = cell.get("metadata", {}).get("tags", [])
    if "remove-cell" in tags:
        return "skip"
    if cell.cell_type == "code":
        return "notes" if "hide-input" in tags else "fragment"
    if cell.cell_type != "markdown":
        return "-"
    if index == 0 and text.startswith("# "):
        return "slide"
    if text.startswith("## "):
        return "slide"
    if text.startswith("### "):
        return "subslide"
    if SOLUTION_BLOCK.match(text):
        return "notes"
    if EXERCISE.match(text):
        return "subslide"
    if len(DISPLAY_MATH.findall(text)) >= 2 or len(text) > LONG_CHARS:
        return "subslide"
    return "-"


def apply(nb) -> int:
    """Set the slide type of every cell; return how many cells changed."""
    changed = 0
    for i, cell in enumerate(nb.cells):
        want = slide_type(cell, i)
        if cell.metadata.get("slideshow", {}).get("slide_type") != want:
            cell.metadata["slideshow"] = {**cell.metadata.get("slideshow", {}), "slide_type": want}
            changed += 1
    return changed


def process(path: Path, check: bool) -> int:
    nb = nbformat.read(path, as_version=4)
    changed = apply(nb)
    if changed and not check:
        nbformat.write(nb, path)
    return changed


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("notebooks", nargs="*", type=Path, help="default: lessons/*.ipynb")
    ap.add_argument("--check", action="store_true", help="write nothing; exit 1 if any notebook would change")
    args = ap.parse_args(argv)
    paths = args.notebooks or sorted((ROOT / "lessons").glob("*.ipynb"))
    stale = 0
    for path in paths:
        n = process(path, args.check)
        stale += n > 0
        verb = "would change" if args.check else "changed"
        print(f"{path}: {verb} {n} cell(s)" if n else f"{path}: up to date")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())

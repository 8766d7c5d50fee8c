"""Put a setup cell for Colab and other hosted Jupyter first among the code cells of each lesson.

    python scripts/colab_cell.py                   # all of lessons/*.ipynb, in place
    python scripts/colab_cell.py --check           # only report; exit 1 if a lesson would change
    python scripts/colab_cell.py path/to/nb.ipynb ...

Opened from the book's "launch on Colab" button (or uploaded to any hosted Jupyter), a
lesson arrives alone: no ``diffedu`` package, no ``assets/``. The cell this script writes
notices that (``diffedu`` is not importable and there is no ``../diffedu`` folder), then

1. clones the repository, ``git clone --depth 1 URL``, into the working directory,
2. installs it, ``pip install -q -e`` with the repository's ``constraints.txt``, except
   the pins of the packages that hosted images already bring (torch, torchvision, numpy,
   matplotlib, ipywidgets: their versions are kept when they are in pyproject's ranges,
   see the README),
3. puts the clone on ``sys.path`` and changes into its ``lessons/`` folder,

and the lesson continues. Inside a checkout of the repository it does nothing and prints
nothing. The environment variable ``DIFFEDU_PIP_ARGS`` adds arguments to that pip command
(the tests use ``--no-deps --dry-run`` to leave their environment alone).

The URL comes from ``_config.yml`` (``repository.url``, the one setting that the book's
repository, Colab and Binder buttons use too), read when the cell is written: run this
script again after changing it. The cell has the id ``colab-setup``, the ``remove-cell``
tag (the book executes it, where it does nothing, but does not show it) and the slide type
``skip``. Running the script twice changes nothing; cell ids and outputs stay as they are.
"""
import argparse
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
CELL_ID = "colab-setup"
URL_LINE = "REPO_URL = "
SOURCE = '''\
# Colab and other hosted Jupyter: fetch and install the course when this notebook runs outside a
# checkout of it. Inside a checkout (diffedu importable, or ../diffedu beside us) it does nothing.
import importlib.util, os, subprocess, sys, tempfile
REPO_URL = "{url}"
_course = os.path.abspath(REPO_URL.rstrip("/").split("/")[-1].removesuffix(".git"))
if importlib.util.find_spec("diffedu") is None and not os.path.isdir("../diffedu"):
    if not os.path.isdir(_course):
        subprocess.run(["git", "clone", "--depth", "1", REPO_URL, _course], check=True)
    _host = ("torch==", "torchvision==", "numpy==", "matplotlib==", "ipywidgets==")  # keep the host's own
    with open(os.path.join(_course, "constraints.txt")) as f, tempfile.NamedTemporaryFile(
            "w", suffix=".txt", delete=False) as pins:
        pins.writelines(line for line in f if not line.startswith(_host))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-c", pins.name, "-e", _course,
                    *os.environ.get("DIFFEDU_PIP_ARGS", "").split()], check=True)
    sys.path.insert(0, _course)
    os.chdir(os.path.join(_course, "lessons"))
elif not os.path.isdir("../diffedu") and os.path.isdir(os.path.join(_course, "lessons")):
    os.chdir(os.path.join(_course, "lessons"))  # a restarted kernel on the host: back to the lessons'''


def repository_url(config: Path = ROOT / "_config.yml") -> str:
    import yaml

    url = (yaml.safe_load(config.read_text()).get("repository") or {}).get("url")
    if not url:
        raise SystemExit(f"error: {config} has no repository.url")
    return url


def cell_source(url: str) -> str:
    if '"' in url or "\\" in url:
        raise SystemExit(f"error: unexpected characters in the repository URL {url!r}")
    return SOURCE.format(url=url)


def url_in(source: str):
    """The URL a setup cell clones (from its REPO_URL line), or None."""
    for line in source.splitlines():
        if line.startswith(URL_LINE):
            return line[len(URL_LINE):].strip().strip('"')
    return None


def apply(nb, url: str) -> bool:
    """Insert or update the setup cell as the first code cell; return True if nb changed."""
    before = nbformat.writes(nb)
    cells = nb.cells
    existing = [i for i, c in enumerate(cells) if c.get("id") == CELL_ID]
    cell = cells.pop(existing[0]) if existing else nbformat.v4.new_code_cell(id=CELL_ID)
    cell.source = cell_source(url)
    tags = [t for t in cell.metadata.get("tags", []) if t != "remove-cell"]
    cell.metadata["tags"] = tags + ["remove-cell"]
    cell.metadata["slideshow"] = {"slide_type": "skip"}
    first_code = next((i for i, c in enumerate(cells) if c.cell_type == "code"), len(cells))
    cells.insert(first_code, cell)
    return nbformat.writes(nb) != before


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("notebooks", nargs="*", type=Path, help="default: lessons/*.ipynb")
    ap.add_argument("--check", action="store_true", help="write nothing; exit 1 if any notebook would change")
    ap.add_argument("--url", default=None, help="clone this URL instead of _config.yml's repository.url")
    args = ap.parse_args(argv)
    url = args.url or repository_url()
    stale = 0
    for path in args.notebooks or sorted((ROOT / "lessons").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        changed = apply(nb, url)
        stale += changed
        if changed and not args.check:
            nbformat.write(nb, path)
        verb = "would change" if args.check else "updated"
        print(f"{path}: {verb}" if changed else f"{path}: up to date")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())

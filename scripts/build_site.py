"""Build the book (_build/html) from the lessons as the tests executed them, without running them again.

    python scripts/test_notebooks.py     # runs every lesson, saves each with its outputs in _build/executed/
    python scripts/build_site.py         # the book from those copies, into _build/html
    python scripts/browser_check.py --all

``make test`` does these three in a row, so the pages that the browser check opens in Chromium
(math typeset, figures drawn, nothing loaded from another host, no console error) are the lessons
that the tests just ran. ``make book`` instead executes every lesson while it builds.

The book's sources are staged in ``_build/site_src/``: the repository's ``_config.yml`` with
execution off, ``_toc.yml``, ``book/``, and the executed lessons. A lesson of the table of contents
without an executed copy, or a copy older than the lesson, is an error: run the notebook tests first.
"""
import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def toc_lessons(toc: dict) -> list[str]:
    """The lessons/ entries of the table of contents, in order."""
    files = [c["file"] for part in toc.get("parts", []) for c in part.get("chapters", [])]
    return [f for f in files if f.startswith("lessons/")]


def stage(executed: Path, out: Path) -> Path:
    """Copy the book's sources into out, the lessons from executed/; return out."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    config["execute"]["execute_notebooks"] = "off"  # the copies carry the outputs of the tests' run
    (out / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    shutil.copy(ROOT / "_toc.yml", out / "_toc.yml")
    shutil.copytree(ROOT / "book", out / "book", ignore=shutil.ignore_patterns("__pycache__", "static_slides"))
    (out / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "fetch_web_assets.py", out / "scripts")
    (out / "lessons").mkdir()
    missing = []
    for entry in toc_lessons(yaml.safe_load((ROOT / "_toc.yml").read_text())):
        src, copy = ROOT / f"{entry}.ipynb", executed / f"{entry}.ipynb"
        if not copy.is_file() or copy.stat().st_mtime < src.stat().st_mtime:
            missing.append(entry)
            continue
        shutil.copy(copy, out / "lessons")
    if missing:
        raise SystemExit(f"no executed copy (or an outdated one) of {', '.join(missing)} in {executed}: "
                         f"run  python scripts/test_notebooks.py  first (make notebooks).")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--executed", type=Path, default=ROOT / "_build" / "executed", help="default _build/executed")
    ap.add_argument("--stage", type=Path, default=ROOT / "_build" / "site_src", help="default _build/site_src")
    args = ap.parse_args(argv)
    src = stage(args.executed, args.stage)
    print(f"building the book from the executed lessons in {args.executed.relative_to(ROOT)}", flush=True)
    cmd = [sys.executable, "-c", "from jupyter_book.cli.main import main; main()", "build", str(src),
           "--path-output", str(ROOT), "--all"]
    return subprocess.run(cmd, cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main())

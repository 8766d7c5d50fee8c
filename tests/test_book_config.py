"""The book's configuration: table of contents, execution settings, offline web assets."""
import importlib.util
import io
import json
import tarfile
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML is needed to read _config.yml and _toc.yml")

ROOT = Path(__file__).resolve().parents[1]


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fwa = _load(ROOT / "scripts" / "fetch_web_assets.py", "fetch_web_assets")
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
TOC = yaml.safe_load((ROOT / "_toc.yml").read_text())


def toc_files():
    files = [TOC["root"]]
    for part in TOC["parts"]:
        files += [ch["file"] for ch in part["chapters"]]
    return files


def resolve(entry: str):
    """The source file a toc entry names (entries have no suffix), or None."""
    for suffix in (".md", ".ipynb"):
        if (ROOT / (entry + suffix)).is_file():
            return ROOT / (entry + suffix)
    return None


def test_every_toc_entry_exists():
    missing = [f for f in toc_files() if resolve(f) is None]
    assert not missing, f"_toc.yml lists pages that do not exist: {missing}"


def test_every_lesson_and_book_page_is_in_the_toc():
    listed = set(toc_files())
    pages = [p for p in sorted((ROOT / "lessons").glob("*.ipynb")) + sorted((ROOT / "book").glob("*.md"))]
    orphans = [str(p.relative_to(ROOT)) for p in pages if str(p.relative_to(ROOT).with_suffix("")) not in listed]
    assert not orphans, f"pages missing from _toc.yml (they would not be built): {orphans}"


def test_toc_is_in_course_order():
    lessons = [f for f in toc_files() if f.startswith("lessons/")]
    numbers = [int(Path(f).name.split("_")[0]) for f in lessons]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers), numbers
    assert [p["caption"] for p in TOC["parts"]][0] == "Foundations"
    assert [p["caption"] for p in TOC["parts"]][-1] == "Appendix"


def test_notebooks_are_executed_strictly():
    ex = CONFIG["execute"]
    assert ex["execute_notebooks"] in ("force", "cache")
    assert ex["timeout"] >= 300
    assert ex["allow_errors"] is False and ex["raise_on_error"] is True


def test_web_assets_are_local_and_match_the_fetch_script():
    cfg = CONFIG["sphinx"]["config"]
    local = [cfg["mathjax_path"], *cfg["nb_ipywidgets_js"]]
    assert all("://" not in p for p in local), local
    # config paths are relative to the static folder; the script's entry points to its offline/ folder
    static = ROOT / cfg["html_static_path"][0]
    assert fwa.VENDOR == static / "offline"
    vendored = [p for p in local if p.startswith("offline/")]
    assert sorted(p.removeprefix("offline/") for p in vendored) == sorted(fwa.ENTRY_POINTS)
    # the one script of our own, before require.js: it maps the widget manager's module path to its copy
    assert list(cfg["nb_ipywidgets_js"])[:2] == ["widget_paths.js", "offline/requirejs/require.js"]
    assert (static / "widget_paths.js").is_file()
    assert "_static" not in cfg["html_static_path"], "a _static folder would get a script tag per .js file"


def test_cdn_fallback_uses_the_pinned_versions():
    pytest.importorskip("sphinx", reason="the book extra is not installed (pip install -e '.[book]')")
    ext = _load(ROOT / "book" / "_ext" / "web_assets.py", "web_assets")
    mathjax, widgets = ext.cdn_assets()
    assert mathjax == "https://cdn.jsdelivr.net/npm/mathjax@3.2.2/es5/tex-chtml-full.js"
    assert "https://cdn.jsdelivr.net/npm/@jupyter-widgets/html-manager@1.0.15/dist/embed-amd.js" in widgets
    assert "https://cdn.jsdelivr.net/npm/requirejs@2.3.8/require.js" in widgets


def _tarball(tmp_path, files: dict) -> Path:
    path = tmp_path / "pkg.tgz"
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo("package/" + name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_copy_from_tarball_copies_files_folders_and_globs(tmp_path):
    tgz = _tarball(tmp_path, {"es5/a.js": b"a", "es5/fonts/x.woff": b"x", "es5/fonts/y.woff": b"y",
                              "dist/f.woff2": b"f", "dist/g.woff": b"g", "dist/sub/h.woff2": b"h"})
    out = tmp_path / "out"
    n = fwa.copy_from_tarball(tgz, [("es5/a.js", "a.js"), ("es5/fonts/", "fonts/"), ("dist/*.woff2", "")], out)
    got = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert n == 4 and got == ["a.js", "f.woff2", "fonts/x.woff", "fonts/y.woff"]
    assert (out / "fonts" / "y.woff").read_bytes() == b"y"


def test_copy_from_tarball_names_a_missing_file(tmp_path):
    tgz = _tarball(tmp_path, {"es5/a.js": b"a"})
    with pytest.raises(RuntimeError, match="no file matching 'es5/b.js'"):
        fwa.copy_from_tarball(tgz, [("es5/b.js", "b.js")], tmp_path / "out")


def test_sri_hash_matches_npm_format(tmp_path):
    # npm's integrity string for the bytes b"abc" (sha512, base64)
    (tmp_path / "f").write_bytes(b"abc")
    assert fwa.sri_sha512(tmp_path / "f") == (
        "sha512-3a81oZNherrMQXNJriBBMRLm+k6JqX6iCp7u5ktV05ohkpkqJ0/BqDa6PCOj/uu9RU1EI2Q86A4qmslPpUyknw==")


def test_stamp_must_match_the_pins(tmp_path, monkeypatch):
    monkeypatch.setattr(fwa, "VENDOR", tmp_path)
    monkeypatch.setattr(fwa, "STAMP", tmp_path / "versions.json")
    assert not fwa.is_current()
    for p in fwa.ENTRY_POINTS:
        (tmp_path / p).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / p).write_text("x")
    stamp = fwa.expected_stamp()
    (tmp_path / "versions.json").write_text(json.dumps(stamp))
    assert fwa.is_current()
    stamp["mathjax"]["spec"] = "mathjax@3.2.1"
    (tmp_path / "versions.json").write_text(json.dumps(stamp))
    assert not fwa.is_current()


def test_both_local_extensions_are_registered():
    ext = CONFIG["sphinx"]["local_extensions"]
    assert ext == {"web_assets": "book/_ext", "build_progress": "book/_ext"}
    assert CONFIG["sphinx"]["config"]["html_context"]["default_mode"] in ("light", "dark", "auto")


def test_page_repair_keeps_one_copy_of_each_inline_script_and_drops_font_awesome_cdn():
    pytest.importorskip("sphinx", reason="the book extra is not installed (pip install -e '.[book]')")
    from sphinx.builders.html._assets import _JavaScript

    ext = _load(ROOT / "book" / "_ext" / "web_assets.py", "web_assets")
    thebe = "const THEBE_JS_URL = 'x'"
    # Sphinx 7.4 stores a script added after the builder started with file name None, then adds
    # it again from its registry with file name ''
    scripts = [_JavaScript("_static/a.js"), _JavaScript(None, body=thebe), _JavaScript("", body=thebe),
               _JavaScript("_static/a.js"), _JavaScript(None, body="let other = 1")]
    body = ('<p>before</p><link rel="stylesheet"\nhref="https://maxcdn.bootstrapcdn.com/font-awesome/4.4.0/'
            'css/font-awesome.min.css">\n<button><i class="fa fa-play"></i></button>')
    context = {"script_files": scripts, "body": body}
    ext.on_html_page_context(None, "page", "page.html", context, None)
    assert [(js.filename, js.attributes.get("body")) for js in context["script_files"]] == [
        ("_static/a.js", None), (None, thebe), (None, "let other = 1")]
    assert "font-awesome" not in context["body"]
    assert context["body"] == '<p>before</p><button><i class="fa fa-play"></i></button>'


def test_build_progress_prints_one_line_per_lesson(capsys):
    pytest.importorskip("sphinx", reason="the book extra is not installed (pip install -e '.[book]')")
    ext = _load(ROOT / "book" / "_ext" / "build_progress.py", "build_progress")

    class Env:
        docname = None

        def doc2path(self, docname):
            return ROOT / (docname + (".ipynb" if docname.startswith("lessons/") else ".md"))

    class App:
        env = Env()

    app = App()
    docs = ["book/intro", "lessons/01_a", "lessons/02_b"]
    ext.on_env_before_read_docs(app, app.env, docs)
    for doc in docs:
        ext.on_source_read(app, doc, [""])
        app.env.docname = doc
        ext.on_doctree_read(app, None)
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "lessons: executing 2 notebooks, one line each as it finishes"
    assert lines[1].startswith("lesson  1/2  lessons/01_a ... ") and lines[1].endswith(" s")
    assert lines[2].startswith("lesson  2/2  lessons/02_b ... ")
    assert lines[3].startswith("lessons: 2 executed in ")


def test_slide_assets_are_pinned_and_kept_apart_from_the_site():
    (spec, integrity, files, _), = fwa.SLIDE_PACKAGES.values()
    assert spec == "reveal.js@5.2.1" and integrity.startswith("sha512-")
    assert fwa.SLIDES_VENDOR != fwa.VENDOR and fwa.SLIDES_VENDOR.parent == ROOT / "book"
    assert "book/static_slides" in CONFIG["exclude_patterns"]
    copied = [dst for _, dst in files]
    assert "dist/theme/white.css" in copied and not any("simple" in d for d in copied), \
        "the simple theme loads Google Fonts"

"""The setup cell for Colab and other hosted Jupyter (scripts/colab_cell.py).

* test_every_lesson_starts_with_the_setup_cell: the first code cell of every lesson is the
  setup cell, exactly as the script writes it, cloning exactly _config.yml's repository.url
  (run ``python scripts/colab_cell.py`` after changing either).
* test_script_inserts_moves_and_is_idempotent: on a small hand-made notebook.
* test_cell_is_silent_inside_a_checkout: in a clone of this repository the cell prints
  nothing, changes no folder and clones nothing.
* test_cell_sets_up_a_hosted_notebook: the hosted case. The cell runs in an empty folder, in
  a Python where ``diffedu`` is not importable, with the URL replaced by a local clone of this
  repository (``file://``); it must clone it, run its pip install (here with
  ``DIFFEDU_PIP_ARGS="--no-deps --dry-run --no-build-isolation"``, so the test environment
  stays as it is), and leave the kernel in the clone's lessons/ folder with ``import diffedu``
  working from the clone.
"""
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[1]
LESSONS = sorted((ROOT / "lessons").glob("*.ipynb"))

spec = importlib.util.spec_from_file_location("colab_cell", ROOT / "scripts" / "colab_cell.py")
cc = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cc)

URL = cc.repository_url()
# Run a cell's code (in "hosted" mode in a Python that cannot import the course's package: its
# editable install is hidden), then report where diffedu comes from and where the kernel stands.
RUNNER = r"""
import importlib.util, os, sys
if sys.argv[2] == "hosted":
    sys.meta_path[:] = [f for f in sys.meta_path if not str(getattr(f, "__module__", "")).startswith("__editable__")]
    sys.path[:] = [p for p in sys.path if p not in ("", ".")]
if sys.argv[2] == "hosted" and importlib.util.find_spec("diffedu") is not None:
    print("SKIP diffedu is importable from", importlib.util.find_spec("diffedu").origin); sys.exit(0)
exec(compile(open(sys.argv[1]).read(), "colab-setup", "exec"))
import diffedu
print("RESULT", diffedu.__file__, os.getcwd(), sep="|")
"""


def _run_cell(source: str, cwd: Path, mode: str, tmp_path: Path):
    (tmp_path / "cell.py").write_text(source)
    (tmp_path / "runner.py").write_text(RUNNER)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(DIFFEDU_PIP_ARGS="--no-deps --dry-run --no-build-isolation", OMP_NUM_THREADS="1",
               GIT_TERMINAL_PROMPT="0")
    return subprocess.run([sys.executable, str(tmp_path / "runner.py"), str(tmp_path / "cell.py"), mode],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def clone(tmp_path_factory):
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    dest = tmp_path_factory.mktemp("repo") / "course"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(dest)], check=True, timeout=300)
    return dest


@pytest.mark.parametrize("lesson", LESSONS, ids=[p.stem for p in LESSONS])
def test_every_lesson_starts_with_the_setup_cell(lesson):
    nb = nbformat.read(lesson, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and code[0].get("id") == cc.CELL_ID, (
        f"{lesson.name}: the first code cell is not the Colab setup cell; run python scripts/colab_cell.py")
    assert cc.url_in(code[0].source) == URL, (
        f"{lesson.name}: the setup cell clones {cc.url_in(code[0].source)!r}, _config.yml says {URL!r}")
    assert code[0].source == cc.cell_source(URL), f"{lesson.name}: the setup cell is outdated; run the script"


def test_script_inserts_moves_and_is_idempotent(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# Title"), nbformat.v4.new_code_cell("import diffedu as dd"),
                nbformat.v4.new_code_cell("x = 1")]
    ids = [c.id for c in nb.cells]
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)
    assert cc.main([str(path), "--url", "https://example.org/me/course"]) == 0
    got = nbformat.read(path, as_version=4)
    assert [c.id for c in got.cells] == [ids[0], cc.CELL_ID, ids[1], ids[2]]
    cell = got.cells[1]
    assert cc.url_in(cell.source) == "https://example.org/me/course"
    assert "remove-cell" in cell.metadata["tags"] and cell.metadata["slideshow"] == {"slide_type": "skip"}
    assert 'git", "clone", "--depth", "1"' in cell.source and "constraints.txt" in cell.source
    first = path.read_text()
    assert cc.main([str(path), "--url", "https://example.org/me/course", "--check"]) == 0
    assert cc.main([str(path), "--url", "https://example.org/me/course"]) == 0 and path.read_text() == first
    # a cell that ended up lower is moved back up; a new URL is written in place
    got.cells.insert(3, got.cells.pop(1))
    nbformat.write(got, path)
    assert cc.main([str(path), "--url", "https://example.org/other/course", "--check"]) == 1
    assert cc.main([str(path), "--url", "https://example.org/other/course"]) == 0
    again = nbformat.read(path, as_version=4)
    assert [c.id for c in again.cells] == [ids[0], cc.CELL_ID, ids[1], ids[2]]
    assert cc.url_in(again.cells[1].source) == "https://example.org/other/course"


def test_cell_is_silent_inside_a_checkout(clone, tmp_path):
    lessons = clone / "lessons"
    before = sorted(p.name for p in lessons.iterdir())
    out = _run_cell(cc.cell_source("file:///nonexistent/course"), lessons, "checkout", tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[-1].startswith("RESULT"), out.stdout
    cwd = lines[-1].split("|")[2]
    assert len(lines) == 1 and out.stderr == "", f"the cell printed something in a checkout: {out.stdout}{out.stderr}"
    assert Path(cwd) == lessons and sorted(p.name for p in lessons.iterdir()) == before


def test_cell_sets_up_a_hosted_notebook(clone, tmp_path):
    host = tmp_path / "content"  # Colab's working directory: empty
    host.mkdir()
    url = clone.as_uri()  # file:///.../course: git honours --depth 1 for file:// URLs
    out = _run_cell(cc.cell_source(url), host, "hosted", tmp_path)
    if out.stdout.startswith("SKIP"):
        pytest.skip(f"cannot hide the installed diffedu from the test's Python: {out.stdout.strip()}")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    _, module, cwd = out.stdout.splitlines()[-1].split("|")
    course = host / "course"
    assert (course / ".git").is_dir(), "the cell did not clone the repository"
    shallow = subprocess.run(["git", "-C", str(course), "rev-parse", "--is-shallow-repository"],
                             capture_output=True, text=True).stdout.strip()
    assert shallow == "true", "the clone is not shallow (--depth 1)"
    assert Path(module) == course / "diffedu" / "__init__.py", f"diffedu came from {module}"
    assert Path(cwd) == course / "lessons", f"the kernel stands in {cwd}"
    # the same cell run again (or after a restart) stays quiet and keeps the kernel in lessons/
    again = _run_cell(cc.cell_source(url), course / "lessons", "checkout", tmp_path)
    assert again.returncode == 0 and again.stderr == "" and len(again.stdout.splitlines()) == 1, again

"""Lesson 01 in a real JupyterLab, driven in headless Chromium as a learner would use it.

A JupyterLab server is started on 127.0.0.1 (a free port, a random token) on a temporary
copy of lessons/, with fresh settings and workspaces, and without DIFFEDU_WIDGETS, so the
kernel has to find out by itself that a person's frontend is attached (diffedu/widgets.py).
Playwright drives Debian's Chromium (it never downloads a browser of its own).

* test_run_all_and_move_a_slider: open lesson 01, run all cells (no cell may raise), then
  move the first slider of the first interactive figure one step (focus, arrow key) and check
  that its readout and the figure's image data changed.
* test_solution_cells_are_collapsed: every cell of lesson 01 whose metadata has
  ``jupyter.source_hidden: true`` shows a collapsed input (a placeholder instead of the
  code). Skipped, with the reason, while no cell of lesson 01 has that metadata.
* test_rise_is_available: with jupyterlab-rise installed (the course extra), JupyterLab
  offers its slideshow command.

Every wait is for a condition (bounded by WAIT_S), never a fixed sleep. The tests skip
when Chromium, Playwright or JupyterLab is missing.
"""
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LESSON = ROOT / "lessons" / "01_forward_process_2d.ipynb"
CHROMIUM = "/usr/bin/chromium"
WAIT_S = 300  # generous: on a busy 2-core machine lesson 01 alone takes a minute
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage"]

try:
    from playwright.sync_api import sync_playwright
except ImportError:
    sync_playwright = None
try:
    import jupyterlab  # noqa: F401
except ImportError:
    jupyterlab = None

pytestmark = [
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"Chromium is not installed at {CHROMIUM} "
                       "(Debian: apt-get install chromium)"),
    pytest.mark.skipif(sync_playwright is None, reason="Playwright is not installed (pip install -e '.[test]')"),
    pytest.mark.skipif(jupyterlab is None, reason="JupyterLab is not installed (pip install -e '.[test]')"),
]


def hidden_source_cells(path: Path) -> list:
    """Indices of the cells whose input JupyterLab should show collapsed."""
    nb = json.loads(path.read_text())
    return [i for i, c in enumerate(nb["cells"]) if c.get("metadata", {}).get("jupyter", {}).get("source_hidden")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(condition, what: str, timeout=WAIT_S, proc=None, log=lambda: ""):
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"JupyterLab exited with code {proc.returncode} while waiting for {what}:\n{log()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout} s waiting for {what}")
        time.sleep(0.2)


class Lab:
    """A JupyterLab server on a temporary copy of lessons/, and a Chromium page on it."""

    def __init__(self, lesson: Path):
        self.tmp = Path(tempfile.mkdtemp(prefix="lab-test-"))
        work = self.tmp / "course"
        shutil.copytree(lesson.parent, work / "lessons", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
        self.lesson = lesson.name
        self.port, self.token = _free_port(), secrets.token_hex(16)
        self.base = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if k != "DIFFEDU_WIDGETS"}  # the kernel decides: live
        env.update(
            PYTHONPATH=os.pathsep.join([str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]),
            OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "1"),
            JUPYTER_CONFIG_DIR=str(self.tmp / "config"), JUPYTER_RUNTIME_DIR=str(self.tmp / "runtime"),
            JUPYTERLAB_SETTINGS_DIR=str(self.tmp / "settings"), JUPYTERLAB_WORKSPACES_DIR=str(self.tmp / "workspaces"),
        )
        # no news or update checks: nothing may leave this machine
        news = self.tmp / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
        news.parent.mkdir(parents=True)
        news.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
        self.log = open(self.tmp / "server.log", "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
             f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0",
             f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={work}",
             "--LabApp.expose_app_in_browser=True",  # window.jupyterapp: run commands, read cell models
             "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
             "--LabApp.extension_manager=readonly",  # never asks PyPI for extensions
             *(["--allow-root"] if os.geteuid() == 0 else [])],  # CI runs as root
            env=env, stdout=self.log, stderr=subprocess.STDOUT, cwd=work)
        try:
            _wait_for(self._up, "the JupyterLab server to answer", proc=self.proc, log=self.server_log)
            self._pw = sync_playwright().start()
            self.context = self._pw.chromium.launch_persistent_context(
                str(self.tmp / "profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS,
                viewport={"width": 1400, "height": 1000})
            self.context.set_default_timeout(WAIT_S * 1000)
            self.page = self.context.new_page()
        except BaseException:
            self.close()
            raise

    def _up(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base}/api/status?token={self.token}", timeout=5) as r:
                return r.status == 200
        except OSError:
            return False

    def server_log(self) -> str:
        self.log.flush()
        return (self.tmp / "server.log").read_text()[-4000:]

    def open_lesson(self):
        """Open the lesson and wait until its kernel is idle."""
        self.page.goto(f"{self.base}/lab/tree/lessons/{self.lesson}?token={self.token}")
        self.page.wait_for_function("""() => {
            const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
            return !!(w && w.content && w.content.widgets && w.content.widgets.length > 0 && w.sessionContext
                      && w.sessionContext.session && w.sessionContext.session.kernel
                      && w.sessionContext.session.kernel.status === "idle"); }""")

    def run_all(self) -> list:
        """Run all cells; wait until each code cell has an execution count; return the errors raised."""
        self.page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
        self.page.wait_for_function("""() => {
            const w = window.jupyterapp.shell.currentWidget;
            const code = w.content.widgets.filter(c => c.model.type === "code");
            return code.every(c => c.model.executionCount !== null)
                   && w.sessionContext.session.kernel.status === "idle"; }""")
        return self.page.evaluate("""() => {
            const errors = [];
            for (const c of window.jupyterapp.shell.currentWidget.content.widgets) {
              if (c.model.type !== "code") continue;
              for (const o of c.model.outputs.toJSON())
                if (o.output_type === "error") errors.push(o.ename + ": " + o.evalue);
            }
            return errors; }""")

    def close(self):
        for step in (lambda: self.context.close(), lambda: self._pw.stop()):
            try:
                step()
            except Exception:
                pass
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def lab():
    lab = Lab(LESSON)
    try:
        lab.open_lesson()
        yield lab
    finally:
        lab.close()


@pytest.fixture(scope="module")
def ran_all(lab):
    errors = lab.run_all()
    assert not errors, f"cells of {LESSON.name} raised in JupyterLab: {errors}\n{lab.server_log()}"
    return lab


# The image of the first interactive figure: an ipywidgets Output under the first slider.
FIGURE_SRC_JS = """() => {
  const box = document.querySelector(".jp-OutputArea-output .widget-vbox");
  const img = box && box.querySelector(".widget-output img");
  return img && img.complete && img.naturalWidth > 0 ? img.getAttribute("src") : null; }"""


def _shot(page, name):
    """With DIFFEDU_SCREENSHOTS=DIR, keep a picture of what the test saw (DIR/NAME.png)."""
    folder = os.environ.get("DIFFEDU_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"))


def test_run_all_and_move_a_slider(ran_all):
    page = ran_all.page
    handle = page.locator(".jp-OutputArea-output .widget-vbox .widget-slider .noUi-handle").first
    handle.scroll_into_view_if_needed()
    page.wait_for_function(FIGURE_SRC_JS)  # the live figure exists: the kernel saw a live frontend
    before = page.evaluate(FIGURE_SRC_JS)
    _shot(page, "lab_slider_before")
    readout = page.locator(".jp-OutputArea-output .widget-vbox .widget-readout").first.inner_text()
    # one step to the right with the keyboard, as a learner can do (a mouse drag needs the page to
    # hold still, and JupyterLab's notebook may still be scrolling after "run all")
    handle.focus()
    handle.press("ArrowRight")
    page.wait_for_function(f"() => {{ const s = ({FIGURE_SRC_JS})(); return s !== null && s !== {json.dumps(before)}; }}")
    after = page.evaluate(FIGURE_SRC_JS)
    assert after != before and len(after) > 1000, "the figure did not change when the slider moved"
    _shot(page, "lab_slider_after")
    moved_to = page.locator(".jp-OutputArea-output .widget-vbox .widget-readout").first.inner_text()
    assert moved_to != readout, f"the slider still reads {readout!r}"


def test_solution_cells_are_collapsed(request):
    hidden = hidden_source_cells(LESSON)
    if not hidden:
        pytest.skip(f"no cell of {LESSON.name} has metadata jupyter.source_hidden: true yet, so there is no "
                    "collapsed solution to look at")
    lab = request.getfixturevalue("lab")
    for i in hidden:
        state = lab.page.evaluate("""(i) => {
            const nb = window.jupyterapp.shell.currentWidget.content;
            const cell = nb.widgets[i];
            cell.node.scrollIntoView({block: "center"});
            const shown = e => !!e && e.getClientRects().length > 0 && getComputedStyle(e).display !== "none";
            return {inputHidden: cell.inputHidden,
                    editorShown: shown(cell.node.querySelector(".jp-InputArea .jp-InputArea-editor")),
                    placeholderShown: shown(cell.node.querySelector(".jp-InputPlaceholder")),
                    source: cell.model.sharedModel.getSource().slice(0, 40)}; }""", i)
        _shot(lab.page, f"lab_collapsed_solution_{i}")
        assert state["inputHidden"] and not state["editorShown"] and state["placeholderShown"], (
            f"cell {i} ({state['source']!r}) has source_hidden metadata but JupyterLab shows its input: {state}")


def test_rise_is_available(lab):
    pytest.importorskip("jupyterlab_rise", reason="jupyterlab-rise is not installed (the course extra)")
    assert lab.page.evaluate("() => window.jupyterapp.commands.hasCommand('RISE:slideshow')")

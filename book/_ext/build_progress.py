"""Sphinx extension: one line per lesson, with its time, while the book executes them.

Jupyter Book (myst-nb) runs each notebook while Sphinx reads it, between the
``source-read`` and ``doctree-read`` events, and says little while it works: a build
that executes eleven lessons can sit silent for many minutes. This extension prints

    lesson  1/11  lessons/01_forward_process_2d ... 41.2 s
    ...
    lessons: 11 executed in 612.0 s

as each notebook finishes (to the build's standard output, flushed at once), so a
learner running ``make course`` sees how far it has got.
"""
import sys
import time

from sphinx.util import logging

logger = logging.getLogger(__name__)


class _Progress:
    def __init__(self):
        self.notebooks, self.started, self.done, self.total_s = [], {}, 0, 0.0


def _say(msg):
    # plain print, not the Sphinx logger: it must appear even when the build is quiet,
    # on its own line next to Sphinx's "reading sources... [ 40%]" counter
    print(f"\n{msg}" if sys.stdout.isatty() else msg, flush=True)


def on_env_before_read_docs(app, env, docnames):
    state = app._lesson_progress = _Progress()
    state.notebooks = [d for d in sorted(docnames) if str(env.doc2path(d)).endswith(".ipynb")]
    if state.notebooks:
        _say(f"lessons: executing {len(state.notebooks)} notebooks, one line each as it finishes")


def on_source_read(app, docname, source):
    state = getattr(app, "_lesson_progress", None)
    if state and docname in state.notebooks:
        state.started[docname] = time.perf_counter()


def on_doctree_read(app, doctree):
    state = getattr(app, "_lesson_progress", None)
    docname = app.env.docname
    if not state or docname not in state.started:
        return
    seconds = time.perf_counter() - state.started.pop(docname)
    state.done += 1
    state.total_s += seconds
    n = len(state.notebooks)
    _say(f"lesson {state.done:2d}/{n}  {docname} ... {seconds:.1f} s")
    if state.done == n:
        _say(f"lessons: {n} executed in {state.total_s:.1f} s")


def setup(app):
    app.connect("env-before-read-docs", on_env_before_read_docs)
    app.connect("source-read", on_source_read)
    app.connect("doctree-read", on_doctree_read)
    return {"version": "1.0", "parallel_read_safe": False, "parallel_write_safe": True}

"""Sphinx extension: serve MathJax and the widget manager from the site itself.

_config.yml points ``mathjax_path`` and ``nb_ipywidgets_js`` at files under
``book/static/offline/`` (fetched by ``python scripts/fetch_web_assets.py``), so the
built site typesets equations and draws widgets with no network. This extension

1. checks, when the build starts, that those files are there. If they are not,
   it switches to the same pinned versions on the jsdelivr CDN and prints a
   warning that the site will need a network connection;
2. keeps the vendored files out of ``html_js_files``/``html_css_files`` (Jupyter
   Book adds a script tag for every ``.js`` under a static path when a top-level
   ``_static/`` folder exists; MathJax's own components must not be loaded that way);
3. repairs two things in every page that would otherwise break it offline or in the
   console (``html-page-context``):

   * Sphinx 7.4 writes an inline script that an extension adds after the builder started
     twice (``app.add_js_file(None, body=...)`` is stored once with ``None`` and again with
     ``''`` as its file name, and the two do not compare equal). sphinx-thebe's
     ``const THEBE_JS_URL = ...`` is such a script, so every page logged ``Uncaught
     SyntaxError: Identifier 'THEBE_JS_URL' has already been declared``. We keep the first
     of each identical script.
   * matplotlib's ``Animation.to_jshtml`` (``diffedu.plot.animate``) writes a
     ``<link>`` to Font Awesome 4 on a CDN for its play buttons. The theme already serves
     Font Awesome 6 (``_static/scripts/fontawesome.js``), which draws the same ``fa fa-*``
     icons, so the link is removed from the page;
4. prepares the environment of the kernels that execute the lessons: the repository
   root goes on ``PYTHONPATH`` (so ``import diffedu`` works without installing it),
   and ``DIFFEDU_WIDGETS`` defaults to ``static`` (a widget explorer becomes a fixed
   grid of small multiples, the same on every build).
"""
import importlib.util
import os
import re
from pathlib import Path

from sphinx.util import logging

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
VENDOR_PREFIX = "offline/"
CDN = "https://cdn.jsdelivr.net/npm/"


def _pins():
    """The pinned npm packages, read from scripts/fetch_web_assets.py (one source of truth)."""
    path = ROOT / "scripts" / "fetch_web_assets.py"
    spec = importlib.util.spec_from_file_location("fetch_web_assets", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return {name: value[0] for name, value in module.PACKAGES.items()}


def cdn_assets():
    """mathjax_path and nb_ipywidgets_js for the pinned versions on the jsdelivr CDN."""
    pins = _pins()
    mathjax = f"{CDN}{pins['mathjax']}/es5/tex-chtml-full.js"
    widgets = {
        f"{CDN}{pins['requirejs']}/require.js": {"crossorigin": "anonymous"},
        f"{CDN}{pins['html-manager']}/dist/embed-amd.js": {
            "data-jupyter-widgets-cdn": CDN,
            "crossorigin": "anonymous",
        },
    }
    return mathjax, widgets


def _local(path: str) -> bool:
    return "://" not in path and not path.startswith("//")


def _missing(config, srcdir: Path) -> list:
    """Local asset paths in the config that no html_static_path folder provides."""
    wanted = [p for p in [config.mathjax_path, *config.nb_ipywidgets_js] if _local(p)]
    folders = [srcdir / d for d in config.html_static_path]
    return [p for p in wanted if not any((f / p).is_file() for f in folders)]


def on_config_inited(app, config):
    srcdir = Path(app.srcdir)
    config.html_js_files = [f for f in config.html_js_files
                            if not str(f[0] if isinstance(f, tuple) else f).startswith(VENDOR_PREFIX)]
    config.html_css_files = [f for f in config.html_css_files
                             if not str(f[0] if isinstance(f, tuple) else f).startswith(VENDOR_PREFIX)]

    missing = _missing(config, srcdir)
    if missing:
        config.mathjax_path, config.nb_ipywidgets_js = cdn_assets()
        logger.warning(
            "web assets not found (%s): equations and widgets will load from %s, so the "
            "site needs a network connection. Run `python scripts/fetch_web_assets.py` "
            "for a site that works offline.", ", ".join(missing), CDN, type="web_assets")
    else:
        logger.info("web assets: MathJax and the widget manager are served from the site")

    paths = [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    os.environ.setdefault("DIFFEDU_WIDGETS", "static")


# <link rel="stylesheet" href="https://.../font-awesome/4.4.0/css/font-awesome.min.css"> as matplotlib writes it
FONT_AWESOME_LINK = re.compile(
    r"""<link\b[^>]*\bhref=["']https?://[^"']*font-?awesome[^"']*\.css["'][^>]*>\s*""", re.I)


def _script_key(js):
    """What makes two script entries the same script (None and '' both mean "inline")."""
    filename = getattr(js, "filename", js)
    attributes = getattr(js, "attributes", {})
    return (filename or "", tuple(sorted((k, str(v)) for k, v in attributes.items())))


def on_html_page_context(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if scripts:
        seen, unique = set(), []
        for js in scripts:
            key = _script_key(js)
            if key not in seen:
                seen.add(key)
                unique.append(js)
        context["script_files"] = unique
    if "body" in context:
        context["body"] = FONT_AWESOME_LINK.sub("", context["body"])


def setup(app):
    # priority 900: after the mathjax and myst-nb defaults are in place
    app.connect("config-inited", on_config_inited, priority=900)
    # priority 900: after the theme and the other extensions have added their scripts
    app.connect("html-page-context", on_html_page_context, priority=900)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}

"""Open the pages of the built book in headless Chromium and check what a reader would see.

    python scripts/browser_check.py --all                            # every page (make browser-check)
    python scripts/browser_check.py                                  # lesson 01 only, with a screenshot
    python scripts/browser_check.py --page lessons/05_mnist_unet_ddpm.html
    python scripts/browser_check.py --site _build/html --screenshot _build/browser_check.png

The site is served on 127.0.0.1 (a free port). Chromium is driven by Playwright's
Python package (``pip install -e ".[test]"``; it uses the system's Chromium, it never
downloads a browser of its own) and every request the page makes goes through this
script: a request to any other host is refused and reported, so the check proves that
the site works offline. For each page it waits (with a bound, never a fixed sleep)
until MathJax has typeset, the saved widgets are drawn and the images have loaded, then
records what the browser really rendered. A page fails when

* a math node was left untypeset, MathJax reported a TeX error, TeX is visible in the
  text (a ``$``, ``\\[``, ``\\(`` or a command such as ``\\alpha`` outside code and
  typeset math), or a display equation wider than the column is cut off on its left;
* it has fewer typeset equations or figures (images in cell outputs) than asked for
  (with ``--all``: at least one of each on every lesson page, none asked elsewhere),
  or an image failed to load (natural size 0 x 0), or an icon was left undrawn;
* a saved widget (e.g. a progress bar) was not drawn;
* it requested anything from another host, or a file of the site was missing;
* the browser console logged an error, or a script threw one.

It prints what it found on each page, exits 1 if any page failed and 2 if there is no
site or no browser. Needs Chromium (Debian: ``apt-get install chromium``).
"""
import argparse
import http.server
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# Root in a container needs --no-sandbox; the rest keeps Chromium from calling home.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--hide-scrollbars",
                  # a second fence behind the request interception: no host name resolves but ours
                  "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]

# What the page shows, measured in the page itself once it has settled.
REPORT_JS = r"""() => {
  const doc = document;
  const skip = new Set(["SCRIPT", "STYLE", "PRE", "CODE", "TEXTAREA", "MJX-CONTAINER", "NOSCRIPT", "SVG"]);
  const parts = [];
  const walker = doc.createTreeWalker(doc.body, NodeFilter.SHOW_TEXT, {
    acceptNode(n) {
      for (let e = n.parentElement; e; e = e.parentElement) if (skip.has(e.tagName.toUpperCase())) return NodeFilter.FILTER_REJECT;
      return NodeFilter.FILTER_ACCEPT;
    }});
  while (walker.nextNode()) parts.push(walker.currentNode.nodeValue);
  const text = parts.join(" ");
  const raw = [];
  // Unrendered TeX: a "$" or a TeX command such as \alpha left in the prose.
  for (const pat of [/\$/g, /\\[A-Za-z]{2,}/g, /\\\[/g, /\\\(/g]) {
    let m; while ((m = pat.exec(text)) && raw.length < 10) raw.push(text.slice(Math.max(0, m.index - 40), m.index + 40));
  }
  const mathNodes = Array.from(doc.querySelectorAll("span.math, div.math"));
  const untypeset = mathNodes.filter(e => !e.querySelector("mjx-container"));
  // Display equations wider than their column: they should scroll, never lose their left end.
  let wide = 0; const clipped = [];
  for (const div of doc.querySelectorAll("div.math")) {
    const mjx = div.querySelector("mjx-container");
    if (!mjx) continue;
    if (div.scrollWidth > div.clientWidth + 1) wide++;
    if (mjx.getBoundingClientRect().left < div.getBoundingClientRect().left - 1) clipped.push(div.textContent.trim().slice(0, 60));
  }
  const views = doc.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]');
  const drawn = Array.from(doc.querySelectorAll(".widget-subarea")).filter(e => e.childElementCount > 0).length;
  const widgetKinds = {};
  for (const e of doc.querySelectorAll(".widget-subarea [class*='widget-']")) {
    for (const c of e.classList) if (/^widget-(hprogress|slider|hslider|html|label|button|dropdown|checkbox|play|text)/.test(c)) widgetKinds[c] = (widgetKinds[c] || 0) + 1;
  }
  // Font Awesome icons (<i class="fa ...">): the theme's script swaps each for an <svg>.
  const icons = Array.from(doc.querySelectorAll("i.fa, i.fas, i.far, i.fab, i[class*=' fa-'], svg.svg-inline--fa"));
  const glyph = e => !["none", "normal", '""'].includes(getComputedStyle(e, "::before").content);
  const undrawnIcons = icons.filter(e => e.tagName.toLowerCase() === "i" && !glyph(e) && !e.querySelector("svg"));
  return {
    title: doc.title,
    mathjax: (window.MathJax && window.MathJax.version) || null,
    mathjax_script: (doc.querySelector("script[src*='mathjax' i], script[src*='tex-' i]") || {}).src || null,
    math_nodes: mathNodes.length,
    mjx_containers: doc.querySelectorAll("mjx-container").length,
    untypeset: untypeset.slice(0, 5).map(e => e.textContent.slice(0, 80)),
    untypeset_count: untypeset.length,
    tex_errors: Array.from(doc.querySelectorAll("mjx-merror")).slice(0, 5).map(e => e.getAttribute("data-mjx-error") || e.textContent.slice(0, 80)),
    raw_delimiters: raw,
    wide_equations: wide,
    clipped_equations: clipped,
    images: Array.from(doc.images).map(im => ({
      src: (im.getAttribute("src") || im.src || "").slice(0, 100), w: im.naturalWidth, h: im.naturalHeight,
      in_output: !!im.closest(".cell_output, .output")})),
    widget_views: views.length,
    widgets_drawn: drawn,
    widget_kinds: widgetKinds,
    widget_manager: (doc.querySelector("script[src*='embed-amd']") || {}).src || null,
    icons: icons.length,
    undrawn_icons: undrawnIcons.slice(0, 5).map(e => e.className),
  };
}"""

# Conditions the page must reach before it is measured (each returns true when settled).
MATHJAX_READY_JS = """async () => {
  if (!(window.MathJax && MathJax.startup && MathJax.startup.promise)) return false;
  try { await MathJax.startup.promise; } catch (e) {}
  return true; }"""
WANTS_MATHJAX_JS = "() => Array.from(document.scripts).some(s => /mathjax|tex-(chtml|svg|mml)/i.test(s.src || ''))"
WIDGETS_READY_JS = """() => {
  const views = document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]').length;
  const drawn = Array.from(document.querySelectorAll(".widget-subarea")).filter(e => e.childElementCount > 0).length;
  return drawn >= views; }"""
WANTS_WIDGETS_JS = """() => document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]').length > 0
  && Array.from(document.scripts).some(s => /embed-amd|html-manager/i.test(s.src || ''))"""
IMAGES_READY_JS = "() => Array.from(document.images).every(im => im.complete)"
ICONS_READY_JS = """() => !window.FontAwesome || Array.from(document.querySelectorAll("i.fa, i.fas, i.far, i.fab"))
  .every(e => e.querySelector("svg") || getComputedStyle(e, "::before").content.length > 2)"""


class Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep the output readable
        pass


def find_chromium(explicit=None):
    """Path of a Chromium/Chrome binary, or None."""
    for name in ([explicit] if explicit else []) + [os.environ.get("CHROMIUM", "")] + list(BROWSERS):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def have_playwright() -> bool:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return False
    return True


def serve(site: Path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


REDIRECT = re.compile(r"""<meta\s+http-equiv=["']refresh["']\s+content=["'][^"']*url=([^"']+)["']""", re.I)


def redirect_target(path: Path):
    """The page a redirect stub (Jupyter Book's index.html) sends the reader to, or None."""
    head = path.read_text(errors="replace")[:2000]
    m = REDIRECT.search(head)
    return m.group(1).strip() if m and "<body" not in head.lower() else None


def site_pages(site: Path) -> list:
    """Every HTML page of the site, relative to it: not the folders Sphinx keeps assets in (_static ...)."""
    pages = []
    for p in sorted(site.rglob("*.html")):
        rel = p.relative_to(site)
        if not any(part.startswith((".", "_")) for part in rel.parts[:-1]):
            pages.append(rel.as_posix())
    return pages


class Browser:
    """One headless Chromium (fresh profile) whose requests to other hosts are refused and recorded."""

    def __init__(self, binary: str, origin: str, timeout_s: float):
        from playwright.sync_api import sync_playwright

        self.origin, self.timeout_s = origin, timeout_s
        self._profile = tempfile.mkdtemp(prefix="browser-check-")
        self._pw = sync_playwright().start()
        self.context = self._pw.chromium.launch_persistent_context(
            self._profile, executable_path=binary, headless=True, args=CHROMIUM_FLAGS,
            viewport={"width": 1280, "height": 1600})
        self.context.route("**/*", self._route)
        self.external, self.failed, self.console = [], [], []

    def _route(self, route):
        url = route.request.url
        parts = urlsplit(url)
        if parts.scheme in ("data", "blob") or f"{parts.scheme}://{parts.netloc}" == self.origin:
            route.continue_()
        else:
            self.external.append(url)
            route.abort("blockedbyclient")

    def open(self, page_url: str):
        """Load a page and wait until it has settled; return the Playwright page."""
        self.external, self.failed, self.console = [], [], []
        page = self.context.new_page()
        page.on("console", lambda m: m.type == "error" and self.console.append(m.text))
        page.on("pageerror", lambda e: self.console.append(f"uncaught: {e}"))
        page.on("requestfailed", lambda r: r.url not in self.external and self.failed.append(r.url))
        page.on("response", lambda r: r.status >= 400 and self.failed.append(f"{r.url} (HTTP {r.status})"))
        page.goto(page_url, wait_until="load", timeout=self.timeout_s * 1000)
        deadline = time.monotonic() + self.timeout_s
        if page.evaluate(WANTS_MATHJAX_JS):
            self._wait(page, MATHJAX_READY_JS, deadline, give_up=lambda: self._lost("mathjax|tex-"))
        if page.evaluate(WANTS_WIDGETS_JS):
            self._wait(page, WIDGETS_READY_JS, deadline, give_up=lambda: self._lost("embed-amd|require"))
        self._wait(page, IMAGES_READY_JS, deadline)
        self._wait(page, ICONS_READY_JS, deadline)
        return page

    def _lost(self, pattern: str) -> bool:
        """True when a script the page waits for could not be loaded (so waiting longer is pointless)."""
        return any(re.search(pattern, u, re.I) for u in self.failed + self.external)

    @staticmethod
    def _wait(page, condition_js, deadline, give_up=lambda: False):
        while not page.evaluate(condition_js):
            if give_up() or time.monotonic() > deadline:
                return False
            page.wait_for_timeout(100)
        return True

    def close(self):
        try:
            self.context.close()
            self._pw.stop()
        finally:
            shutil.rmtree(self._profile, ignore_errors=True)


def evaluate(r: dict, min_math: int, min_figures: int):
    """Turn the page report into (lines to print, list of failures)."""
    imgs = r.get("images", [])
    figures = [i for i in imgs if i["in_output"] and i["w"] > 0 and i["h"] > 0]
    broken = [i for i in imgs if i["w"] == 0 or i["h"] == 0]
    views, drawn = r.get("widget_views", 0), r.get("widgets_drawn", 0)
    widgets = (f"{drawn} of {views} saved views drawn {r.get('widget_kinds') or ''} (manager {r.get('widget_manager')})"
               if views else "no saved widgets on this page")
    external, failed, console = r.get("external", []), r.get("failed", []), r.get("console", [])
    lines = [
        f"page title      : {r.get('title')!r}",
        f"MathJax         : {r.get('mathjax')} from {r.get('mathjax_script')}",
        f"math            : {r.get('math_nodes')} math nodes, {r.get('mjx_containers')} typeset (mjx-container), "
        f"{r.get('untypeset_count')} untypeset, {len(r.get('tex_errors', []))} TeX errors",
        f"unrendered TeX  : {len(r.get('raw_delimiters', []))} places in the visible text",
        f"wide equations  : {r.get('wide_equations')} wider than the column (scroll sideways), "
        f"{len(r.get('clipped_equations', []))} cut off on the left",
        f"figures         : {len(figures)} in cell outputs with a real size "
        + ", ".join(f"{i['w']}x{i['h']}" for i in figures[:8]) + (" ..." if len(figures) > 8 else ""),
        f"images          : {len(imgs)} in total, {len(broken)} broken",
        f"icons           : {r.get('icons', 0)} in total, {len(r.get('undrawn_icons', []))} not drawn",
        f"widgets         : {widgets}",
        f"other hosts     : {len(external)} requests refused" + (f", e.g. {external[0]}" if external else ""),
        f"missing files   : {len(failed)}",
        f"console errors  : {len(console)}",
    ]
    lines += [f"console         : {m[:200]}" for m in console[:5]]
    fails = []
    if r.get("mjx_containers", 0) < min_math:
        fails.append(f"expected at least {min_math} typeset equation(s), found {r.get('mjx_containers', 0)}")
    if r.get("untypeset_count"):
        fails.append(f"{r['untypeset_count']} math node(s) were not typeset, e.g. {r['untypeset'][:2]}")
    if r.get("tex_errors"):
        fails.append(f"MathJax reported TeX errors: {r['tex_errors']}")
    if r.get("raw_delimiters"):
        fails.append(f"unrendered TeX is visible in the text: {r['raw_delimiters'][:3]}")
    if r.get("clipped_equations"):
        fails.append(f"equation(s) cut off on the left, unreadable: {r['clipped_equations'][:3]}")
    if len(figures) < min_figures:
        fails.append(f"expected at least {min_figures} figure(s) in cell outputs, found {len(figures)}")
    if broken:
        fails.append(f"{len(broken)} image(s) did not load: {[b['src'] for b in broken[:3]]}")
    if r.get("undrawn_icons"):
        fails.append(f"{len(r['undrawn_icons'])} icon(s) were not drawn: {r['undrawn_icons'][:3]}")
    if drawn < views:
        fails.append(f"only {drawn} of {views} saved widgets were drawn")
    if external:
        fails.append(f"the page requested {len(external)} file(s) from other hosts (not offline): {external[:3]}")
    if failed:
        fails.append(f"{len(failed)} file(s) of the site could not be loaded: {failed[:3]}")
    if console:
        fails.append(f"the browser console logged {len(console)} error(s): {[m[:120] for m in console[:3]]}")
    return lines, fails


def check_page(browser: Browser, url: str, shot: Path | None = None, anchor: str = "") -> dict:
    page = browser.open(url)
    try:
        report = page.evaluate(REPORT_JS)
        report.update(external=list(dict.fromkeys(browser.external)), failed=list(dict.fromkeys(browser.failed)),
                      console=list(dict.fromkeys(browser.console)))
        if shot is not None:
            # bring the requested section, else the first figure, into view
            page.evaluate("""(anchor) => {
              const a = anchor ? document.getElementById(anchor) : null;
              const fig = Array.from(document.images).find(im => im.closest(".cell_output") && im.naturalWidth > 0);
              if (a) a.scrollIntoView({block: "start"}); else if (fig) fig.scrollIntoView({block: "center"}); }""", anchor)
            shot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shot))
    finally:
        page.close()
    return report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--site", type=Path, default=ROOT / "_build" / "html", help="the built site (default _build/html)")
    ap.add_argument("--page", default="lessons/01_forward_process_2d.html", help="page to open, relative to the site")
    ap.add_argument("--all", action="store_true", help="check every page of the site (lesson pages need math and figures)")
    ap.add_argument("--screenshot", type=Path, default=None,
                    help="PNG to write for --page (default <site>/../browser_check.png; none with --all)")
    ap.add_argument("--anchor", default="", help="id of the section to show in the screenshot (default: first figure)")
    ap.add_argument("--min-math", type=int, default=None,
                    help="fewest typeset equations a page must show (default 1; with --all 1 on lessons, 0 elsewhere)")
    ap.add_argument("--min-figures", type=int, default=None,
                    help="fewest figures a page must show (default 1; with --all 1 on lessons, 0 elsewhere)")
    ap.add_argument("--chromium", default=None, help="browser binary (default: chromium, or $CHROMIUM)")
    ap.add_argument("--timeout", type=float, default=300, help="seconds a page may take to settle (default 300)")
    ap.add_argument("--skip-without-browser", action="store_true",
                    help="without Chromium or Playwright, warn and exit 0 instead of failing (make test)")
    args = ap.parse_args(argv)

    site = args.site.resolve()
    pages = site_pages(site) if args.all else [args.page]
    if not pages or not all((site / p).is_file() for p in pages):
        missing = site if not pages else site / next(p for p in pages if not (site / p).is_file())
        print(f"error: {missing} does not exist; build the book first (jupyter-book build .)", file=sys.stderr)
        return 2
    binary = find_chromium(args.chromium)
    problem = ("no Chromium found (Debian: apt-get install chromium; or set $CHROMIUM)" if binary is None else
               "Playwright's Python package is missing (pip install -e '.[test]')" if not have_playwright() else None)
    if problem:
        if args.skip_without_browser:
            print(f"warning: {problem}: the pages of {site} were NOT checked in a browser", file=sys.stderr)
            return 0
        print(f"error: {problem}", file=sys.stderr)
        return 2
    shot = None if args.all else (args.screenshot or site.parent / "browser_check.png").resolve()

    server = serve(site)
    origin = f"http://127.0.0.1:{server.server_address[1]}"
    browser = Browser(binary, origin, args.timeout)
    failed_pages = []
    try:
        for rel in pages:
            target = redirect_target(site / rel)
            if target is not None:
                dest = (site / rel).parent / target.split("#")[0]
                if dest.is_file():
                    print(f"OK: {rel}: redirects to {target}, which is checked as a page of its own")
                else:
                    print(f"FAIL: {rel}: redirects to {target}, which does not exist")
                    failed_pages.append(rel)
                continue
            lesson = rel.startswith("lessons/")
            min_math = args.min_math if args.min_math is not None else (1 if lesson or not args.all else 0)
            min_figures = args.min_figures if args.min_figures is not None else (1 if lesson or not args.all else 0)
            report = check_page(browser, f"{origin}/{rel}", shot, args.anchor)
            lines, fails = evaluate(report, min_math, min_figures)
            print(f"browser check: {rel} in {Path(binary).name}, served from {site}")
            print("\n".join("  " + ln for ln in lines))
            if shot is not None:
                print(f"  screenshot      : {shot if shot.is_file() else 'not written'}")
            for f in fails:
                print(f"FAIL: {rel}: {f}")
            if fails:
                failed_pages.append(rel)
            else:
                views = report.get("widget_views", 0)
                widgets = f"{report.get('widgets_drawn')} of {views} saved widgets drawn" if views else "no widgets to draw"
                print(f"OK: {rel}: {report.get('mjx_containers', 0)} equations typeset, "
                      f"{len(report.get('images', []))} images loaded, {widgets}, nothing requested from other hosts, "
                      f"no console errors")
    finally:
        browser.close()
        server.shutdown()
    if len(pages) > 1:
        print(f"\nbrowser check of {site}: {len(pages)} pages, {len(pages) - len(failed_pages)} passed, "
              f"{len(failed_pages)} failed" + (f" ({', '.join(failed_pages)})" if failed_pages else ""))
    return 1 if failed_pages else 0


if __name__ == "__main__":
    sys.exit(main())

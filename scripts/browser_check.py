"""Open a page of the built book in headless Chromium and check what a reader would see.

    python scripts/browser_check.py                                  # lesson 01
    python scripts/browser_check.py --page lessons/05_mnist_unet_ddpm.html
    python scripts/browser_check.py --site _build/html --screenshot _build/browser_check.png

The site is served on 127.0.0.1 (a free port) and Chromium may not resolve any
other host, so the page has to work offline. A small harness page loads the
lesson in a full-window frame, waits for MathJax and the widget manager, then
records what the browser really rendered. The check fails when

* the page has no typeset equation, or a math node was left untypeset, or
  MathJax reported a TeX error, or TeX is visible in the text (a ``$``, ``\\[``,
  ``\\(`` or a command such as ``\\alpha`` outside code and typeset math), or a
  display equation wider than the column is cut off on its left side;
* the page has fewer figures (images in cell outputs) than asked for, or any
  image failed to load (natural size 0 x 0);
* saved widgets (e.g. progress bars) were not drawn;
* a script or stylesheet is loaded from another host.

It prints what it found, writes a screenshot (scrolled to the first figure), and
exits 1 on failure. Needs Chromium (Debian: ``apt-get install chromium``).
"""
import argparse
import html
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HARNESS = "/__browser_check__.html"
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

HARNESS_HTML = r"""<!doctype html>
<html><head><meta charset="utf-8"><title>browser check</title>
<style>html,body{margin:0;height:100%;overflow:hidden}
iframe{border:0;width:100%;height:100%}#result{display:none}</style></head>
<body><iframe id="page" src="__PAGE__"></iframe><pre id="result">{"status": "pending"}</pre>
<script>
const sleep = ms => new Promise(r => setTimeout(r, ms));
const out = document.getElementById("result");
const frame = document.getElementById("page");
function report(obj) { out.textContent = JSON.stringify(obj); }

function visibleText(doc) {
  const skip = new Set(["SCRIPT", "STYLE", "PRE", "CODE", "TEXTAREA", "MJX-CONTAINER", "NOSCRIPT"]);
  const parts = [];
  const walker = doc.createTreeWalker(doc.body, NodeFilter.SHOW_TEXT, {
    acceptNode(n) {
      for (let e = n.parentElement; e; e = e.parentElement) if (skip.has(e.tagName)) return NodeFilter.FILTER_REJECT;
      return NodeFilter.FILTER_ACCEPT;
    }});
  while (walker.nextNode()) parts.push(walker.currentNode.nodeValue);
  return parts.join(" ");
}

async function run() {
  const loaded = () => { try { return frame.contentDocument.readyState === "complete" &&
    frame.contentWindow.location.href !== "about:blank"; } catch (e) { return false; } };
  if (!loaded()) await new Promise(r => frame.addEventListener("load", r, {once: true}));
  const win = frame.contentWindow, doc = frame.contentDocument;
  const t0 = performance.now();
  const hasScript = re => Array.from(doc.scripts).some(s => re.test(s.src || ""));
  // MathJax 3: wait for the first typesetting pass (if the page loads MathJax at all).
  const wantsMathJax = hasScript(/mathjax|tex-(chtml|svg|mml)/i);
  for (let i = 0; wantsMathJax && i < 100 && !(win.MathJax && win.MathJax.startup && win.MathJax.startup.promise); i++) await sleep(100);
  let mathjax = null;
  if (win.MathJax && win.MathJax.startup && win.MathJax.startup.promise) {
    try { await win.MathJax.startup.promise; mathjax = win.MathJax.version || "3"; } catch (e) { mathjax = "error: " + e; }
  }
  // Widgets: wait until every saved view has been drawn (or give up after ~8 s).
  const views = doc.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]');
  const drawn = () => Array.from(doc.querySelectorAll(".widget-subarea")).filter(e => e.childElementCount > 0).length;
  const wantsWidgets = views.length > 0 && hasScript(/embed-amd|html-manager/i);
  for (let i = 0; wantsWidgets && i < 80 && drawn() < views.length; i++) await sleep(100);
  // Images: wait until every image has finished loading (or failed).
  for (let i = 0; i < 50 && Array.from(doc.images).some(im => !im.complete); i++) await sleep(100);

  const mathNodes = Array.from(doc.querySelectorAll("span.math, div.math"));
  const untypeset = mathNodes.filter(e => !e.querySelector("mjx-container"));
  const text = visibleText(doc);
  const raw = [];
  // Unrendered TeX: a "$" or a TeX command such as \alpha left in the prose.
  for (const pat of [/\$/g, /\\[A-Za-z]{2,}/g, /\\\[/g, /\\\(/g]) {
    let m; while ((m = pat.exec(text)) && raw.length < 10) raw.push(text.slice(Math.max(0, m.index - 40), m.index + 40));
  }
  // Display equations wider than their column: they should scroll, never lose their left end.
  let wide = 0; const clipped = [];
  for (const div of doc.querySelectorAll("div.math")) {
    const mjx = div.querySelector("mjx-container");
    if (!mjx) continue;
    if (div.scrollWidth > div.clientWidth + 1) wide++;
    if (mjx.getBoundingClientRect().left < div.getBoundingClientRect().left - 1) clipped.push(div.textContent.trim().slice(0, 60));
  }
  const origin = win.location.origin;
  const external = [];
  for (const e of doc.querySelectorAll("script[src], link[rel~=stylesheet][href], img[src]")) {
    const url = new URL(e.getAttribute("src") || e.getAttribute("href"), doc.baseURI);
    if (!["data:", "blob:"].includes(url.protocol) && url.origin !== origin) external.push(url.href);
  }
  const widgetKinds = {};
  for (const e of doc.querySelectorAll(".widget-subarea [class*='widget-']")) {
    for (const c of e.classList) if (/^widget-(hprogress|slider|hslider|html|label|button|dropdown|checkbox|play|text)/.test(c)) widgetKinds[c] = (widgetKinds[c] || 0) + 1;
  }
  report({
    status: "done",
    title: doc.title,
    wait_ms: Math.round(performance.now() - t0),
    mathjax,
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
      src: im.getAttribute("src").slice(0, 100), w: im.naturalWidth, h: im.naturalHeight,
      in_output: !!im.closest(".cell_output, .output")})),
    widget_views: views.length,
    widgets_drawn: drawn(),
    widget_kinds: widgetKinds,
    widget_manager: (doc.querySelector("script[src*='embed-amd']") || {}).src || null,
    external,
  });
  // For the screenshot: bring the requested section, else the first figure, into view.
  const anchor = "__ANCHOR__" ? doc.getElementById("__ANCHOR__") : null;
  const fig = Array.from(doc.images).find(im => im.closest(".cell_output") && im.naturalWidth > 0);
  if (anchor) anchor.scrollIntoView({block: "start"});
  else if (fig) fig.scrollIntoView({block: "center"});
}
run().catch(e => report({status: "error", error: String(e && e.stack || e)}));
</script></body></html>
"""


class Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the built site, plus the harness page at HARNESS."""

    page = ""
    anchor = ""

    def do_GET(self):
        if self.path.split("?")[0] == HARNESS:
            body = (HARNESS_HTML.replace("__PAGE__", html.escape(self.page))
                    .replace("__ANCHOR__", re.sub(r"[^A-Za-z0-9_-]", "", self.anchor)).encode())
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            super().do_GET()

    def log_message(self, *args):  # keep the output readable
        pass


def find_chromium(explicit=None):
    """Path of a Chromium/Chrome binary, or None."""
    for name in ([explicit] if explicit else []) + [os.environ.get("CHROMIUM", "")] + list(BROWSERS):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def chromium(binary, url, extra, budget_ms, timeout_s):
    """Run headless Chromium on url; return (stdout, stderr)."""
    with tempfile.TemporaryDirectory() as profile:
        cmd = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--disable-dev-shm-usage", "--hide-scrollbars", "--enable-logging=stderr", "--v=0",
               f"--user-data-dir={profile}",
               # offline: no host name resolves except the local server
               "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
               "--window-size=1280,1600", f"--virtual-time-budget={budget_ms}", *extra, url]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    return proc.stdout, proc.stderr


def serve(site: Path, page: str, anchor: str = ""):
    handler = type("BoundHandler", (Handler,), {"page": "/" + page.lstrip("/"), "anchor": anchor})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def evaluate(r: dict, min_math: int, min_figures: int):
    """Turn the harness report into (lines to print, list of failures)."""
    imgs = r.get("images", [])
    figures = [i for i in imgs if i["in_output"] and i["w"] > 0 and i["h"] > 0]
    broken = [i for i in imgs if i["w"] == 0 or i["h"] == 0]
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
        f"widgets         : {r.get('widgets_drawn')} of {r.get('widget_views')} saved views drawn "
        f"{r.get('widget_kinds') or ''} (manager {r.get('widget_manager')})",
        f"external loads  : {len(r.get('external', []))}",
        f"waited          : {r.get('wait_ms')} ms (browser time)",
    ]
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
    if r.get("widgets_drawn", 0) < r.get("widget_views", 0):
        fails.append(f"only {r.get('widgets_drawn')} of {r.get('widget_views')} saved widgets were drawn")
    if r.get("external"):
        fails.append(f"the page loads from other hosts (not offline): {r['external'][:3]}")
    return lines, fails


def console_errors(stderr: str):
    """Console messages and JS errors Chromium logged while loading the page."""
    msgs = [ln.split("] ", 1)[-1] for ln in stderr.splitlines() if ":CONSOLE" in ln or "Uncaught" in ln]
    return list(dict.fromkeys(msgs))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--site", type=Path, default=ROOT / "_build" / "html", help="the built site (default _build/html)")
    ap.add_argument("--page", default="lessons/01_forward_process_2d.html", help="page to open, relative to the site")
    ap.add_argument("--screenshot", type=Path, default=None, help="PNG to write (default <site>/../browser_check.png)")
    ap.add_argument("--anchor", default="", help="id of the section to show in the screenshot (default: first figure)")
    ap.add_argument("--min-math", type=int, default=1, help="fewest typeset equations the page must show")
    ap.add_argument("--min-figures", type=int, default=1, help="fewest figures the page must show")
    ap.add_argument("--chromium", default=None, help="browser binary (default: chromium, or $CHROMIUM)")
    ap.add_argument("--budget-ms", type=int, default=20000, help="virtual time the page gets to settle")
    args = ap.parse_args(argv)

    site = args.site.resolve()
    if not (site / args.page).is_file():
        print(f"error: {site / args.page} does not exist; build the book first (jupyter-book build .)",
              file=sys.stderr)
        return 2
    binary = find_chromium(args.chromium)
    if binary is None:
        print("error: no Chromium found (Debian: apt-get install chromium; or set $CHROMIUM)", file=sys.stderr)
        return 2
    shot = (args.screenshot or site.parent / "browser_check.png").resolve()

    server = serve(site, args.page, args.anchor)
    url = f"http://127.0.0.1:{server.server_address[1]}{HARNESS}"
    try:
        dom, err = chromium(binary, url, ["--dump-dom"], args.budget_ms, timeout_s=180)
        shot.parent.mkdir(parents=True, exist_ok=True)
        chromium(binary, url, [f"--screenshot={shot}"], args.budget_ms, timeout_s=180)
    finally:
        server.shutdown()

    m = re.search(r'<pre id="result">(.*?)</pre>', dom, re.S)
    report = json.loads(html.unescape(m.group(1))) if m else {"status": "no result in the dumped DOM"}
    print(f"browser check: {args.page} in {Path(binary).name}, served from {site}")
    if report.get("status") != "done":
        print(f"FAIL: the harness did not finish: {report}")
        return 1
    lines, fails = evaluate(report, args.min_math, args.min_figures)
    print("\n".join("  " + ln for ln in lines))
    for msg in console_errors(err)[:10]:
        print(f"  console         : {msg[:200]}")
    print(f"  screenshot      : {shot if shot.is_file() else 'not written'}")
    if fails:
        for f in fails:
            print(f"FAIL: {f}")
        return 1
    print("OK: equations typeset, figures loaded, widgets drawn, nothing loaded from the network")
    return 0


if __name__ == "__main__":
    sys.exit(main())

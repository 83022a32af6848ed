"""report.html in a real browser (issue 16): headless Chromium loads the page from disk, offline,
and a probe script (added to a copy only; the report has none) writes what the browser sees into
the DOM, which --dump-dom prints: every image decoded, every table with the expected rows."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess

import pytest

from report_store import TABLE2_ROWS, make_store, odd_method

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--virtual-time-budget=10000")
PROBE = """<script>
window.addEventListener("load", function () {
  var images = Array.prototype.map.call(document.images, function (im) {
    return {alt: im.alt, complete: im.complete, width: im.naturalWidth, height: im.naturalHeight};
  });
  var tables = Array.prototype.map.call(document.querySelectorAll("table"), function (t) {
    return {head: Array.prototype.map.call(t.tHead.rows[0].cells, function (c) { return c.textContent; }),
            first: Array.prototype.map.call(t.tBodies[0].rows, function (r) { return r.cells[0].textContent; })};
  });
  var out = document.createElement("pre");
  out.id = "probe";
  out.textContent = JSON.stringify({images: images, tables: tables});
  document.body.appendChild(out);
});
</script>"""


def _browser():
    return next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)


@pytest.fixture
def browser():
    found = _browser()
    if found is None:
        pytest.skip("no Chromium found (Debian: apt-get install chromium; .ci/run installs it where apt-get works)")
    return found


@pytest.mark.parametrize("mode", ["embed", "link"])
def test_report_renders_in_headless_chromium(browser, tmp_path, mode):
    from cmr_bench.report import figures
    from cmr_bench.report.page import ENV_FIELDS, write_report

    out = tmp_path / "report"
    with odd_method():
        store = make_store(tmp_path / "runs")
        written = figures.plot_pr(store, "synthetic", out / "fig_pr.png") + \
            figures.plot_precision_at_r(store, "synthetic", out / "fig_precision_at_r.png")
        page, _ = write_report(store, "synthetic", out, figures=mode)  # link: the PNGs beside the page, from disk
    probe = out / "probe.html"
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    cmd = [browser, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", probe.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    m = re.search(r'<pre id="probe">(.*?)</pre>', proc.stdout, re.S)
    assert m, f"the browser printed no probe result (exit {proc.returncode}): {proc.stderr[-2000:]}"
    seen = json.loads(html.unescape(m.group(1)))
    # every figure decoded by the browser, at the size of its PNG
    assert len(seen["images"]) == len(written) == 2
    from PIL import Image

    sizes = sorted(Image.open(p).size for p in written)
    assert all(im["complete"] and im["width"] > 0 for im in seen["images"])
    assert sorted((im["width"], im["height"]) for im in seen["images"]) == sizes
    # every table with its rows: Table II (the store's methods and the label ceiling), the environment
    by_head = {t["head"][0]: t for t in seen["tables"]}
    assert len(seen["tables"]) == 2 and set(by_head) == {"Method", "Field"}
    assert by_head["Method"]["first"] == TABLE2_ROWS
    assert by_head["Field"]["first"] == [label for _, label in ENV_FIELDS]

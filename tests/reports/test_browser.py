"""The HTML report in headless Chromium: it renders, a screenshot is taken, and no image is broken.

Needs Debian's `chromium` (apt-get install chromium); skipped with that reason when it is absent.
Run with `tox -e browser` or `pytest -m browser tests/reports`.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from reports_fixture import check_png

pytestmark = pytest.mark.browser

# Marks <body> with the number of images and of broken ones once the page has loaded.
PROBE = """<script>
function probe() {
  const imgs = Array.from(document.images);
  const broken = imgs.filter(i => !(i.complete && i.naturalWidth > 0 && i.naturalHeight > 0));
  document.body.setAttribute("data-images", String(imgs.length));
  document.body.setAttribute("data-broken", broken.map(i => i.alt).join(" | ") || "none");
}
if (document.readyState === "complete") { probe(); } else { window.addEventListener("load", probe); }
</script>"""


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    if Path("/usr/bin/chromium").is_file():
        return "/usr/bin/chromium"
    pytest.skip("headless Chromium is not installed (Debian: apt-get install chromium)")


def _run(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}"]
    return subprocess.run([_chromium(), *flags, *args], capture_output=True, text=True, timeout=180)


def test_html_report_renders_without_broken_images(built_report, tmp_path):
    html = built_report["html"].read_text(encoding="utf-8")
    n_images = len(re.findall(r"<img ", html))
    assert n_images >= 20
    page = tmp_path / "probe.html"
    page.write_text(html.replace("</body>", PROBE + "\n</body>"), encoding="utf-8")
    dom = _run(["--virtual-time-budget=15000", "--dump-dom", page.as_uri()], tmp_path / "profile-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    body = re.search(r"<body([^>]*)>", dom.stdout)
    assert body, "Chromium printed no DOM"
    attrs = dict(re.findall(r'(data-[a-z]+)="([^"]*)"', body.group(1)))
    assert attrs.get("data-images") == str(n_images), attrs
    assert attrs.get("data-broken") == "none", f"broken images: {attrs.get('data-broken')}"

    shot = tmp_path / "report.png"
    run = _run(["--window-size=1280,2400", "--hide-scrollbars", f"--screenshot={shot}",
                built_report["html"].as_uri()], tmp_path / "profile-shot")
    assert run.returncode == 0 and shot.is_file(), run.stderr[-2000:]
    width, height = check_png(shot.read_bytes())
    assert (width, height) == (1280, 2400)
    assert shot.stat().st_size > 50_000  # text, tables and plots; a blank page compresses to a few kB

"""Headless Chromium for the page's tests and the demo's screenshot: Debian's chromium and
chromedriver driven by Selenium (an optional dependency, in the test extra), the network
disabled, nothing downloaded (the driver path is given, so selenium-manager never runs).

`python -m sfc_relp.browser PAGE.html OUT.png` saves a screenshot of a page."""

from __future__ import annotations

import shutil
import tempfile
from contextlib import contextmanager

CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
CHROMEDRIVER = "/usr/bin/chromedriver"


def missing_reason() -> str | None:
    """Why no browser can run here, or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    if not any(shutil.which(p) for p in CHROMIUM):
        return "Chromium could not be installed here (apt-get install chromium chromium-driver failed or no root)"
    if not shutil.which(CHROMEDRIVER):
        return "chromium-driver could not be installed here (apt-get install chromium-driver)"
    return None


@contextmanager
def offline_chromium(width: int = 1400, height: int = 900):
    """A Selenium driver for headless Chromium with a fresh profile and no network."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="sfc-relp-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = next(p for p in CHROMIUM if shutil.which(p))
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}", f"--window-size={width},{height}",
                 "--proxy-server=127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


SELECT_STRONGEST = """
var data = JSON.parse(document.getElementById("circuit-data").textContent), best = -1;
data.nodes.forEach(function (n, i) {
  if (n.feature && (best < 0 || Math.abs(n.effect) > Math.abs(data.nodes[best].effect))) { best = i; }
});
if (best >= 0) { window.sfcRelpPage.select(best); }
"""


def screenshot(page, png, width: int = 1400, height: int = 900, select: bool = True) -> list[str]:
    """Open `page` from a file:// URL offline (with `select`, the strongest feature node
    selected, so its contexts show), save a PNG; return the browser's console messages."""
    import time
    from pathlib import Path

    from .files import atomic_write

    reason = missing_reason()
    if reason:
        raise RuntimeError(reason)
    with offline_chromium(width, height) as driver:
        driver.get(Path(page).resolve().as_uri())
        if select:
            driver.execute_script(SELECT_STRONGEST)
        time.sleep(0.5)
        png_bytes = driver.get_screenshot_as_png()
        logs = [entry["message"] for entry in driver.get_log("browser")]
    atomic_write(png, lambda tmp: Path(tmp).write_bytes(png_bytes))
    return logs


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 3:
        sys.exit("usage: python -m sfc_relp.browser PAGE.html OUT.png")
    why = missing_reason()
    if why:
        sys.exit(f"no screenshot: {why}")
    for message in screenshot(sys.argv[1], sys.argv[2]):
        print(message)
    print(sys.argv[2])

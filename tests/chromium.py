"""One headless Chromium for the viewer's browser tests, the viewer benches and the README screenshots.

Why one place: the flags that make Chromium run headless and offline as root in CI (no sandbox, no GPU,
no background network, component updates or sync) and pin the viewport to exact CSS pixels must be the
same for every page we test, time or photograph.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]


class ChromiumMissing(RuntimeError):
    """chromium or chromedriver is not installed (scripts/test.sh installs both)."""


def find_chromium() -> tuple[str, str]:
    """Paths of the Chromium binary and of chromedriver."""
    browser = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    driver = shutil.which("chromedriver")
    if not browser or not driver:
        raise ChromiumMissing(
            "chromium/chromedriver not found; scripts/test.sh installs them (apt-get install -y chromium chromium-driver)"
        )
    return browser, driver


def start_chromium(
    profile: Path | str, width: int, height: int, extra: Sequence[str] = (), browser_log: bool = True
) -> Any:
    """Headless Chromium with the profile folder ``profile`` and a viewport of exactly ``width`` x ``height``."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver_path = find_chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in [*FLAGS, f"--window-size={width},{height}", f"--user-data-dir={profile}", *extra]:
        options.add_argument(flag)
    if browser_log:
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
    )
    return driver

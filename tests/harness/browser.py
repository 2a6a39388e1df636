"""Drive headless Chromium (SwiftShader WebGPU) on pages of the built site.

One browser and one Pyodide boot are shared by a test session where tests allow it; tests
that need a different browser (no WebGPU, fresh profile for storage) start their own.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

CHROMIUM = os.environ.get("DOPPLER_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("DOPPLER_CHROMEDRIVER", "/usr/bin/chromedriver")
BASE_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--disable-dev-shm-usage",
)
WEBGPU_FLAGS = (
    "--enable-unsafe-webgpu",
    "--use-webgpu-adapter=swiftshader",
    "--enable-features=Vulkan",
)
# A browser without WebGPU at all: navigator.gpu is absent.
NO_WEBGPU_FLAGS = ("--disable-features=WebGPU,Vulkan",)

os.environ.setdefault("SE_OFFLINE", "true")  # never let selenium-manager go online


@contextmanager
def chromium(flags: tuple[str, ...] = WEBGPU_FLAGS) -> Iterator[webdriver.Chrome]:
    """Start headless Chromium with a fresh profile; quit it and delete the profile after."""
    profile = tempfile.mkdtemp(prefix="doppler-profile-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*BASE_FLAGS, *flags, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    # Real models on SwiftShader take minutes per call; the HTTP client's default is 120 s.
    driver.command_executor.client_config.timeout = 900
    driver.set_script_timeout(900)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


# Wait for ui.js to finish booting: window.doppler (ready) or window.dopplerError (failed).
_WAIT_BOOT = """
const done = arguments[arguments.length - 1];
const started = Date.now();
(function poll() {
  if (window.doppler) return done({ok: window.doppler.status()});
  if (window.dopplerError) return done({error: window.dopplerError});
  if (Date.now() - started > arguments[0]) return done({error: {code: 'test_timeout'}});
  setTimeout(poll, 50);
})();
"""


def open_app(driver: webdriver.Chrome, url: str, timeout_ms: int = 240_000) -> dict[str, Any]:
    """Open the app page and wait for its boot; returns ``{ok: status}`` or ``{error: ...}``."""
    driver.get(url)
    return driver.execute_async_script(_WAIT_BOOT.replace("arguments[0]", str(timeout_ms)))


def run_async(driver: webdriver.Chrome, body: str, *args: Any) -> Any:
    """Run an async JS function body in the page; returns its value or raises its error.

    ``body`` sees ``args`` and ``doppler``; a thrown ``DopplerError`` comes back as
    :class:`PageError` with its code.
    """
    script = (
        "const done = arguments[arguments.length - 1];"
        "const args = Array.from(arguments).slice(0, -1);"
        "const doppler = window.doppler;"
        f"(async () => {{ {body} }})().then("
        "  (value) => done({ok: value === undefined ? null : value}),"
        "  (e) => done({error: {code: e.code ?? e.name, message: String(e.message ?? e)}}));"
    )
    reply = driver.execute_async_script(script, *args)
    if "error" in reply:
        raise PageError(reply["error"]["code"], reply["error"]["message"])
    return reply["ok"]


class PageError(Exception):
    """A JS error from the page, with the ``code`` of a DopplerError when it had one."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

"""The page as a person uses it: a model from ?model=, a chat turn, a stop button, stats."""

from __future__ import annotations

import pytest
from selenium.webdriver.support.ui import WebDriverWait

from harness.browser import chromium, open_app

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_chat_in_the_page(site_url, model_server):
    model = f"{model_server}llama_chat/manifest.json"
    with chromium() as driver:
        assert "ok" in open_app(driver, f"{site_url}index.html?model={model}")
        wait = WebDriverWait(driver, 300)
        wait.until(lambda d: "is ready" in d.find_element("id", "model-state").text)
        assert driver.find_element("id", "manifest-url").get_attribute("value") == model
        driver.find_element("id", "max-tokens").clear()
        driver.find_element("id", "max-tokens").send_keys("6")
        driver.find_element("id", "prompt").send_keys("Hello there!")
        driver.find_element("id", "send-button").click()
        wait.until(lambda d: "tok/s decode" in d.find_element("id", "reply-stats").text)
        turns = driver.find_elements("css selector", "#transcript .turn")
        assert [t.get_attribute("data-role") for t in turns] == ["user", "assistant"]
        assert turns[0].text == "Hello there!"
        assert driver.find_element("id", "stop-button").get_attribute("disabled") == "true"
        assert driver.find_element("id", "send-button").get_attribute("disabled") is None


def test_moe_budget_and_paging_stats_in_the_page(site_url, model_server):
    """A GPU budget typed into the page pages a MoE model's experts; the page says so, and
    shows each generation's paging by tier."""
    model = f"{model_server}mixtral_chat/manifest.json"
    with chromium() as driver:
        assert "ok" in open_app(driver, f"{site_url}index.html?model={model}")
        wait = WebDriverWait(driver, 300)
        wait.until(lambda d: "is ready" in d.find_element("id", "model-state").text)
        assert "All 16 experts are on the GPU" in driver.find_element("id", "model-state").text
        info = driver.execute_script("return window.dopplerModel;")
        others = sum(info["gpuBytes"].values()) - info["gpuBytes"]["experts"]
        quarter = others + (2 << 20) + 4 * info["experts"]["slot_bytes"]
        driver.find_element("id", "gpu-budget").send_keys(f"{quarter / 2**20:.6f}")
        driver.find_element("id", "load-button").click()
        wait.until(lambda d: "fit on the GPU at once" in d.find_element("id", "model-state").text)
        assert "4 of its 16 experts" in driver.find_element("id", "model-state").text
        driver.find_element("id", "max-tokens").clear()
        driver.find_element("id", "max-tokens").send_keys("6")
        driver.find_element("id", "prompt").send_keys("Hello there!")
        driver.find_element("id", "send-button").click()
        wait.until(lambda d: "Experts: GPU" in d.find_element("id", "paging-stats").text)
        text = driver.find_element("id", "paging-stats").text
        assert " misses, " in text and "MiB uploaded" in text

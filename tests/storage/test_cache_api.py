"""``doppler.cache``: list, usage and delete over what loads left in OPFS."""

from __future__ import annotations

import pytest
from selenium.webdriver.support.ui import WebDriverWait
from storage_helpers import PageError, load, model_files, opfs, request

pytestmark = pytest.mark.browser


def test_list_usage_and_delete(site_url, models_url, faults, storage_root, browser_factory):
    driver = browser_factory(site_url)
    small, big = model_files(storage_root / "small"), model_files(storage_root / "big")
    assert "info" in load(driver, f"{models_url}m1/small/manifest.json")
    assert "info" in load(driver, f"{models_url}m1/big/manifest.json")

    listed = {m["url"].split("/")[-2]: m for m in request(driver, "cache.list")["models"]}
    assert listed["small"]["totalBytes"] == listed["small"]["storedBytes"] == sum(small.values())
    assert listed["big"]["complete"] and listed["big"]["inUse"]  # this worker holds it
    assert not listed["small"]["inUse"]
    assert listed["big"]["lastUsed"] >= listed["small"]["lastUsed"]
    usage = request(driver, "cache.usage")
    assert usage["available"] and usage["models"] == 2
    assert usage["cachedBytes"] == sum(small.values()) + sum(big.values())

    with pytest.raises(PageError) as err:
        request(driver, "cache.delete", {"target": "f" * 64})
    assert err.value.code == "not_cached"
    deleted = request(driver, "cache.delete", {"target": listed["small"]["modelId"]})
    assert deleted == {
        "deleted": listed["small"]["modelId"],
        "kind": "model",
        "freedBytes": sum(small.values()),
    }
    assert opfs(driver)["shards"] == big
    assert [m["modelId"] for m in opfs(driver)["models"]] == [listed["big"]["modelId"]]


def test_cache_panel_lists_and_deletes(site_url, models_url, browser_factory):
    """The page's cache panel lists cached models with sizes and deletes one."""
    small, big = f"{models_url}m1/small/manifest.json", f"{models_url}m1/big/manifest.json"
    driver = browser_factory(site_url)
    driver.get(f"{site_url}index.html?model={small}")
    wait = WebDriverWait(driver, 300)
    rows = "#cache-list tr"
    # The panel may list the model while it is still loading; wait for the load to finish.
    wait.until(lambda d: "is ready" in d.find_element("id", "model-state").text)
    wait.until(lambda d: len(d.find_elements("css selector", rows)) == 1)
    assert driver.find_element("css selector", f"{rows} button").text == "In use"
    assert "cached" in driver.find_element("id", "cache-usage").text
    url_field = driver.find_element("id", "manifest-url")
    url_field.clear()
    url_field.send_keys(big)
    driver.find_element("id", "load-button").click()
    wait.until(lambda d: "big" in d.find_element("id", "model-state").text)
    wait.until(lambda d: len(d.find_elements("css selector", rows)) == 2)
    first, second = driver.find_elements("css selector", rows)
    assert "KiB" in first.text + second.text or "MiB" in first.text + second.text
    # The big model is in use now; the small one (listed second, least recent) can go.
    delete = second.find_element("tag name", "button")
    assert delete.text == "Delete"
    delete.click()
    wait.until(lambda d: len(d.find_elements("css selector", rows)) == 1)
    assert len(request(driver, "cache.list")["models"]) == 1

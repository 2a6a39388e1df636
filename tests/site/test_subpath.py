"""The site works from a sub-path of a static host, not only from its root."""

from __future__ import annotations

import pytest
from tools.static_server import serving

from harness.browser import chromium, open_app

pytestmark = pytest.mark.browser


def test_site_boots_from_a_sub_path(site_dir, tmp_path):
    (tmp_path / "hosted" / "apps").mkdir(parents=True)
    (tmp_path / "hosted" / "apps" / "doppler").symlink_to(site_dir, target_is_directory=True)
    with serving(tmp_path / "hosted") as url, chromium() as driver:
        reply = open_app(driver, url + "apps/doppler/index.html")
        assert reply["ok"]["gpu"]["architecture"] == "swiftshader"

import sys
sys.path.insert(0, "/work/main/tests/storage")
from test_faults import *  # noqa
def test_dbg(site_url, big_url, faults, storage_root, browser_factory):
    name, size = largest_shard(storage_root)
    faults.faults += [
        Fault("drop", suffix=f"{name}.bin", at=MiB + MiB // 2, times=1),
        Fault("ignore_range", suffix=f"{name}.bin"),
    ]
    driver = browser_factory(site_url)
    print(load(driver, big_url)["events"][-1])
    for e in driver.get_log("browser"): print(e["message"][:300])
    print(requests_for(faults, name))

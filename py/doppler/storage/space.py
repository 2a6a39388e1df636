"""Will a model fit in this origin's storage? The check and the message people see."""

from __future__ import annotations

from doppler.storage.errors import QuotaExceeded


def mib(n: int | float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def missing_bytes(shards: dict[str, int], stored: dict[str, int], partial: dict[str, int]) -> int:
    """Bytes still to write to cache ``shards``: stored shards count as done, partial
    downloads as far as they are verified."""
    return sum(
        size - partial.get(name, 0) for name, size in shards.items() if stored.get(name) != size
    )


ADVICE = "Delete cached models (cache.delete) or free disk space, then retry."


def check_fits(name: str, needed: int, quota: int, usage: int, freed: int) -> None:
    """Raise :class:`QuotaExceeded` with the numbers when ``needed`` more bytes won't fit."""
    free = max(0, quota - usage)
    if needed <= free:
        return
    evicted = f"; evicting unused cached models freed {mib(freed)}" if freed else ""
    raise QuotaExceeded(
        f"not enough storage to cache {name}: it needs {mib(needed)} more, but only "
        f"{mib(free)} of this site's {mib(quota)} storage quota is free ({mib(usage)} in "
        f"use{evicted}). {ADVICE}"
    )


def out_of_space(name: str, total: int, quota: int, usage: int, detail: str) -> QuotaExceeded:
    """The error for a write that ran out of space, with the numbers the browser gives."""
    return QuotaExceeded(
        f"not enough storage to cache {name} ({mib(total)}): {detail}; this site's storage "
        f"reports {mib(usage)} in use of a {mib(quota)} quota. {ADVICE}"
    )

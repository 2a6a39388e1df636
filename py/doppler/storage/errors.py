"""Typed storage errors; their ``code`` reaches the page unchanged (``DopplerError.code``)."""

from __future__ import annotations

from doppler.errors import Aborted, DopplerError


class StorageError(DopplerError):
    """Base of every error raised while getting a model's bytes."""

    code = "storage_failed"


class FetchError(StorageError):
    """A file could not be fetched from any source."""

    code = "fetch_failed"


class IntegrityError(FetchError):
    """Every source served bytes whose SHA-256 is not the one their name promises."""

    code = "hash_mismatch"


class QuotaExceeded(StorageError):
    """The model does not fit in this origin's storage quota, even after eviction."""

    code = "quota_exceeded"


class StorageFull(QuotaExceeded):
    """A write to OPFS ran out of space although the estimate said the model would fit
    (browsers enforce limits that ``estimate()`` does not show)."""


class NotCached(StorageError):
    """``cache.delete`` was given a model id or shard name the cache does not hold."""

    code = "not_cached"


class InUse(StorageError):
    """A model (or shard) is being loaded or run by a tab, so it is not deleted."""

    code = "in_use"


class CacheUnavailable(StorageError):
    """This browser context has no usable OPFS (private mode, blocked site data, ...)."""

    code = "cache_unavailable"


BY_CODE: dict[str, type[StorageError]] = {
    cls.code: cls
    for cls in (FetchError, IntegrityError, StorageFull, NotCached, InUse, CacheUnavailable)
}


def from_code(code: str, message: str) -> DopplerError:
    """The typed error for a ``{code, message}`` pair coming back from JS."""
    if code == "aborted":
        return Aborted(message)
    return BY_CODE.get(code, StorageError)(message, code)

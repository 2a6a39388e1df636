"""Errors that cross the worker boundary carry a stable ``code`` and a human message.

Every failure the user or an embedding page can act on is a :class:`DopplerError`; the
worker protocol sends ``{code, message}`` and the JS side rethrows it with the same code.
"""

from __future__ import annotations


class DopplerError(Exception):
    """An error with a machine-readable ``code`` (snake_case) and a message for people."""

    code = "internal"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self)

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


class GpuUnavailable(DopplerError):
    """No usable WebGPU device: ``no_webgpu``, ``adapter_failed`` or ``device_failed``."""

    code = "gpu_unavailable"


class GpuValidationError(DopplerError):
    """WebGPU rejected a pipeline, bind group or dispatch (a bug or an unmet limit)."""

    code = "gpu_validation"


class BadRequest(DopplerError):
    """A request's payload is malformed (wrong kind, missing or mistyped field)."""

    code = "bad_request"


class Aborted(DopplerError):
    """The caller cancelled the request through its ``AbortSignal``."""

    code = "aborted"

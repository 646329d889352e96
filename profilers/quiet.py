"""Third-party noise off: the lines libraries print that say nothing about the user's run.

:func:`quiet_libraries` runs when ``profilers`` or ``optimizer`` is imported (and so in the CLI,
the Python API and the notebooks alike). It turns off, and only these:

* the torch profiler's (kineto's) ``USDT ... profiler_start`` / ``profiler_stop`` lines on stderr,
  two for every measured memory profile: ``KINETO_LOG_LEVEL=6``. Kineto reads it when the torch
  profiler first starts (not when torch is imported), so it takes effect as long as nothing in
  the process ran the profiler before ``profilers`` was imported. Kineto has no level that drops
  these lines and keeps its errors, so its errors go too;
* transformers' "Loading weights" bars: ``HF_HUB_DISABLE_PROGRESS_BARS=1``;
* torchao's "Failed to load .../torchao/_C_*.so" log records (its optional CUDA kernels, absent
  from a CPU build), and torch's pytree notice that registering an Enum is deprecated (torchao does
  that on import): two log records dropped by message, every other record of those loggers kept.

An environment variable the user set wins (it is only set when absent). No Python warning is
filtered: none of the known noise is a warning, and a warning may matter.
"""

from __future__ import annotations

import logging
import os

__all__ = ["ENVIRONMENT", "LOG_NOISE", "quiet_libraries"]

#: variable -> value, set when the user has not set it
ENVIRONMENT = {
    "KINETO_LOG_LEVEL": "6",  # above USDT (5), kineto's most severe level, which profiler_start/stop use
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
}

#: logger name -> substrings a record's message must all hold to be dropped
LOG_NOISE = {
    "torchao": ("Failed to load ", "torchao", ".so"),
    "torch.utils._pytree": ("is an Enum subclass and is now natively supported by torch.compile",),
}


class _DropKnownNoise(logging.Filter):
    """Drops the records of one logger whose message holds every one of ``parts``."""

    def __init__(self, parts: tuple[str, ...]) -> None:
        super().__init__()
        self.parts = parts

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is not ours to judge: keep it
            return True
        return not all(p in msg for p in self.parts)


def quiet_libraries() -> None:
    """Set the environment defaults and attach the log filters (idempotent)."""
    for name, value in ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    for name, parts in LOG_NOISE.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropKnownNoise) for f in logger.filters):
            logger.addFilter(_DropKnownNoise(parts))

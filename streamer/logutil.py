"""Logging helpers: stderr setup and rate-limited warnings for per-message problems."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any


class RateLimitedLog:
    """Log a warning at most once per ``interval_s`` per key, with the count skipped.

    Per-message problems (malformed frames, unknown events) must be visible without
    flooding the log when a feed goes bad: the first one is logged at once, later ones
    are summarised.
    """

    def __init__(self, logger: logging.Logger, *, interval_s: float = 10.0) -> None:
        self._logger = logger
        self._interval_s = interval_s
        self._last: dict[str, float] = {}
        self._skipped: dict[str, int] = {}

    def warning(self, key: str, msg: str, *args: Any) -> None:
        """Log ``msg % args`` unless ``key`` was logged less than interval_s ago."""
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self._interval_s:
            self._skipped[key] = self._skipped.get(key, 0) + 1
            return
        skipped = self._skipped.pop(key, 0)
        self._last[key] = now
        if skipped:
            msg += " (%d similar suppressed)"
            args = (*args, skipped)
        self._logger.warning(msg, *args)


def setup_logging(level: str) -> None:
    """Text log lines to stderr (stdout carries data)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("websockets").setLevel(max(root.level, logging.WARNING))
    logging.getLogger("httpx").setLevel(max(root.level, logging.WARNING))
    logging.getLogger("httpcore").setLevel(max(root.level, logging.WARNING))

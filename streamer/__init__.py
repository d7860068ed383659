"""limitless-streamer: a real-time market-data daemon for Limitless Exchange."""

from __future__ import annotations

__version__ = "0.1.0"

"""An in-memory transport: frames from a list (benchmarks, replays, tests)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import anyio

from streamer.errors import ConnectionLost


class MemoryTransport:
    """Yields the given text frames, then fails like a dropped socket.

    Args:
        frames: the frames the "server" sends, in order.
        yield_every: let other tasks run after this many frames, as a network would.
    """

    def __init__(self, frames: Iterable[str], *, yield_every: int = 64) -> None:
        self._frames: Iterator[str] = iter(frames)
        self._yield_every = yield_every
        self._count = 0
        self.sent: list[str] = []

    async def send(self, text: str) -> None:
        """Record a frame sent by the client."""
        self.sent.append(text)

    async def receive(self) -> str:
        """The next frame; ConnectionLost when there are no more."""
        self._count += 1
        if self._count % self._yield_every == 0:
            await anyio.lowlevel.checkpoint()
        try:
            return next(self._frames)
        except StopIteration:
            raise ConnectionLost("end of recorded frames") from None

    async def aclose(self) -> None:
        """Nothing to close."""

"""Two daemons as an active-active pair into one JetStream stream: one copy per event."""

from __future__ import annotations

from collections import Counter
from functools import partial

import anyio
import pytest
from prometheus_client import CollectorRegistry

from orderbook.book import OrderBook
from orderbook.types import Book, BookDelta
from sinks.delivery import book_message_id
from sinks.records import decode_record
from sinks.url import parse_sink_url
from streamer import app
from streamer.config import load_settings
from streamer.feed import Feed
from streamer.metrics import Metrics
from streamer.simulator import Simulator, SimulatorConfig
from tests.brokers.conftest import BrokerProcess, read_jetstream
from tests.integration.test_daemon import numeric

pytestmark = [pytest.mark.anyio, pytest.mark.integration, pytest.mark.brokers]

PREFIX = "aa.books"
STREAM = "AA_BOOKS"


async def test_active_active_pair_stores_each_delta_once(nats_server: BrokerProcess) -> None:
    sim = Simulator(SimulatorConfig(seed=31, markets=4, groups=0, rate_hz=60.0, quirks=False))
    feeds: dict[int, Feed] = {}
    specs = [parse_sink_url(f"nats://127.0.0.1:{nats_server.port}/{PREFIX}?stream={STREAM}"
                            f"&name=nats{i}") for i in range(2)]
    async with anyio.create_task_group() as tg:
        address = await tg.start(sim.run)
        for i in range(2):
            settings = load_settings(None, {"api_url": address.api_url,
                                            "ws_url": address.ws_url, "all_markets": True,
                                            "metrics_addr": "127.0.0.1:0"})
            tg.start_soon(partial(app.run, settings, None, on_feed=partial(feeds.__setitem__, i),
                                  handle_signals=False, specs=[specs[i]],
                                  metrics=Metrics(CollectorRegistry(), process_metrics=False)))
            await anyio.sleep(0.3)  # the second daemon starts later, with its own seq
        with anyio.fail_after(20):
            while len(feeds) < 2 or min(
                sum(e.sync.stats.deltas_emitted for e in f.universe.markets.values())
                for f in feeds.values()
            ) < 150:
                await anyio.sleep(0.05)
        sim.pause()
        await anyio.sleep(1.0)  # let both daemons flush what the paused simulator sent
        tg.cancel_scope.cancel()
    messages = await read_jetstream(nats_server.port, STREAM, f"{PREFIX}.>")
    records = [decode_record(m.data) for m in messages]
    deltas = [r for r in records if isinstance(r, BookDelta)]
    ids = Counter(book_message_id(r) for r in deltas)
    assert max(ids.values()) == 1, "a delta was stored twice"
    published = sum(spec.sink.stats.published for spec in specs)  # type: ignore[attr-defined]
    duplicates = sum(spec.sink.duplicates for spec in specs)  # type: ignore[attr-defined]
    assert duplicates >= 100, f"JetStream removed only {duplicates} copies of {published}"
    # A consumer applying the stream in order (seq is per daemon, so not checked across the
    # pair) ends with the simulator's books.
    books: dict[str, OrderBook] = {}
    for record in records:
        if isinstance(record, Book):
            book = books[record.market] = OrderBook()
            book.apply_delta(record.bids, record.asks)
        elif isinstance(record, BookDelta) and record.market in books:
            books[record.market].apply_delta(record.bids, record.asks)
    for slug in sim.exchange.book_slugs():
        assert numeric(books[slug].levels()) == sim.exchange.book(slug), slug

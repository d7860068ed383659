"""The seed queue: which market gets a REST book next, and when a failed one comes back."""

from __future__ import annotations

import random

from streamer.feed.retry import Backoff
from streamer.feed.seeding import SeedQueue

NO_JITTER = Backoff(initial_s=1.0, factor=2.0, cap_s=4.0, jitter=0.0)


def queue() -> SeedQueue:
    return SeedQueue(NO_JITTER, Backoff(initial_s=10.0, factor=2.0, cap_s=40.0, jitter=0.0),
                     rng=random.Random(1))


def drain(q: SeedQueue, now: float) -> list[str]:
    out = []
    while (item := q.pop(now)) is not None:
        out.append(item[0])
    return out


def test_least_recently_verified_first_and_urgent_before_all() -> None:
    q = queue()
    q.want("fresh", "resubscribe", verified_at=900.0, now=1000.0)
    q.want("stale", "resubscribe", verified_at=10.0, now=1000.0)
    q.want("never", "resubscribe", verified_at=0.0, now=1000.0)
    q.want("diverged", "divergence", verified_at=990.0, now=1000.0)
    assert drain(q, 1000.0) == ["diverged", "never", "stale", "fresh"]
    assert len(q) == 0 and q.next_due_in(1000.0) is None


def test_a_pending_request_keeps_its_place_and_an_urgent_one_upgrades_it() -> None:
    q = queue()
    q.want("a", "resubscribe", 5.0, 0.0)
    q.want("b", "resubscribe", 1.0, 0.0)
    q.want("a", "stale_probe", 0.0, 0.0)  # already pending: not re-ordered
    assert q.reason("a") == "resubscribe"
    q.want("a", "crossed", 5.0, 0.0)
    assert q.reason("a") == "crossed"
    assert drain(q, 0.0) == ["a", "b"]


def test_cancel_drops_a_pending_seed() -> None:
    q = queue()
    q.want("a", "resubscribe", 0.0, 0.0)
    assert q.cancel("a") == "resubscribe"
    assert q.cancel("a") is None
    assert q.pop(0.0) is None


def test_a_failed_seed_backs_off_per_market_without_holding_up_others() -> None:
    q = queue()
    q.want("bad", "resubscribe", 0.0, 0.0)
    q.want("good", "resubscribe", 5.0, 0.0)
    assert q.pop(0.0) == ("bad", "resubscribe")
    assert q.failed("bad", "resubscribe", 0.0, now=0.0) == 1.0
    assert q.pop(0.5) == ("good", "resubscribe")  # bad is not due before 1.0
    assert q.pop(0.5) is None
    assert q.next_due_in(0.5) == 0.5
    assert q.pop(1.0) == ("bad", "resubscribe")
    assert q.failed("bad", "resubscribe", 0.0, now=1.0) == 2.0
    assert q.pop(2.9) is None and q.pop(3.0) is not None
    assert [q.failed("bad", "r", 0.0, now=t) for t in (3.0, 3.0)] == [4.0, 4.0]  # capped
    q.pop(100.0)
    q.succeeded("bad")
    assert q.failed("bad", "r", 0.0, now=100.0) == 1.0  # success starts the backoff over


def test_a_book_that_stays_crossed_is_reseeded_with_backoff_not_per_update() -> None:
    q = queue()
    q.want_crossed("m", 0.0, now=0.0)
    assert q.pop(0.0) == ("m", "crossed")  # the first crossed book: at once
    q.want_crossed("m", 0.0, now=1.0)
    for _ in range(50):  # every further crossed update while one is pending: no new call
        q.want_crossed("m", 0.0, now=1.0)
    assert q.pop(10.9) is None
    assert q.pop(11.0) == ("m", "crossed")
    q.want_crossed("m", 0.0, now=12.0)
    assert q.pop(31.9) is None and q.pop(32.0) is not None
    q.uncrossed("m")
    q.want_crossed("m", 0.0, now=40.0)
    assert q.pop(40.0) == ("m", "crossed")  # not crossed in between: at once again
    assert q.has_crossed


def test_forget_drops_everything_about_a_market() -> None:
    q = queue()
    q.want("m", "resubscribe", 0.0, 0.0)
    q.failed("m", "resubscribe", 0.0, 0.0)
    q.want_crossed("n", 0.0, 0.0)
    q.forget("m")
    q.forget("n")
    assert len(q) == 0 and not q.has_crossed
    q.want("m", "resubscribe", 0.0, 0.0)
    assert q.pop(0.0) == ("m", "resubscribe")

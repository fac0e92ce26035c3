"""Peek: a live sample of what one subtask emits, taken for the dashboard.

The coordinator asks a node to show what a task's subtasks emit (``PeekTask``); each of
them then has a ``PeekSampler``, offered every batch its chain hands on (to the output
edges, or to its sink) and drained every flush interval into one ``PeekSamples``. This
module is the sampler alone: no sockets, no I/O, and it never reads a clock — every call
is given "now" (monotonic milliseconds). ``mesh.node.runtime.peeking`` drives it.

Rules:

* rate: at most ``rate`` records are taken in any 1000 ms (a sliding window over the
  times of the latest takes), ``rate`` being what was asked, capped at ``MAX_RATE``;
* spread: a token bucket that refills at ``rate`` per second and holds at most a quarter
  second's worth meters the takes too, so a fast stream shows a steady trickle rather
  than one burst a second; the records taken from a batch are spread evenly over it;
* lease: nothing is taken from ``lease_until`` on; ``renew`` replaces the rate and the
  lease; a lease of 0 or less ends it at once and drops what was taken;
* what is taken is encoded at once, as records are on the wire (a record that cannot be
  encoded is shown as its ``repr``), and held only until the next ``drain``.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import orjson

__all__ = ["MAX_RATE", "PeekSampler", "encode_sample"]

#: The most records a subtask shows per second, whatever is asked.
MAX_RATE = 100
# The window the rate applies to.
_WINDOW_MS = 1000.0
# The token bucket holds this share of a second's records (a flush interval's worth).
_BURST_SHARE = 0.25

_dumps = orjson.dumps


def encode_sample(record: Any) -> bytes:
    """``record`` as JSON, as the wire encodes it; one that cannot be, as its ``repr``."""
    try:
        return _dumps(record)
    except TypeError:
        pass
    try:
        return _dumps(repr(record))
    except Exception:  # user code's __repr__ raised, or it is not valid UTF-8
        return _dumps(f"<{type(record).__name__}>")


class PeekSampler:
    """The sample of one subtask's output while a peek's lease runs (see the module doc)."""

    def __init__(self, max_per_second: int, lease_ms: int, now_ms: float) -> None:
        #: Records per second it may take (0: none), at most ``MAX_RATE``.
        self.rate = 0
        #: Monotonic ms from which nothing is taken (the lease's end).
        self.lease_until = now_ms
        # The times of the takes within the last _WINDOW_MS, oldest first (never more
        # than the largest rate asked since, so at most MAX_RATE).
        self._taken: deque[float] = deque()
        # Records the bucket lets through now (fractional between refills), <= _burst.
        self._tokens = 0.0
        # The most the bucket holds (>= 1 while rate > 0).
        self._burst = 0
        # When the bucket was last refilled (monotonic ms).
        self._refilled_at = now_ms
        # Encoded records taken since the last drain, in the order taken.
        self._pending: list[bytes] = []
        self.renew(max_per_second, lease_ms, now_ms)
        # A new peek shows a first record at once. Not a full bucket: a second's burst
        # and rate would overrun the window, which would then starve the end of every
        # second, in step with that first burst.
        self._tokens = min(1.0, float(self._burst))

    def renew(self, max_per_second: int, lease_ms: int, now_ms: float) -> None:
        """Asked again: the rate and the lease from now are these (a lease of 0 or less
        ends the peek now and drops what was taken)."""
        self._refill(now_ms)
        self.rate = max(0, min(max_per_second, MAX_RATE))
        self._burst = math.ceil(self.rate * _BURST_SHARE)
        self._tokens = min(self._tokens, float(self._burst))
        self.lease_until = now_ms + max(lease_ms, 0)
        if lease_ms <= 0:
            self._pending.clear()

    def expired(self, now_ms: float) -> bool:
        """Whether the lease ran out (the sampler takes nothing more)."""
        return now_ms >= self.lease_until

    def offer(self, batch: list[Any], now_ms: float) -> int:
        """Take what the rate allows of ``batch`` (records the subtask emits now, in
        order); returns how many were taken."""
        if now_ms >= self.lease_until or not batch:
            return 0
        allowed = self._allowance(now_ms)
        if allowed <= 0:
            return 0
        n = len(batch)
        # All of it, or what is allowed evenly spread over it.
        picks = batch if allowed >= n else [batch[i * n // allowed] for i in range(allowed)]
        self._pending.extend(encode_sample(record) for record in picks)
        taken = len(picks)
        self._taken.extend([now_ms] * taken)
        self._tokens -= taken
        return taken

    def drain(self) -> bytes | None:
        """The records taken since the last drain as one JSON list, and forget them
        (None: none were taken)."""
        pending = self._pending
        if not pending:
            return None
        self._pending = []
        return b"[" + b",".join(pending) + b"]"

    def _refill(self, now_ms: float) -> None:
        elapsed = now_ms - self._refilled_at
        if elapsed > 0:
            self._tokens = min(float(self._burst), self._tokens + elapsed * self.rate / 1000.0)
            self._refilled_at = now_ms

    def _allowance(self, now_ms: float) -> int:
        """How many records may be taken now: what the bucket holds, within what the
        window leaves."""
        taken = self._taken
        horizon = now_ms - _WINDOW_MS
        while taken and taken[0] <= horizon:
            taken.popleft()
        self._refill(now_ms)
        return min(int(self._tokens), self.rate - len(taken))

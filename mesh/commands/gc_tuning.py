"""The cyclic garbage collector's settings for a daemon once it is up.

Records come and go by the thousand per batch. With CPython's default threshold (a
collection every 700 allocations) the collector runs several times per batch, moves
records in flight and fresh state into the older generations, and the full collections
that follow walk every module, class and setting the daemon loaded. Those live as long
as the process: frozen, no collection walks them again; and the youngest generation is
collected every ``YOUNG_THRESHOLD`` allocations, which delays freeing a reference cycle
by a few thousand allocations at most.
"""

from __future__ import annotations

import gc

__all__ = ["YOUNG_THRESHOLD", "settle_heap"]

YOUNG_THRESHOLD = 10_000


def settle_heap() -> None:
    """Freeze what the daemon loaded, after a last full collection, and collect the
    youngest generation less often."""
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, oldest)

"""Per-second rates over a short window (mesh/node/runtime/rates.py), with readings at given
times (no clock)."""

from __future__ import annotations

import threading

from mesh.node.runtime.rates import Rates, RateWindow


def test_no_rate_until_the_readings_span_half_a_second() -> None:
    window = RateWindow(window_ms=10_000)
    assert window.rates(1_000, (0, 0)) is None
    assert window.rates(1_400, (40, 0)) is None
    assert window.rates(1_500, (50, 25)) == (100.0, 50.0)


def test_the_base_is_the_newest_reading_at_least_a_window_old() -> None:
    window = RateWindow(window_ms=2_000)
    window.rates(0, (0.0,))
    window.rates(1_000, (1_000.0,))  # 1000/s for the first second
    window.rates(2_000, (1_000.0,))  # then nothing
    # At 3 s the base is the reading at 1 s (2 s old): 0 more in 2 s.
    assert window.rates(3_000, (1_000.0,)) == (0.0,)
    # At 3.5 s the base is still 1 s (the reading at 2 s is only 1.5 s old).
    assert window.rates(3_500, (1_250.0,)) == (100.0,)


def test_readings_close_together_share_one_sample() -> None:
    window = RateWindow(window_ms=1_000)
    window.rates(0, (0.0,))
    for t in range(1_000, 1_090, 10):  # many readers at nearly the same time
        window.rates(t, (10.0,))
    # Kept: 0 and 1000; at 2000 the base is 1000 (the newest at least 1 s old).
    assert window.rates(2_000, (30.0,)) == (20.0,)


def test_a_rare_reader_gets_the_rate_since_its_previous_reading() -> None:
    window = RateWindow(window_ms=1_000)
    window.rates(0, (0.0,))
    assert window.rates(60_000, (6_000.0,)) == (100.0,)


def test_rates_keep_a_window_per_subtask_and_forget_ended_ones() -> None:
    rates = Rates(window_ms=1_000)
    rates.rates("a", 0, (0.0,))
    rates.rates("b", 0, (0.0,))
    assert rates.rates("a", 1_000, (5.0,)) == (5.0,)
    assert rates.rates("b", 1_000, (7.0,)) == (7.0,)
    rates.keep_only(["a"])
    assert rates.rates("b", 2_000, (9.0,)) is None  # a new window: no rate yet
    assert rates.rates("a", 2_000, (10.0,)) == (5.0,)


def test_rates_may_be_read_from_several_threads() -> None:
    rates = Rates(window_ms=1_000)
    errors: list[BaseException] = []

    def read(offset: int) -> None:
        try:
            for t in range(0, 5_000, 7):
                rates.rates(t % 3, float(t + offset), (float(t),))
                rates.keep_only([0, 1, 2])
        except BaseException as exc:  # pragma: no cover - what the test looks for
            errors.append(exc)

    threads = [threading.Thread(target=read, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []

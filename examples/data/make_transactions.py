"""Make examples/data/transactions/*.jsonl: card transactions of 100 users over 400 s.

Deterministic (seeded). Two files of 200 s each, every file in time order except that
about 1 ordinary transaction in 20 arrives up to 3 s late — within the 5 s the fraud
example's watermarks allow. Amounts are 1 to 500 except for the users the fraud example
is about:

* 12 fraudsters: a tiny amount (below 1), then 1 or 2 large ones (above 500) within 25 s
  of it — each large one is an alert;
* 6 patient users: a tiny amount early on, then a large one 160 s or more later, long
  after the example's 60 s timer has fired: no alert;
* 6 users with a tiny amount (or two) and no large one, and 6 big spenders with large
  amounts and never a tiny one: no alert either.

So the alerts do not depend on when watermarks happen to arrive, nothing relevant comes
within 10 s of the boundary between the files, and each large amount after a tiny one is
either well within 60 s of it (under 30 s) or well beyond (over 120 s, with more than
two read batches of 1024 other transactions in between). ``main`` checks all of that.

    python examples/data/make_transactions.py
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import orjson

START = 1_700_000_000_000  # 2023-11-14T22:13:20Z
FILE_SPAN = 200_000  # ms of transactions per file
FILES = 2
END = START + FILES * FILE_SPAN
QUIET = 10_000  # no tiny or large amount this close to a file boundary
MAX_LATE = 3_000  # ms an ordinary transaction may arrive late (the example allows 5 s)
MAX_DELAY = 5_000  # the example's watermark delay
BATCH = 1_024  # records a source reads between watermarks


def tiny(rng: random.Random) -> float:
    return round(rng.uniform(0.01, 0.99), 2)


def large(rng: random.Random) -> float:
    return round(rng.uniform(501, 5_000), 2)


def ordinary(rng: random.Random) -> float:
    return round(rng.uniform(1, 500), 2)


def episode_start(rng: random.Random, length: int) -> int:
    """A time for an episode of ``length`` ms that stays inside one file, clear of its
    boundaries."""
    while True:
        part = rng.randrange(FILES)
        lo = START + part * FILE_SPAN + QUIET
        hi = START + (part + 1) * FILE_SPAN - QUIET - length
        t = rng.randint(lo, hi)
        if t > START + 2 * QUIET or part > 0:  # not in the very first seconds either
            return t


def make() -> list[list[dict[str, Any]]]:
    """The records of each file, in the order they arrive."""
    rng = random.Random(11)
    users = [f"u{n}" for n in range(100)]
    special = rng.sample(users, 30)
    fraudsters, patient = special[:12], special[12:18]
    tiny_only, spenders = special[18:24], special[24:]
    everyday = [u for u in users if u not in special]

    # (ts, user, amount) of the transactions that matter to the fraud detector
    planned: list[tuple[int, str, float]] = []
    for user in fraudsters:
        t = episode_start(rng, 25_000)
        planned.append((t, user, tiny(rng)))
        for _ in range(rng.choice([1, 1, 2])):
            planned.append((t + rng.randint(2_000, 25_000), user, large(rng)))
    for user in patient:
        t = START + rng.randint(2_000, 12_000)
        planned.append((t, user, tiny(rng)))
        planned.append((t + rng.randint(160_000, 175_000), user, large(rng)))
    for user in tiny_only:
        t = episode_start(rng, 5_000)
        planned.append((t, user, tiny(rng)))
        if rng.random() < 0.5:
            planned.append((t + rng.randint(500, 5_000), user, tiny(rng)))
    for user in spenders:
        for _ in range(rng.randint(2, 4)):
            planned.append((episode_start(rng, 0), user, large(rng)))

    # ordinary traffic of everybody, about 25 transactions a second
    arrivals: list[tuple[int, str, float, bool]] = [(t, u, a, True) for t, u, a in planned]
    ts = START
    while True:
        ts += rng.randint(1, 79)
        if ts >= END:
            break
        arrivals.append((ts, rng.choice(users), ordinary(rng), False))
    arrivals.sort(key=lambda a: a[0])

    files: list[list[dict[str, Any]]] = [[] for _ in range(FILES)]
    for t, user, amount, relevant in arrivals:
        late = not relevant and rng.random() < 0.05
        record = {
            "ts": t - rng.randint(1, MAX_LATE) if late else t,
            "user": user,
            "amount": amount,
        }
        files[(t - START) // FILE_SPAN].append(record)
    check(files, set(fraudsters), set(patient), set(everyday))
    return files


def check(
    files: list[list[dict[str, Any]]],
    fraudsters: set[str],
    patient: set[str],
    everyday: set[str],
) -> None:
    """Assert what the example's expected results rely on (see the module docstring)."""
    records = [r for f in files for r in f]
    times = [r["ts"] for r in records]
    relevant = [not 1 <= r["amount"] <= 500 for r in records]
    top = times[0]
    for t, matters in zip(times, relevant, strict=True):
        assert top - t < MAX_DELAY  # disorder below the watermark delay
        assert not (matters and t < top)  # tiny and large amounts are never late
        top = max(top, t)
    for r, t, matters in zip(records, times, relevant, strict=True):
        if matters:
            assert r["user"] not in everyday
            assert all(abs(t - (START + k * FILE_SPAN)) > QUIET for k in range(1, FILES))

    # A source subtask reads a contiguous byte range (half of the bytes with two): the
    # line where the second half starts must be between the files' quiet zones.
    lines = [orjson.dumps(r) + b"\n" for r in records]
    half, offset, split = sum(map(len, lines)) // 2, 0, 0
    while offset + len(lines[split]) <= half:
        offset += len(lines[split])
        split += 1
    assert abs(times[split] - (START + FILE_SPAN)) < QUIET - MAX_LATE, times[split] - START

    # Per user, in event-time order: each tiny or large amount after a tiny one comes
    # well within 60 s of it or well beyond. When beyond, the 60 s timer has fired
    # whenever the watermarks happen to arrive: the tiny amount and the next one are both
    # read by the first subtask, the next one more than two batches of records after the
    # first record that lets that subtask's watermark pass the timer, and the timer is
    # below the first watermark the second subtask sends.
    by_user: dict[str, list[tuple[int, float, int]]] = {}
    for index, (r, t, matters) in enumerate(zip(records, times, relevant, strict=True)):
        if matters:
            by_user.setdefault(r["user"], []).append((t, r["amount"], index))
    for user, events in by_user.items():
        armed: int | None = None
        for t, amount, index in sorted(events):
            if armed is not None and t >= armed + 60_000:
                assert t > armed + 120_000, user
                assert index < split, user
                assert armed + 60_000 < times[split] - MAX_LATE - MAX_DELAY, user
                first = next(i for i, u in enumerate(times) if u >= armed + 60_000 + MAX_DELAY)
                assert index - first > 2 * BATCH + 50, user
                armed = None
            if armed is None:
                armed = t if amount < 1 else None
            else:
                assert t < armed + 30_000, user
        if user in fraudsters or user in patient:
            assert any(a < 1 for _, a, _ in events) and any(a > 500 for _, a, _ in events)


def main() -> None:
    out = Path(__file__).parent / "transactions"
    out.mkdir(exist_ok=True)
    for part, records in enumerate(make()):
        lines = [orjson.dumps(r) for r in records]
        (out / f"part-{part + 1}.jsonl").write_bytes(b"\n".join(lines) + b"\n")


if __name__ == "__main__":
    main()

"""Generate the benchmark data set: N JSON lines {"ts", "user", "value", "text"}.

Deterministic (seeded): the same arguments always give the same bytes.
* ts: event time in ms, about 1 ms apart, up to 1.5 s out of order (for event-time runs)
* user: "u<k>", zipf-distributed over 10,000 users (weight of user k is 1/(k+1))
* value: an int in 1..100
* text: 4-12 words from a 30-word vocabulary; about 1 in 4 texts holds "error"

    python bench/generate.py --events 1000000 --out bench/data/events.jsonl
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import random
from pathlib import Path

import orjson

VOCABULARY = (
    "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november "
    "oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu error "
    "warning info debug"
).split()


def generate(path: Path, events: int, users: int = 10_000, seed: int = 42) -> None:
    rng = random.Random(seed)
    cumulative = list(itertools.accumulate(1.0 / (k + 1) for k in range(users)))
    total = cumulative[-1]
    path.parent.mkdir(parents=True, exist_ok=True)
    base = 1_700_000_000_000
    with open(path, "wb") as out:
        chunk = []
        for i in range(events):
            user = bisect.bisect_left(cumulative, rng.random() * total)
            record = {
                "ts": base + i - rng.randint(0, 1500) if rng.random() < 0.05 else base + i,
                "user": f"u{user}",
                "value": rng.randint(1, 100),
                "text": " ".join(rng.choices(VOCABULARY, k=rng.randint(4, 12))),
            }
            chunk.append(orjson.dumps(record))
            if len(chunk) == 10_000:
                out.write(b"\n".join(chunk) + b"\n")
                chunk = []
        if chunk:
            out.write(b"\n".join(chunk) + b"\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, default=Path("bench/data/events.jsonl"))
    args = parser.parse_args()
    generate(args.out, args.events)


if __name__ == "__main__":
    main()

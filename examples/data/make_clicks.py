"""Make examples/data/clicks/*.jsonl: page events of 40 users over 10 minutes.

Deterministic (seeded). Each file holds 200 s of events in time order, except that about
1 event in 20 arrives up to 1.5 s late — within the 2 s the example's watermarks allow.

    python examples/data/make_clicks.py
"""

from __future__ import annotations

import random
from pathlib import Path

import orjson

START = 1_700_000_000_000  # 2023-11-14T22:13:20Z


def write_clicks(directory: Path, *, seed: int = 7, files: int = 3, seconds: int = 200) -> None:
    """Write ``files`` files of ``seconds`` of events each into ``directory``."""
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    ts = START
    for part in range(files):
        lines = []
        end = START + (part + 1) * seconds * 1000
        while ts < end:
            ts += rng.randint(1, 40)
            late = rng.random() < 0.05
            event = {
                "ts": ts - rng.randint(1, 1500) if late else ts,
                "user": f"u{rng.randint(0, 39)}",
                "kind": rng.choice(["click", "click", "view"]),
                "page": rng.choice(["/", "/cart", "/search", "/item", "/help"]),
            }
            lines.append(orjson.dumps(event))
        (directory / f"part-{part + 1}.jsonl").write_bytes(b"\n".join(lines) + b"\n")


def main() -> None:
    write_clicks(Path(__file__).parent / "clicks")


if __name__ == "__main__":
    main()

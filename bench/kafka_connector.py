"""The Kafka connector's throughput against a real broker, next to the raw client; prints JSON.

    python bench/kafka_connector.py --records 1000000 --rounds 3

Starts one Kafka node (tests/kafka.py, the benchmark heap), then per round:

- ``sink_at_least_once``: ``sinks.Kafka(semantic="at_least_once")``'s writer, batches of
  10,000 records (``write`` + ``wait_writable``), ``flush`` at the end; encoding included;
- ``sink_exactly_once``: the exactly-once writer buffering, ``prepare_commit`` every
  100,000 records and the committer writing each committable in its transaction (the
  checkpoint's own JSON encoding of the committables is not counted);
- ``source``: ``sources.Kafka(stop_at="latest")``'s reader at parallelism 1 reading the
  at-least-once topic (6 partitions) to its end, ``read(10000)``, JSON decoding included;

and the reference of each, a ``python -c`` loop on confluent-kafka alone in a process of
its own: ``produce`` per record and ``poll(0)`` every 10,000, idempotent (and the same in
a transaction per 100,000 records), and ``consume(10000)`` + ``orjson.loads`` per record,
``read_committed``. Records are ~100-byte JSON objects (dict built before timing).
Figures are records per second, the median of the rounds, with every round's figure.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mesh.api import sinks, sources  # noqa: E402
from mesh.connectors.context import TaskContext  # noqa: E402
from mesh.time.clock import SystemClock  # noqa: E402
from tests.kafka import BENCH_JVM_OPTS, Kafka, kafka_libs, running_kafka  # noqa: E402

PARTITIONS = 6

_RECORD = (
    "{'id': i, 'user': 'u%d' % (i % 10007), 'ts': 1700000000000 + i, "
    "'amount': i % 1000 / 10, 'note': 'abcdefghijklmnopqrstuvwxyz0123'}"
)

_REF_PRODUCE = """
import sys, time, orjson
from confluent_kafka import Producer
bootstrap, topic, n, txn = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
records = [RECORD for i in range(n)]
conf = {"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
        "linger.ms": 5, "batch.size": 1000000}
if txn:
    conf["transactional.id"] = "bench-ref-" + topic
p = Producer(conf)
if txn:
    p.init_transactions(30)
t0 = time.perf_counter()
if txn:
    p.begin_transaction()
for i, r in enumerate(records, 1):
    while True:
        try:
            p.produce(topic, orjson.dumps(r))
            break
        except BufferError:
            p.poll(0.05)
    if i % 10000 == 0:
        p.poll(0)
    if txn and i % 100000 == 0:
        p.commit_transaction(60)
        if i < n:
            p.begin_transaction()
if txn and n % 100000:
    p.commit_transaction(60)
while p.flush(1) > 0:
    pass
print(n / (time.perf_counter() - t0))
""".replace("RECORD", _RECORD)

_REF_CONSUME = """
import sys, time, orjson
from confluent_kafka import Consumer, TopicPartition
bootstrap, topic, n, partitions = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-ref", "enable.auto.commit": False,
              "isolation.level": "read_committed", "fetch.queue.backoff.ms": 10})
c.assign([TopicPartition(topic, p, -2) for p in range(partitions)])
got = 0
t0 = None
loads = orjson.loads
while got < n:
    batch = c.consume(num_messages=10000, timeout=1)
    if t0 is None and batch:
        t0 = time.perf_counter()
    out = [loads(m.value()) for m in batch]
    got += len(out)
print(n / (time.perf_counter() - t0))
c.close()
"""


def _ctx(uid: str) -> TaskContext:
    return TaskContext(
        job_id="bench",
        attempt=0,
        node_id="node-1",
        task_name=uid,
        subtask_index=0,
        parallelism=1,
        max_parallelism=128,
        base_dir=ROOT,
        clock=SystemClock(),
        operator_uid=uid,
    )


def _records(n: int) -> list[dict[str, Any]]:
    return [eval(_RECORD, {"i": i}) for i in range(n)]


def _reference(code: str, *args: object) -> float:
    out = subprocess.run(
        [sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, check=True
    )
    return float(out.stdout.strip().splitlines()[-1])


async def _sink_at_least_once(kafka: Kafka, topic: str, records: list[Any]) -> float:
    sink = sinks.Kafka(topic, bootstrap=kafka.bootstrap, semantic="at_least_once")
    writer = sink.create_writer(_ctx(topic))
    await writer.open()
    try:
        t0 = time.perf_counter()
        for start in range(0, len(records), 10_000):
            writer.write(records[start : start + 10_000])
            await writer.wait_writable()
        await writer.flush()
        return len(records) / (time.perf_counter() - t0)
    finally:
        writer.close()


async def _sink_exactly_once(kafka: Kafka, topic: str, records: list[Any]) -> float:
    sink = sinks.Kafka(topic, bootstrap=kafka.bootstrap)
    writer = sink.create_writer(_ctx(topic))
    committer = sink.create_committer(_ctx(topic))
    assert committer is not None
    await writer.open()
    await committer.open()
    try:
        t0 = time.perf_counter()
        checkpoint = 0
        for start in range(0, len(records), 10_000):
            writer.write(records[start : start + 10_000])
            if (start + 10_000) % 100_000 == 0 or start + 10_000 >= len(records):
                checkpoint += 1
                made = writer.prepare_commit(f"cp-{checkpoint}")
                if made is not None:
                    await committer.commit({**made, "checkpoint": checkpoint, "job": "bench"})
        return len(records) / (time.perf_counter() - t0)
    finally:
        committer.close()
        writer.close()


async def _source(kafka: Kafka, topic: str, expected: int) -> float:
    source = sources.Kafka(topic, bootstrap=kafka.bootstrap, stop_at="latest")
    reader = source.create_reader(_ctx(f"read-{topic}"))
    reader.initialize(None)
    await reader.open()
    try:
        got = 0
        t0 = time.perf_counter()
        while (batch := await reader.read(10_000)) is not None:
            got += len(batch)
        elapsed = time.perf_counter() - t0
    finally:
        reader.close()
    if got != expected:
        raise AssertionError(f"read {got} records, expected {expected}")
    return expected / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    libs = kafka_libs()
    if libs is None:
        raise SystemExit("no Kafka jars: run .ci/build-kafka or set MESH_KAFKA")
    n = args.records
    records = _records(n)
    figures: dict[str, list[float]] = {}

    def add(name: str, value: float) -> None:
        figures.setdefault(name, []).append(value)

    with (
        tempfile.TemporaryDirectory() as tmp,
        running_kafka(Path(tmp), libs, jvm_opts=BENCH_JVM_OPTS) as kafka,
    ):
        for r in range(args.rounds):
            for name in ("alo", "eo", "ref-alo", "ref-eo"):
                kafka.create_topic(f"{name}-{r}", PARTITIONS)
            add("sink_at_least_once", anyio.run(_sink_at_least_once, kafka, f"alo-{r}", records))
            add(
                "ref_produce_idempotent",
                _reference(_REF_PRODUCE, kafka.bootstrap, f"ref-alo-{r}", n, 0),
            )
            add("sink_exactly_once", anyio.run(_sink_exactly_once, kafka, f"eo-{r}", records))
            add(
                "ref_produce_transactional",
                _reference(_REF_PRODUCE, kafka.bootstrap, f"ref-eo-{r}", n, 1),
            )
            add("source_p1", anyio.run(_source, kafka, f"alo-{r}", n))
            add(
                "ref_consume_json",
                _reference(_REF_CONSUME, kafka.bootstrap, f"alo-{r}", n, PARTITIONS),
            )
    result = {
        "records": n,
        "partitions": PARTITIONS,
        "rounds": args.rounds,
        "records_per_s": {
            name: {"median": round(statistics.median(v)), "runs": [round(x) for x in v]}
            for name, v in figures.items()
        },
    }
    ratios = {
        "sink_at_least_once/ref": ("sink_at_least_once", "ref_produce_idempotent"),
        "sink_exactly_once/ref": ("sink_exactly_once", "ref_produce_transactional"),
        "source_p1/ref": ("source_p1", "ref_consume_json"),
    }
    result["ratio"] = {
        k: round(statistics.median(figures[a]) / statistics.median(figures[b]), 2)
        for k, (a, b) in ratios.items()
    }
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()

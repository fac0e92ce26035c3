"""W1 and W2 from Kafka to Kafka, exactly-once with 1 s checkpoints, next to the broker's
own perf tools and to the same jobs over files (issue 17); prints JSON.

    python bench/kafka.py --rounds 3            # 1,000,000 events
    python bench/kafka.py --rounds 1 --events 100000

Starts one Kafka node (tests/kafka.py, the benchmark JVM options), produces the
W1/W2 data set (bench/generate.py: JSON values, keyed by user) into a 6-partition topic,
then runs every case once per round, the order rotated each round:

- ``producer_perf``: ``org.apache.kafka.tools.ProducerPerformance`` (kafka-producer-perf-
  test), as many records as events, payloads taken from the data set's lines (the same
  sizes), ``acks=all``, idempotent, no throttle; its own records/s;
- ``producer_perf_txn``: the same in transactions of 1 s (``--transaction-duration-ms``),
  as the exactly-once sink writes one per checkpoint;
- ``consumer_perf``: ``ConsumerPerformance`` (kafka-consumer-perf-test) reading the events
  topic, ``read_committed``; records/s of its fetch phase (``fetch.nMsg.sec``: group
  join excluded, as mesh's figures exclude deployment);
- ``kafka_w1``: bench/jobs/kafka_w1.py on a 1-node cluster — Kafka source (``stop_at=
  "latest"``) → W1's filter + map → Kafka sink ``exactly_once``, checkpoints every 1 s;
- ``kafka_w2``: bench/jobs/kafka_w2.py on 2 nodes — Kafka → key_by(user) → running sum →
  Kafka ``exactly_once``, checkpoints every 1 s;
- ``file_w1``, ``file_w2``: bench/jobs/w1.py (1 node) and w2.py (2 nodes) over the JSON
  lines file, as bench/run.py runs them (no checkpoints); ``file_w2_cp1s``: w2.py with
  checkpoints every 1 s, exactly-once;
- ``loop_w1``, ``loop_w2``: bench/run.py's batched plain loops, a peer that lets figures
  from other days and machines be compared.

mesh figures are bench/run.py's: records read / (last subtask finished − first subtask
started) from the job's status, the final checkpoint and the last transaction's commit
included (a sink subtask finishes after it); ``wall_s`` is submit → FINISHED. Every
Kafka job's output topic is read back ``read_committed`` and must hold exactly the
expected records (W1: the events whose text holds "error"; W2: one update per event,
the last per user being the user's total), or the run fails. Each mesh run gets a fresh
cluster (its state and logs under the run's directory, kept when something fails).
The results also go to bench/results/kafka-latest.json.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import re
import shutil
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
# The daemons LocalCluster starts inherit the environment: make them import this tree's mesh.
os.environ["PYTHONPATH"] = os.pathsep.join(
    dict.fromkeys([str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))])
)

from bench.generate import generate  # noqa: E402
from bench.run import (  # noqa: E402
    DATA,
    RESULTS,
    _count_lines,
    _run_job,
    loop_w1_batched,
    loop_w2_batched,
)
from mesh.client.local_cluster import LocalCluster  # noqa: E402
from tests.kafka import (  # noqa: E402
    BENCH_JVM_OPTS,
    Kafka,
    java_binary,
    kafka_libs,
    produce_json,
    read_topic,
    running_kafka,
)

PARTITIONS = 6
INPUT_TOPIC = "events"
# kafka-producer-perf-test.sh and kafka-consumer-perf-test.sh give the tools 512 MiB.
TOOL_JVM_OPTS = ("-Xmx512m", "-XX:+UseG1GC")
PAYLOAD_LINES = 100_000  # ProducerPerformance picks each record's payload among these

_PRODUCED = re.compile(r"(\d+) records sent, ([\d.]+) records/sec")


# -- the broker's tools ---------------------------------------------------------------------


def _tool(libs: Path, main: str, args: list[str], timeout_s: float = 600) -> str:
    command = [java_binary(), *TOOL_JVM_OPTS, "-cp", f"{libs}/*", main, *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    if done.returncode != 0:
        raise RuntimeError(f"{main} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def producer_perf(
    libs: Path, kafka: Kafka, topic: str, n: int, payloads: Path, transactional: bool
) -> float:
    args = [
        "--bootstrap-server",
        kafka.bootstrap,
        "--topic",
        topic,
        "--num-records",
        str(n),
        "--throughput",
        "-1",
        "--payload-file",
        str(payloads),
        "--command-property",
        "acks=all",
        "enable.idempotence=true",
    ]
    if transactional:
        args += ["--transaction-duration-ms", "1000", "--transactional-id", f"perf-{topic}"]
    out = _tool(libs, "org.apache.kafka.tools.ProducerPerformance", args)
    matches = list(_PRODUCED.finditer(out))
    match = matches[-1] if matches else None  # the summary is the last line
    if match is None or int(match.group(1)) != n:
        raise RuntimeError(f"ProducerPerformance: no summary for {n} records in:\n{out}")
    return float(match.group(2))


def consumer_perf(libs: Path, kafka: Kafka, topic: str, n: int, group: str) -> float:
    out = _tool(
        libs,
        "org.apache.kafka.tools.ConsumerPerformance",
        [
            "--bootstrap-server",
            kafka.bootstrap,
            "--topic",
            topic,
            "--num-records",
            str(n),
            "--group",
            group,
            "--timeout",
            "60000",
            "--command-property",
            "isolation.level=read_committed",
            "auto.offset.reset=earliest",
        ],
    )
    lines = [line for line in out.splitlines() if line.strip()]
    header = next(i for i, line in enumerate(lines) if line.startswith("start.time"))
    fields = dict(
        zip(
            [f.strip() for f in lines[header].split(",")],
            [f.strip() for f in lines[header + 1].split(",")],
            strict=True,
        )
    )
    if int(fields["data.consumed.in.nMsg"]) != n:
        raise RuntimeError(f"ConsumerPerformance read {fields['data.consumed.in.nMsg']} of {n}")
    return float(fields["fetch.nMsg.sec"])


# -- mesh ----------------------------------------------------------------------------------


def run_mesh(job: str, nodes: int, state_dir: Path, env: dict[str, str]) -> dict[str, Any]:
    """One run of ``job`` on a fresh cluster of ``nodes`` nodes (one slot each)."""
    # The job file reads these at import, on the client and on every node alike.
    os.environ.update(env)
    with LocalCluster(nodes=nodes, slots=1, state_dir=state_dir) as cluster:
        try:
            status = anyio.run(_run_job, cluster.address, ROOT / "bench" / "jobs" / job)
        except Exception as exc:
            raise RuntimeError(f"{job}: {exc} (logs under {cluster.log_dir})") from exc
    return status


def rate(status: dict[str, Any], records: int) -> float:
    seconds = (status["processing_finished_ms"] - status["processing_started_ms"]) / 1000
    return float(records / seconds)


def check_w1(kafka: Kafka, topic: str, expected: int) -> None:
    got = len(read_topic(kafka, topic, timeout_s=300))
    if got != expected:
        raise AssertionError(f"{topic}: {got} records read_committed, expected {expected}")


def check_w2(kafka: Kafka, topic: str, expected: int, totals: dict[str, int]) -> None:
    last: dict[str, int] = {}
    count = 0
    for _partition, _offset, _key, value in read_topic(kafka, topic, timeout_s=300):
        assert value is not None
        record = orjson.loads(value)
        last[record["user"]] = record["value"]  # one partition per user: in order
        count += 1
    if count != expected:
        raise AssertionError(f"{topic}: {count} records read_committed, expected {expected}")
    if last != totals:
        wrong = sum(1 for u, t in totals.items() if last.get(u) != t)
        raise AssertionError(f"{topic}: the last update of {wrong} users is not their total")


# -- the run ---------------------------------------------------------------------------------


def summary(values: list[float]) -> dict[str, Any]:
    return {
        "median": round(statistics.median(values)),
        "min": round(min(values)),
        "max": round(max(values)),
        "runs": [round(v) for v in values],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--events", type=int, default=1_000_000)
    args = parser.parse_args()
    libs = kafka_libs()
    if libs is None or not (libs / "kafka-tools-4.4.0.jar").exists():
        raise SystemExit("no Kafka jars or no kafka-tools: run .ci/build-kafka")
    n = args.events
    if not DATA.exists() or _count_lines(DATA) != n:
        generate(DATA, n)
    events = [orjson.loads(line) for line in DATA.read_bytes().splitlines()]
    expected_w1 = sum(1 for e in events if "error" in e["text"])
    totals: dict[str, int] = {}
    for e in events:
        totals[e["user"]] = totals.get(e["user"], 0) + e["value"]

    work = Path(tempfile.mkdtemp(prefix="mesh-kafka-bench-"))
    payloads = work / "payloads.txt"
    with open(DATA, "rb") as f:
        payloads.write_bytes(b"".join(itertools.islice(f, PAYLOAD_LINES)))
    figures: dict[str, list[float]] = {}
    walls: dict[str, list[float]] = {}
    load_before = os.getloadavg()

    with running_kafka(work / "kafka", libs, jvm_opts=BENCH_JVM_OPTS) as kafka:
        kafka.create_topic(INPUT_TOPIC, PARTITIONS)
        start = time.perf_counter()
        produce_json(kafka, INPUT_TOPIC, events, key=lambda e: e["user"], timeout_s=600)
        load_s = time.perf_counter() - start
        del events
        base_env = {"MESH_BENCH_BOOTSTRAP": kafka.bootstrap, "MESH_BENCH_TOPIC": INPUT_TOPIC}

        def mesh_case(name: str, job: str, nodes: int, r: int, env: dict[str, str]) -> None:
            status = run_mesh(job, nodes, work / f"{name}-{r}", {**base_env, **env})
            figures.setdefault(name, []).append(rate(status, n))
            walls.setdefault(name, []).append(status["wall_s"])

        def kafka_w1(r: int) -> None:
            topic = f"kafka-w1-{r}"
            kafka.create_topic(topic, PARTITIONS)
            mesh_case("kafka_w1", "kafka_w1.py", 1, r, {"MESH_BENCH_OUT_TOPIC": topic})
            check_w1(kafka, topic, expected_w1)

        def kafka_w2(r: int) -> None:
            topic = f"kafka-w2-{r}"
            kafka.create_topic(topic, PARTITIONS)
            mesh_case("kafka_w2", "kafka_w2.py", 2, r, {"MESH_BENCH_OUT_TOPIC": topic})
            check_w2(kafka, topic, n, totals)

        def file_case(name: str, job: str, nodes: int, interval: str) -> Any:
            def run(r: int) -> None:
                out = work / f"{name}-{r}-out"
                env = {
                    "MESH_BENCH_DATA": str(DATA),
                    "MESH_BENCH_OUT": str(out),
                    "MESH_BENCH_INTERVAL": interval,
                }
                mesh_case(name, job, nodes, r, env)
                shutil.rmtree(out, ignore_errors=True)

            return run

        def perf_produce(transactional: bool) -> Any:
            name = "producer_perf_txn" if transactional else "producer_perf"

            def run(r: int) -> None:
                topic = f"{name}-{r}"
                kafka.create_topic(topic, PARTITIONS)
                value = producer_perf(libs, kafka, topic, n, payloads, transactional)
                figures.setdefault(name, []).append(value)

            return run

        def perf_consume(r: int) -> None:
            value = consumer_perf(libs, kafka, INPUT_TOPIC, n, f"perf-{r}")
            figures.setdefault("consumer_perf", []).append(value)

        def loop(name: str, fn: Any) -> Any:
            def run(r: int) -> None:
                out = work / f"{name}.jsonl"
                start = time.perf_counter()
                count = fn(DATA, out)
                figures.setdefault(name, []).append(count / (time.perf_counter() - start))
                out.unlink()

            return run

        cases = [
            ("producer_perf", perf_produce(False)),
            ("producer_perf_txn", perf_produce(True)),
            ("consumer_perf", perf_consume),
            ("kafka_w1", kafka_w1),
            ("kafka_w2", kafka_w2),
            ("file_w1", file_case("file_w1", "w1.py", 1, "")),
            ("file_w2", file_case("file_w2", "w2.py", 2, "")),
            ("file_w2_cp1s", file_case("file_w2_cp1s", "w2.py", 2, "1s")),
            ("loop_w1", loop("loop_w1", loop_w1_batched)),
            ("loop_w2", loop("loop_w2", loop_w2_batched)),
        ]
        for r in range(args.rounds):
            shift = r % len(cases)
            for label, case in cases[shift:] + cases[:shift]:
                case(r)
                print(f"round {r}: {label} done", file=sys.stderr, flush=True)

    med = {name: statistics.median(v) for name, v in figures.items()}
    report: dict[str, Any] = {
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        },
        "dataset": {
            "events": n,
            "bytes": DATA.stat().st_size,
            "partitions": PARTITIONS,
            "w1_output_records": expected_w1,
            "load_into_kafka_s": round(load_s, 2),
        },
        "rounds": args.rounds,
        "records_per_s": {name: summary(v) for name, v in figures.items()},
        "wall_s": {
            name: {"median": round(statistics.median(v), 3), "runs": [round(x, 3) for x in v]}
            for name, v in walls.items()
        },
    }
    ratios = {
        "kafka_w1/file_w1": ("kafka_w1", "file_w1"),
        "kafka_w2/file_w2": ("kafka_w2", "file_w2"),
        "kafka_w2/file_w2_cp1s": ("kafka_w2", "file_w2_cp1s"),
        "kafka_w1/producer_perf": ("kafka_w1", "producer_perf"),
        "kafka_w1/consumer_perf": ("kafka_w1", "consumer_perf"),
        "kafka_w2/producer_perf": ("kafka_w2", "producer_perf"),
        "kafka_w2/consumer_perf": ("kafka_w2", "consumer_perf"),
        "file_w1/loop_w1": ("file_w1", "loop_w1"),
        "file_w2/loop_w2": ("file_w2", "loop_w2"),
    }
    report["ratio"] = {k: round(med[a] / med[b], 3) for k, (a, b) in ratios.items()}
    # The same ratios round by round (each within one round): the spread of a ratio.
    report["ratio_by_round"] = {
        k: [round(x / y, 3) for x, y in zip(figures[a], figures[b], strict=True)]
        for k, (a, b) in ratios.items()
    }
    shutil.rmtree(work, ignore_errors=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    text = orjson.dumps(report, option=orjson.OPT_INDENT_2).decode()
    (RESULTS / "kafka-latest.json").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()

"""Chaos benchmarks and the long chaos runs; prints JSON.

    python bench/chaos.py --only recovery --samples 7   # node kill -> processing resumed
    python bench/chaos.py --only soak --rounds 12 --seed 7   # the long chaos variant
    python bench/chaos.py --only w2                     # W2's dip and catch-up

* recovery: the sequence job on 3 nodes with the default settings (heartbeat 1 s /
  5 s, the default restart strategy), one node killed (-9) per sample, a fresh cluster
  each time. Reports, from the kill: when the job showed RESTARTING (detection), when
  every subtask of the new attempt ran again (processing resumed), and when the first
  heartbeat showed its sources producing. Target: resumed <= heartbeat timeout + 2 s
  (median). Every sample's committed output is checked too.
* soak: the long variant of tests/chaos: one run of the sequence job (dead letters on,
  three poison records) with ``--rounds`` faults drawn by ``--seed`` from: kill -9 a
  node right after a checkpoint, SIGSTOP a node past the heartbeat timeout, kill -9
  the coordinator; replacement nodes kill themselves in their k-th snapshot write
  (k drawn too). The committed output must equal the reference (lost = duplicates =
  0) and every poison record must be a dead letter exactly once.
* w2: W2 (keyed running sum over 5M events, 3 nodes, checkpoints every second) with a
  node killed midway, next to an undisturbed run: records/s per second of both, the
  dip, the time lost, and how fast the replay catches up.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.checkpoints import _data_x5, _env  # noqa: E402
from mesh.client.client import open_client, prepare_submission  # noqa: E402
from mesh.client.local_cluster import LocalCluster  # noqa: E402
from tests.chaos.harness import ChaosRun, SeqJob  # noqa: E402

JOBS = ROOT / "bench" / "jobs"


# -- recovery time --------------------------------------------------------------------------


async def _recovery_sample(run: ChaosRun) -> dict[str, Any]:
    await run.submit()
    status = await run.wait_running()
    await run.wait_checkpoint(after=await run.wait_checkpoint())
    victim = run.node(run.random.choice(run.nodes_of(status)))
    killed = time.monotonic()
    run.kill(victim)
    detected = running = producing = None
    with anyio.fail_after(60):
        while producing is None:
            s = await run.status()
            now = time.monotonic() - killed
            if detected is None and s["state"] in ("RESTARTING", "SCHEDULING"):
                detected = now
            subtasks = [st for t in s["tasks"] for st in t["subtasks"]]
            if s["attempt"] >= 1 and s["state"] == "RUNNING":
                if running is None and all(st["state"] == "RUNNING" for st in subtasks):
                    running = now
                sources = s["tasks"][0]["subtasks"]
                if running is not None and sum(st["records_in"] for st in sources) > 0:
                    producing = now
            assert s["state"] not in ("FAILED", "CANCELED"), s["error"]
            await anyio.sleep(0.02)
    run.add_node()
    final = await run.wait_final()
    verdict = run.verdict()
    assert final["state"] == "FINISHED" and verdict.exact, verdict.as_dict()
    return {
        "detected_ms": round((detected or 0) * 1000),
        "resumed_ms": round((running or 0) * 1000),
        "first_records_ms": round(producing * 1000),
        "output": verdict.as_dict(),
    }


def recovery(samples: int) -> dict[str, Any]:
    results = []
    for i in range(samples):
        with tempfile.TemporaryDirectory() as tmp:
            job = SeqJob(n=3000, rate=5000, interval="1s", restarts=None)
            run = ChaosRun(Path(tmp), job, nodes=3, heartbeat_interval="", seed=i)
            try:
                run.start()
                results.append(anyio.run(_recovery_sample, run))
            finally:
                run.stop()
    resumed = [r["resumed_ms"] for r in results]
    return {
        "settings": "heartbeat 1s/5s, default restart strategy (exponential, 1s first delay)",
        "samples": results,
        "detected_ms_median": statistics.median(r["detected_ms"] for r in results),
        "resumed_ms_median": statistics.median(resumed),
        "resumed_ms_max": max(resumed),
        "first_records_ms_median": statistics.median(r["first_records_ms"] for r in results),
        "target": "resumed <= heartbeat timeout + 2 s = 7000 ms (median)",
    }


# -- the long chaos variant -------------------------------------------------------------------

POISON = "1:5,6:2000,11:4000"


async def _soak(run: ChaosRun, rounds: int) -> dict[str, Any]:
    await run.submit()
    faults = []
    for _ in range(rounds):
        fault = run.random.choice(["node-kill", "node-stop", "coordinator-kill"])
        status = await run.wait_running()
        await run.wait_checkpoint(after=await run.wait_checkpoint())
        if fault == "coordinator-kill":
            assert run.cluster.coordinator is not None
            run.kill(run.cluster.coordinator)
            run.restart_coordinator()
        else:
            victim = run.node(run.random.choice(run.nodes_of(status)))
            run.kill(victim, signal.SIGKILL if fault == "node-kill" else signal.SIGSTOP)
        try:
            await run.wait_running(attempt_above=status["attempt"])
        finally:
            for node in run.cluster.nodes:
                if node.alive():
                    os.kill(node.pid, signal.SIGCONT)
        live = [n for n in run.cluster.nodes if n.alive()]
        while len(live) < 3:
            # Replacements die in their k-th snapshot write (a node killed mid-snapshot),
            # if they run part of the job long enough.
            k = run.random.randint(5, 40)
            live.append(run.cluster.add_node(env={"MESH_FAULTS": f"snapshot.writing={k}"}))
            run.note(f"started {live[-1].name} (dies in snapshot write {k})")
        faults.append(fault)
    final = await run.wait_final(timeout_s=600)
    return {"faults": faults, "final_state": final["state"], "attempts": final["attempt"] + 1}


def soak(rounds: int, seed: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        job = SeqJob(
            n=6000 + 2000 * rounds, rate=4000, poison=POISON, on_error="dead_letter", restarts=100
        )
        run = ChaosRun(Path(tmp), job, nodes=3, seed=seed)
        try:
            run.start()
            summary = anyio.run(_soak, run, rounds)
        except BaseException:
            for t, what in run.events:
                sys.stderr.write(f"{t - run.events[0][0]:8.2f}s  {what}\n")
            raise
        finally:
            run.stop()
        skipped = frozenset(tuple(map(int, p.split(":"))) for p in POISON.split(","))
        verdict = run.verdict(skipped=skipped)  # type: ignore[arg-type]
        letters = sorted((d["record"]["key"], d["record"]["seq"]) for d in verdict.dead_letters)
        return {
            "seed": seed,
            **summary,
            "output": verdict.as_dict(),
            "dead_letters_exact": letters == sorted(skipped),
            "exact": verdict.exact and letters == sorted(skipped),
            "events": [(round(t - run.events[0][0], 2), what) for t, what in run.events],
        }


# -- W2 with a node killed midway ---------------------------------------------------------------


async def _w2_timeline(address: str, kill: Any) -> dict[str, Any]:
    """Run W2 to its end, sampling the sources' records every 250 ms; ``kill`` is called
    once half the input was read (or never, if None)."""
    async with open_client(address) as client:
        job_id = await client.submit(prepare_submission(JOBS / "w2.py", base_dir=ROOT))
        started = time.monotonic()
        samples: list[tuple[float, int, int]] = []  # (s, records read, attempt)
        killed_at = None
        while True:
            status = await client.status(job_id)
            read = sum(
                st["records_in"] for st in status["tasks"][0]["subtasks"] if st["state"] != "LOST"
            )
            now = time.monotonic() - started
            samples.append((now, read, status["attempt"]))
            if kill is not None and killed_at is None and read >= 2_500_000:
                kill(status)
                killed_at = now
            if status["state"] in ("FINISHED", "FAILED", "CANCELED"):
                break
            await anyio.sleep(0.25)
    assert status["state"] == "FINISHED", status["error"]
    return {"seconds": round(now, 2), "killed_at_s": killed_at, "samples": samples}


def _per_second(samples: list[tuple[float, int, int]]) -> list[int]:
    """Records read per wall-clock second, replays included (a new attempt counts from 0
    again, from the checkpoint's position)."""
    rates: list[int] = []
    previous, attempt_seen, acc, next_second = 0, 0, 0, 1.0
    for t, read, attempt in samples:
        while t >= next_second:
            rates.append(acc)
            acc, next_second = 0, next_second + 1.0
        acc += max(0, read - previous if attempt == attempt_seen else read)
        previous, attempt_seen = read, attempt
    return rates


def w2_dip() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        _env(
            {
                "MESH_BENCH_DATA": _data_x5(),
                "MESH_BENCH_OUT": f"{tmp}/out",
                "MESH_BENCH_INTERVAL": "1s",
            }
        )
        results = {}
        for label in ("undisturbed", "node_killed"):
            with LocalCluster(nodes=3, slots=1, state_dir=Path(tmp) / label) as cluster:

                def kill(status: dict[str, Any], cluster: LocalCluster = cluster) -> None:
                    used = {st["node"] for t in status["tasks"] for st in t["subtasks"]}
                    victim = next(n for n in cluster.nodes if n.name in used)
                    cluster.kill(victim)

                results[label] = anyio.run(
                    _w2_timeline, cluster.address, kill if label == "node_killed" else None
                )
    base, hit = results["undisturbed"], results["node_killed"]
    rates_base, rates_hit = _per_second(base["samples"]), _per_second(hit["samples"])
    steady = statistics.median(rates_base[1:-1]) if len(rates_base) > 2 else 0
    killed_at = hit["killed_at_s"] or 0
    after = rates_hit[int(killed_at) + 1 :]
    zero_seconds = sum(1 for r in after if r == 0)
    stalled = next((i for i, r in enumerate(after) if r == 0), len(after))
    back = next((i for i, r in enumerate(after) if r > 0 and i > stalled), None)
    return {
        "records": 5_000_000,
        "undisturbed_s": base["seconds"],
        "node_killed_s": hit["seconds"],
        "time_lost_s": round(hit["seconds"] - base["seconds"], 2),
        "killed_at_s": killed_at,
        "steady_records_per_s": round(steady),
        "seconds_without_progress": zero_seconds,
        "catch_up_records_per_s": round(statistics.median(after[back : back + 3]))
        if back is not None and after[back:]
        else None,
        "per_second_undisturbed": rates_base,
        "per_second_node_killed": rates_hit,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=["recovery", "soak", "w2"], action="append")
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    only = args.only or ["recovery", "soak", "w2"]
    report: dict[str, Any] = {}
    if "recovery" in only:
        report["recovery"] = recovery(args.samples)
    if "soak" in only:
        report["soak"] = soak(args.rounds, args.seed)
    if "w2" in only:
        report["w2_node_killed"] = w2_dip()
    sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")


if __name__ == "__main__":
    main()

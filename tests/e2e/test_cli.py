"""The ``mesh`` command line as a user drives it: separate daemons, then client commands."""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from mesh.systemd import NotifyListener
from tests.helpers import poll_until_sync, read_parts, status_summary

ROOT = Path(__file__).resolve().parents[2]


class Daemons:
    """Daemons started with the CLI; all are killed at teardown."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.listener = NotifyListener()
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str) -> dict[str, str]:
        env = {**os.environ, "NOTIFY_SOCKET": self.listener.path}
        env.pop("MESH_COORDINATOR", None)
        log = open(self.workdir / f"daemon-{len(self.processes)}.log", "wb")  # noqa: SIM115
        process = subprocess.Popen(
            [sys.executable, "-m", "mesh", *args],
            cwd=self.workdir,
            env=env,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        log.close()
        self.processes.append(process)

        def ready() -> dict[str, str] | None:
            assert process.poll() is None, f"mesh {args[0]} exited: {process.returncode}"
            readable, _, _ = select.select([self.listener], [], [], 0.2)  # waits for a message
            if readable:
                fields = self.listener.receive(0)
                if fields and fields.get("MAINPID") == str(process.pid):
                    return fields
            return None

        fields: dict[str, str] = poll_until_sync(
            ready, timeout_s=30, interval_s=0, what=f"mesh {args[0]} to report ready"
        )
        return fields

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.listener.close()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A directory with the examples, as a user's checkout would have them."""
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    return tmp_path


@pytest.fixture
def daemons(workdir: Path) -> Iterator[Daemons]:
    group = Daemons(workdir)
    yield group
    group.stop()


def mesh(workdir: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 60):
    return subprocess.run(
        [sys.executable, "-m", "mesh", *args],
        cwd=workdir,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def cli_status(workdir: Path, address: str, job_id: str) -> dict:
    result = mesh(workdir, "status", job_id, "--json", "--coordinator", address)
    assert result.returncode == 0, result.stderr
    return orjson.loads(result.stdout)


def wait_state(workdir: Path, address: str, job_id: str, states: tuple[str, ...]) -> dict:
    return poll_until_sync(
        lambda: cli_status(workdir, address, job_id),
        until=lambda status: status["state"] in states,
        timeout_s=60,
        what=f"job {job_id} in one of {states}",
        show=status_summary,
    )


def processes_mentioning(state_dir: str) -> list[int]:
    """Pids of the daemons of the cluster in ``state_dir``: whatever started them (a new
    interpreter each, or forked by ``mesh run``'s launcher), their stderr is a log file
    in ``state_dir/logs`` (from /proc)."""
    logs = os.path.realpath(Path(state_dir) / "logs") + os.sep
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stderr = os.readlink(entry / "fd" / "2")
            except OSError:
                continue
            if stderr.startswith(logs):
                found.append(int(entry.name))
    return found


UNBOUNDED = """
from mesh import Job, sinks, sources

job = Job("ticker", parallelism=2)
ticks = job.source(sources.Generator(lambda i: {"i": i}, rate=500))
ticks.rebalance().map(lambda r: r).sink(sinks.JsonLines("out/ticker"))
"""


@pytest.mark.slow
def test_separate_daemons_submit_list_status_cancel(workdir: Path, daemons: Daemons) -> None:
    coordinator = daemons.start(
        "coordinator", "--bind", "tcp://127.0.0.1:0", "--state-dir", str(workdir / "c")
    )
    address = coordinator["MESH_ENDPOINT"]
    for n in (1, 2):
        daemons.start(
            "node", "--coordinator", address, "--slots", "2", "--state-dir", str(workdir / f"n{n}")
        )

    # submit prints the job id on its last line
    submitted = mesh(workdir, "submit", "examples/wordcount.py", "--coordinator", address)
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip().splitlines()[-1]
    assert len(job_id) == 16

    status = wait_state(workdir, address, job_id, ("FINISHED",))
    placement = [(s["node"], s["slot"]) for t in status["tasks"] for s in t["subtasks"]]
    assert len(placement) == 4 and len({n for n, _ in placement}) == 2
    counts = read_parts(workdir / "out" / "wordcount")
    assert status["totals"]["records_out"] == len(counts) > 0

    listed = mesh(workdir, "list", env={"MESH_COORDINATOR": address})  # address from env
    assert listed.returncode == 0, listed.stderr
    assert job_id in listed.stdout and "wordcount" in listed.stdout and "FINISHED" in listed.stdout

    shown = mesh(workdir, "status", job_id[:6], "--coordinator", address)  # a prefix is enough
    assert shown.returncode == 0, shown.stderr
    assert "placement:" in shown.stdout and "slots: needs 2 (default 2)" in shown.stdout
    rows = [line.split() for line in shown.stdout.splitlines()]
    for node, slot in placement:  # every subtask's row shows its node and slot
        assert any(node in row and str(slot) in row for row in rows)
    assert f"{status['tasks'][0]['subtasks'][0]['records_out']:,}" in shown.stdout

    # an unbounded job runs until cancelled; cancel frees its slots
    (workdir / "ticker.py").write_text(UNBOUNDED)
    submitted = mesh(workdir, "submit", "ticker.py", "--coordinator", address)
    ticker = submitted.stdout.strip().splitlines()[-1]
    wait_state(workdir, address, ticker, ("RUNNING",))
    nodes = orjson.loads(mesh(workdir, "nodes", "--json", "--coordinator", address).stdout)
    assert sum(n["free"] for n in nodes) == 2
    cancelled = mesh(workdir, "cancel", ticker, "--coordinator", address)
    assert cancelled.returncode == 0, cancelled.stderr
    assert "CANCELED" in cancelled.stdout
    nodes = orjson.loads(mesh(workdir, "nodes", "--json", "--coordinator", address).stdout)
    assert [n["free"] for n in nodes] == [2, 2]
    assert list((workdir / "out" / "ticker").glob("part-*.jsonl"))  # output kept on cancel


def test_client_errors_and_exit_codes(workdir: Path, daemons: Daemons) -> None:
    coordinator = daemons.start(
        "coordinator", "--bind", "tcp://127.0.0.1:0", "--state-dir", str(workdir / "c")
    )
    address = coordinator["MESH_ENDPOINT"]

    missing = mesh(workdir, "status", "feedbeef", "--coordinator", address)
    assert missing.returncode == 1 and "no job 'feedbeef'" in missing.stderr

    no_file = mesh(workdir, "submit", "nope.py", "--coordinator", address)
    assert no_file.returncode == 2 and "job file not found" in no_file.stderr

    # Too few slots: accepted, and the job waits (saying why) until it is cancelled.
    no_slots = mesh(workdir, "submit", "examples/wordcount.py", "--coordinator", address)
    assert no_slots.returncode == 0, no_slots.stderr
    waiting_id = no_slots.stdout.strip().splitlines()[-1]
    assert f"job {waiting_id} waits for slots: job needs 2 slot(s)" in no_slots.stderr
    assert "no nodes are registered" in no_slots.stderr
    shown = mesh(workdir, "status", waiting_id, "--coordinator", address)
    assert "SCHEDULING" in shown.stdout and "waiting for slots: job needs 2" in shown.stdout
    cancelled = mesh(workdir, "cancel", waiting_id, "--coordinator", address)
    assert cancelled.returncode == 0 and "CANCELED" in cancelled.stdout

    too_small = mesh(workdir, "run", "examples/wordcount.py", "--nodes", "1", "--slots", "1")
    assert too_small.returncode == 2
    assert "job needs 2 slot(s) (default: 2) but --nodes 1 x --slots 1 gives 1" in too_small.stderr

    bad_slots = mesh(workdir, "node", "--coordinator", address, "--slots", "0")
    assert bad_slots.returncode == 2
    assert "slots = 0 (from --slots) is not allowed: expected an integer >= 1" in bad_slots.stderr

    bad_env = mesh(workdir, "node", env={"MESH_COORDINATOR": "localhost:5550"})
    assert bad_env.returncode == 2 and "MESH_COORDINATOR" in bad_env.stderr

    (workdir / "bad.toml").write_text("slot = 3\n")
    bad_file = mesh(workdir, "node", "--config", "bad.toml")
    assert bad_file.returncode == 2 and "unknown key 'slot'" in bad_file.stderr

    nobody = mesh(workdir, "list", "--coordinator", "tcp://127.0.0.1:9")
    assert nobody.returncode == 1
    assert "cannot reach the coordinator at tcp://127.0.0.1:9" in nobody.stderr


def test_run_exit_codes_and_cleanup(workdir: Path) -> None:
    ok = mesh(
        workdir, "run", "examples/wordcount.py", "--nodes", "2", "--parallelism", "2",
        "--state-dir", "ok-state",
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert "FINISHED" in ok.stderr and "results:" in ok.stderr
    assert processes_mentioning(str(workdir / "ok-state")) == []
    assert (workdir / "ok-state" / "logs" / "node-2.log").exists()

    (workdir / "fail.py").write_text(
        "from mesh import Job, sinks, sources\n"
        "job = Job('boom')\n"
        "job.source(sources.Collection([1, 0])).map(lambda x: 1 / x).sink(sinks.Collect())\n"
    )
    failed = mesh(workdir, "run", "fail.py", "--nodes", "1", "--state-dir", "failed-state")
    assert failed.returncode == 1
    assert "ZeroDivisionError" in failed.stderr and "on record 0" in failed.stderr
    assert processes_mentioning(str(workdir / "failed-state")) == []

    (workdir / "broken.py").write_text("import no_such_module\n")
    broken = mesh(workdir, "run", "broken.py")
    assert broken.returncode == 2 and "No module named 'no_such_module'" in broken.stderr


def test_run_in_batch_mode_from_the_command_line(workdir: Path) -> None:
    """``mesh run --mode batch``: each word's final count once; an unbounded source is
    refused in one line, exit 2."""
    batch = mesh(workdir, "run", "examples/wordcount.py", "--mode", "batch", "--quiet")
    assert batch.returncode == 0, batch.stderr
    counts = read_parts(workdir / "out" / "wordcount")
    words = [r["key"] for r in counts]
    assert words and len(words) == len(set(words))  # one final count per word
    shutil.rmtree(workdir / "out")
    streaming = mesh(workdir, "run", "examples/wordcount.py", "--quiet")
    assert streaming.returncode == 0, streaming.stderr
    last: dict[str, int] = {}
    for record in read_parts(workdir / "out" / "wordcount"):  # running counts
        last[record["key"]] = max(last.get(record["key"], 0), record["count"])
    assert {r["key"]: r["count"] for r in counts} == last

    (workdir / "ticks.py").write_text(
        "from mesh import Job, sinks, sources\n"
        "job = Job('ticks')\n"
        "job.source(sources.Generator(lambda i: i)).sink(sinks.Print())\n"
    )
    refused = mesh(workdir, "run", "ticks.py", "--mode", "batch")
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        "error: batch mode needs bounded sources: source 'Source: Generator' (Generator) is "
        "unbounded; run it in streaming mode"
    ]


def test_run_ctrl_c_cancels_and_leaves_no_processes(workdir: Path) -> None:
    (workdir / "ticker.py").write_text(UNBOUNDED)
    with subprocess.Popen(
        [sys.executable, "-m", "mesh", "run", "ticker.py", "--nodes", "2", "--state-dir", "st"],
        cwd=workdir,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        try:
            seen = ""

            def read_line() -> bool:
                nonlocal seen
                line = process.stderr.readline()  # type: ignore[union-attr]
                assert line, f"mesh run ended early: {seen}"
                seen += line
                return "RUNNING" in seen

            poll_until_sync(
                read_line,
                timeout_s=60,
                interval_s=0,
                what="mesh run to show RUNNING",
                show=lambda _: repr(seen[-500:]),
            )
            children = processes_mentioning(str(workdir / "st"))
            assert len(children) == 3  # a coordinator and two nodes
            process.send_signal(signal.SIGINT)
            assert process.wait(30) == 130
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    for pid in children:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


COUNTS = """
from mesh import Job, sinks, sources

job = Job("counts", parallelism=2, checkpoint_interval="200ms")
(
    job.source(sources.Generator(lambda i: {"k": i % 7}, count=40000, rate=4000)).uid("gen")
    .key_by(lambda r: r["k"]).count().uid("count")
    .sink(sinks.JsonLines("out/counts")).uid("sink")
)
"""


@pytest.mark.slow
def test_savepoint_cancel_resume_and_checkpoint_listing(workdir: Path, daemons: Daemons) -> None:
    coordinator = daemons.start(
        "coordinator", "--bind", "tcp://127.0.0.1:0", "--state-dir", str(workdir / "c")
    )
    address = coordinator["MESH_ENDPOINT"]
    for n in (1, 2):
        daemons.start(
            "node", "--coordinator", address, "--slots", "3", "--state-dir", str(workdir / f"n{n}")
        )
    (workdir / "counts.py").write_text(COUNTS)
    job_id = mesh(workdir, "submit", "counts.py", "--coordinator", address).stdout.split()[-1]
    poll_until_sync(
        lambda: orjson.loads(
            mesh(workdir, "status", job_id, "--json", "--coordinator", address).stdout
        ),
        until=lambda status: (status["checkpoints"] or {}).get("completed", 0) >= 2,
        timeout_s=30,
        what=f"2 completed checkpoints of job {job_id}",
        show=status_summary,
    )
    listing = mesh(workdir, "checkpoints", job_id, "--coordinator", address)
    assert listing.returncode == 0, listing.stderr
    assert "COMPLETED" in listing.stdout and "chk-" in listing.stdout
    shown = mesh(workdir, "status", job_id, "--coordinator", address).stdout
    assert "checkpoints: every 200ms" in shown

    taken = mesh(workdir, "savepoint", job_id, "--dir", "sp", "--coordinator", address)
    assert taken.returncode == 0, taken.stderr
    first = Path(taken.stdout.strip().splitlines()[-1])
    assert first.parent == workdir / "sp" and (first / "_metadata.json").exists()

    stopped = mesh(
        workdir, "cancel", job_id, "--savepoint", "--dir", "sp", "--coordinator", address
    )
    assert stopped.returncode == 0, stopped.stderr
    lines = stopped.stdout.strip().splitlines()
    assert lines[0] == f"job {job_id} CANCELED"
    savepoint = Path(lines[-1])
    assert (savepoint / "_metadata.json").exists()

    resumed = mesh(
        workdir, "submit", "counts.py", "--from-savepoint", str(savepoint),
        "--parallelism", "3", "--coordinator", address,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    second = resumed.stdout.split()[-1]
    final = wait_state(workdir, address, second, ("FINISHED",))
    assert final["restored_from"] == str(savepoint)
    counts = read_parts(workdir / "out" / "counts")
    per_key: dict[int, list[int]] = {}
    for record in counts:
        per_key.setdefault(record["key"], []).append(record["count"])
    # exactly once: every key counted 1..n with no gap and no repeat
    assert sorted(per_key) == list(range(7))
    for k, seen in per_key.items():
        n = len(range(k, 40000, 7))
        assert sorted(seen) == list(range(1, n + 1)), k

    bad = mesh(
        workdir, "submit", "counts.py", "--from-savepoint", "nowhere", "--coordinator", address
    )
    assert bad.returncode == 2 and "nowhere does not exist" in bad.stderr
    (workdir / "empty").mkdir()
    empty = mesh(
        workdir, "submit", "counts.py", "--from-savepoint", "empty", "--coordinator", address
    )
    assert empty.returncode == 1 and "no usable checkpoint" in empty.stderr

"""The dashboard in a real browser, on real daemons: the graph of a running 2-node job
(every task, its parallelism, rising rates), a task's subtasks and a live peek, every
page (with a screenshot of each, kept as test artifacts), the backpressure cause of a
job whose sink stalls, and cancel-with-savepoint from the page resumed by ``mesh submit
--from-savepoint``."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
from playwright.sync_api import expect

from tests.browser.conftest import PageWithConsole
from tests.helpers import poll_until_sync
from tests.web import ServedJob, http, serving_cluster

pytestmark = pytest.mark.slow

TIMEOUT_MS = 30_000

STALLED_SINK_JOB = """
    from mesh import Job, sinks, sources

    job = Job("stalled-sink", parallelism=2, buffer_timeout="5ms")
    (
        job.source(sources.Generator(lambda i: {{"i": i, "pad": "x" * 200}}))
        .name("events")
        .rebalance()
        .map(lambda r: r)
        .name("enrich")
        .sink(sinks.ZmqPush("{endpoint}", high_water_mark=10))
        .name("push")
    )
"""

#: A job whose map cannot keep up with its source: the checkpoint barriers always wait
#: behind queued records.
BACKPRESSURED_JOB = """
    import time

    from mesh import Job, RestartStrategy, sinks, sources

    def slow(event):
        time.sleep(0.002)
        return event

    job = Job(
        "backpressured",
        parallelism=2,
        checkpoint_interval="500ms",
        restart=RestartStrategy.fixed_delay(attempts=3, delay="100ms"),
    )
    (
        job.source(sources.Generator(lambda i: {{"user": i % 7, "n": i}}, rate=2000))
        .uid("events")
        .rebalance()
        .map(slow)
        .uid("slow")
        .key_by(lambda e: e["user"])
        .sum("n")
        .uid("sum")
        .sink(sinks.JsonLines("{out}"))
        .uid("out")
    )
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedJob]:
    with serving_cluster(tmp_path_factory.mktemp("dashboard")) as served:
        yield served


def open_job(page: Any, served: ServedJob, tab: str = "graph") -> None:
    page.goto(f"{served.base}/#/jobs/{served.job_id}/{tab}")
    page.wait_for_selector(f'[data-page="job"][data-job-id="{served.job_id}"]', timeout=TIMEOUT_MS)


def out_rates(page: Any) -> dict[str, float]:
    """Each task's records/s out, as the graph shows them now."""
    return page.eval_on_selector_all(
        "g[data-task]",
        """nodes => Object.fromEntries(nodes.map(n => [n.dataset.task,
            Number(n.querySelector('[data-rate-out]').dataset.value || 0)]))""",
    )


def test_the_graph_shows_every_task_with_its_parallelism_and_rising_rates(
    page: PageWithConsole, served: ServedJob, artifacts: Path
) -> None:
    p = page.page
    open_job(p, served)
    expect(p.locator("g[data-task]")).to_have_count(2, timeout=TIMEOUT_MS)
    shown = p.eval_on_selector_all(
        "g[data-task]",
        """nodes => nodes.map(n => [n.dataset.task, n.getAttribute('aria-label'),
            n.querySelector('.task-par').textContent])""",
    )
    api = http(served.base, f"/api/v1/jobs/{served.job_id}/graph").body
    assert sorted(shown) == sorted(
        [str(t["id"]), f"task {t['name']}", f"p={t['parallelism']}"] for t in api["tasks"]
    )
    assert [p for _, _, p in shown] == ["p=2", "p=2"]
    # Records/s as the page refreshes: above zero, and following the job's own figures.
    first = out_rates(p)
    rates = poll_until_sync(
        lambda: out_rates(p),
        until=lambda r: all(v > 500 for v in r.values()) and r != first,
        timeout_s=30,
        what="the page's records/s to rise past 500/s on every task",
    )
    assert all(v < 5000 for v in rates.values()), rates  # the job makes 2,000/s
    p.screenshot(path=str(artifacts / "job-graph.png"), full_page=True)


def test_a_task_panel_lists_its_subtasks_and_peeks_at_live_records(
    page: PageWithConsole, served: ServedJob, artifacts: Path
) -> None:
    p = page.page
    open_job(p, served)
    p.wait_for_selector('g[data-task="0"]', timeout=TIMEOUT_MS)
    p.click('g[data-task="0"]')
    expect(p.locator("[data-task-panel] tr[data-subtask]")).to_have_count(2, timeout=TIMEOUT_MS)
    rows = p.eval_on_selector_all(
        "[data-task-panel] tr[data-subtask]", "rows => rows.map(r => r.dataset.subtask)"
    )
    assert rows == ["0.0", "0.1"]
    p.click("[data-peek-start]")
    expect(p.locator("[data-peek-records] li").nth(2)).to_be_attached(timeout=TIMEOUT_MS)
    texts = p.eval_on_selector_all(
        "[data-peek-records] li", "items => items.map(i => i.textContent)"
    )
    # The source task emits {"user", "n", "double"} records.
    assert any('"double"' in text and '"user"' in text for text in texts), texts[:3]
    p.screenshot(path=str(artifacts / "task-panel-peek.png"), full_page=True)
    p.click("[data-peek-stop]")


@pytest.mark.parametrize("tab", ["checkpoints", "failovers", "watermarks"])
def test_each_job_tab(page: PageWithConsole, served: ServedJob, artifacts: Path, tab: str) -> None:
    p = page.page
    open_job(p, served, tab)
    p.wait_for_selector(f'[data-tab="{tab}"][aria-selected="true"]', timeout=TIMEOUT_MS)
    if tab == "checkpoints":
        p.wait_for_selector("tr[data-checkpoint]", timeout=TIMEOUT_MS)
        ids = p.eval_on_selector_all(
            "tr[data-checkpoint]", "rows => rows.map(r => r.dataset.checkpoint)"
        )
        history = http(served.base, f"/api/v1/jobs/{served.job_id}/checkpoints").body["history"]
        assert {str(r["checkpoint_id"]) for r in history} & set(ids)
    if tab == "watermarks":
        p.wait_for_selector("tr[data-subtask]", timeout=TIMEOUT_MS)
    p.screenshot(path=str(artifacts / f"job-{tab}.png"), full_page=True)


def test_the_jobs_and_nodes_pages(
    page: PageWithConsole, served: ServedJob, artifacts: Path
) -> None:
    p = page.page
    p.goto(f"{served.base}/#/jobs")
    p.wait_for_selector(f'tr[data-job-id="{served.job_id}"]', timeout=TIMEOUT_MS)
    row = p.text_content(f'tr[data-job-id="{served.job_id}"]') or ""
    assert "dashboard-demo" in row and "RUNNING" in row
    p.screenshot(path=str(artifacts / "jobs.png"), full_page=True)
    p.goto(f"{served.base}/#/nodes")
    expect(p.locator("[data-node]")).to_have_count(2, timeout=TIMEOUT_MS)
    # Slot sharing: each used slot holds a subtask of each of the job's two tasks.
    expect(p.locator("[data-slot] .slot-subs li")).to_have_count(4, timeout=TIMEOUT_MS)
    p.screenshot(path=str(artifacts / "nodes.png"), full_page=True)


def test_a_stalled_sink_is_marked_as_the_backpressure_cause(
    page: PageWithConsole, tmp_path: Path, artifacts: Path
) -> None:
    context = zmq.Context()
    outside = context.socket(zmq.PULL)  # takes a few records, then never reads again
    outside.setsockopt(zmq.RCVHWM, 10)
    outside.setsockopt(zmq.LINGER, 0)
    port = outside.bind_to_random_port("tcp://127.0.0.1")
    source = STALLED_SINK_JOB.format(endpoint=f"tcp://127.0.0.1:{port}")
    env = {"MESH_HEARTBEAT_INTERVAL": "200ms"}
    try:
        with serving_cluster(tmp_path, job_source=source, env=env) as served:
            graph = http(served.base, f"/api/v1/jobs/{served.job_id}/graph").body
            sink_task = next(t["id"] for t in graph["tasks"] if "push" in t["name"])
            source_task = next(t["id"] for t in graph["tasks"] if "events" in t["name"])
            p = page.page
            open_job(p, served)
            p.wait_for_selector(
                f'g[data-task="{sink_task}"][data-bottleneck="true"]', timeout=TIMEOUT_MS
            )
            marked = p.eval_on_selector_all(
                'g[data-bottleneck="true"]', "nodes => nodes.map(n => n.dataset.task)"
            )
            assert marked == [str(sink_task)]
            assert "lvl-high" in (p.get_attribute(f'g[data-task="{source_task}"]', "class") or "")
            banner = p.text_content("[data-bottleneck-banner]") or ""
            # Named for its waiting input or, once its destination's buffer is full, for
            # waiting on the destination itself: the same task either way.
            assert "enrich -> push" in banner, banner
            assert "input is backpressured" in banner or "not keeping up" in banner, banner
            p.screenshot(path=str(artifacts / "backpressure-cause.png"), full_page=True)
            page.leave()
    finally:
        outside.close()
        context.term()


def test_cancel_with_savepoint_from_the_page_then_resume_it(
    page: PageWithConsole, tmp_path: Path, artifacts: Path
) -> None:
    with serving_cluster(tmp_path) as served:
        p = page.page
        open_job(p, served)
        p.click('button[data-action="cancel-savepoint"]')
        p.click("dialog[open] button[data-confirm]")
        p.wait_for_selector("[data-savepoint-path]", timeout=60_000)
        path = (p.text_content("[data-savepoint-path]") or "").strip()
        assert Path(path, "_metadata.json").exists(), path
        p.screenshot(path=str(artifacts / "cancel-with-savepoint.png"), full_page=True)
        poll_until_sync(
            lambda: http(served.base, f"/api/v1/jobs/{served.job_id}").body["state"],
            until=lambda s: s == "CANCELED",
            timeout_s=30,
            what="the job to be cancelled",
        )
        submitted = subprocess.run(
            [
                sys.executable,
                "-m",
                "mesh",
                "submit",
                str(served.job_file),
                "--coordinator",
                served.cluster.address,
                "--from-savepoint",
                path,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
        assert submitted.returncode == 0, submitted.stderr
        jobs = http(served.base, "/api/v1/jobs").body["jobs"]
        resumed = next(j for j in jobs if j["job_id"] != served.job_id)
        detail = poll_until_sync(
            lambda: http(served.base, f"/api/v1/jobs/{resumed['job_id']}").body,
            until=lambda d: d["state"] == "RUNNING",
            timeout_s=30,
            what="the resumed job to run",
        )
        assert detail["restored_from"] == path
        page.leave()


def test_failovers_show_failed_checkpoints_and_the_failover_they_caused(
    page: PageWithConsole, tmp_path: Path, artifacts: Path
) -> None:
    """Checkpoints that time out: each failed one is on the timeline, and so is the
    failover that too many of them in a row caused."""
    # The map cannot keep up with the source, so the records queued before each barrier
    # hold it for longer than the coordinator's tick: every checkpoint outlasts its 1 ms,
    # whatever the machine's speed.
    env = {"MESH_CHECKPOINT_TIMEOUT": "1ms", "MESH_TOLERABLE_CHECKPOINT_FAILURES": "2"}
    source = BACKPRESSURED_JOB.format(out=tmp_path / "out")
    with serving_cluster(tmp_path, job_source=source, env=env) as served:
        p = page.page
        open_job(p, served, "failovers")
        expect(p.locator('[data-failure-attempt="0"]')).to_be_attached(timeout=TIMEOUT_MS)
        failover = p.text_content('[data-failure-attempt="0"]') or ""
        assert "checkpoints" in failover and "in a row failed" in failover, failover
        expect(p.locator("[data-checkpoint-failure]").nth(2)).to_be_attached(timeout=TIMEOUT_MS)
        shown = p.eval_on_selector_all(
            "[data-checkpoint-failure]",
            "items => items.map(i => [i.dataset.checkpointFailure, i.textContent])",
        )
        for checkpoint, text in shown:
            assert f"checkpoint {checkpoint} failed: " in text, text
        assert any("failed: expired after 1 ms" in text for _, text in shown), shown
        p.screenshot(path=str(artifacts / "job-failovers-checkpoints.png"), full_page=True)
        page.leave()

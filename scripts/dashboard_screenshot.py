"""Take the README's screenshot of the dashboard: a demo job on a local cluster, its
graph in headless chromium (Debian's, through Playwright), saved as
docs/images/dashboard-graph.png.

    .venv/bin/python scripts/dashboard_screenshot.py [--seconds 20] [--out PATH]
"""

from __future__ import annotations

import argparse
import tempfile
import textwrap
import threading
from pathlib import Path

import anyio
import zmq

from mesh.client.client import open_client, prepare_submission
from mesh.client.local_cluster import LocalCluster

ROOT = Path(__file__).resolve().parent.parent

DEMO = """
    import time

    from mesh import Job, WatermarkStrategy, sinks, sources, windows


    def event(i):
        return {"user": f"u{i % 40}", "kind": "click" if i % 4 else "view",
                "amount": i % 97, "ts": int(time.time() * 1000), "page": "/" + "p" * 500}


    def enrich(e):
        return {**e, "segment": "a" if e["amount"] % 2 else "b"}


    job = Job("clickstream", parallelism=2, checkpoint_interval="2s")
    events = job.source(
        sources.Generator(event, rate=2000),
        watermarks=WatermarkStrategy.bounded("1s", timestamp=lambda e: e["ts"]),
    ).uid("events").name("events")
    clicks = events.filter(lambda e: e["kind"] == "click").uid("clicks").name("clicks")
    enriched = clicks.rebalance().map(enrich).uid("enrich").name("enrich")
    per_user = (
        enriched.key_by(lambda e: e["user"]).window(windows.Tumbling("5s")).count()
        .uid("per-user").name("clicks per user")
    )
    per_user.sink(sinks.JsonLines("{out}/per-user")).uid("per-user-out").name("per-user files")
    (
        events.key_by(lambda e: e["kind"]).sum("amount").uid("totals").name("totals")
        .sink(sinks.ZmqPush("{dashboard}", high_water_mark=100)).uid("totals-out")
        .name("totals to the wallboard")
    )
"""
# The "wallboard" reading the totals: slower than they come, so the totals' sink waits
# for it and the source behind it is backpressured.
_WALLBOARD_PER_S = 1200


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="let the job run this long")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "docs" / "images" / "dashboard-graph.png"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="mesh-shot-") as tmp:
        work = Path(tmp)
        job_file = work / "clickstream.py"
        context = zmq.Context()
        wallboard = context.socket(zmq.PULL)
        wallboard.setsockopt(zmq.RCVHWM, 100)
        wallboard.setsockopt(zmq.LINGER, 0)
        port = wallboard.bind_to_random_port("tcp://127.0.0.1")
        stop = threading.Event()

        def read_slowly() -> None:
            while not stop.wait(1 / _WALLBOARD_PER_S):
                if wallboard.poll(0):
                    wallboard.recv()

        reader = threading.Thread(target=read_slowly, daemon=True)
        reader.start()
        source = textwrap.dedent(DEMO).replace("{out}", str(work / "out"))
        job_file.write_text(source.replace("{dashboard}", f"tcp://127.0.0.1:{port}"))
        try:
            _shoot(work, job_file, args.seconds, args.out)
        finally:
            stop.set()
            reader.join()
            wallboard.close()
            context.term()
    print(args.out)


def _shoot(work: Path, job_file: Path, seconds: float, out: Path) -> None:
    from playwright.sync_api import sync_playwright

    http = ["--http", "127.0.0.1:0"]
    with LocalCluster(
        nodes=2, slots=2, state_dir=work / "cluster", coordinator_args=http
    ) as cluster:

        async def submit() -> str:
            async with open_client(cluster.address) as client:
                return await client.submit(prepare_submission(job_file, base_dir=work))

        job_id = anyio.run(submit)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path="/usr/bin/chromium",
                args=[
                    "--no-sandbox",
                    "--disable-background-networking",
                    "--disable-component-update",
                ],
            )
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                page.goto(f"{cluster.http_url}/#/jobs/{job_id}/graph")
                page.wait_for_selector("g[data-task]")
                page.wait_for_timeout(seconds * 1000)
                page.screenshot(path=str(out), full_page=True)
            finally:
                browser.close()


if __name__ == "__main__":
    main()

"""A real Prometheus as a subprocess for tests, scraping given targets on 127.0.0.1.

The binary comes from ``.ci/build-prometheus`` (cached under ``~/.cache/mesh-tools``) or
from ``$MESH_PROMETHEUS``. :func:`running_prometheus` writes a config that scrapes the
targets every second, stores in a temporary directory and listens only on 127.0.0.1 on a
port picked free (its only listener); :meth:`Prometheus.query` reads its HTTP API.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.jaeger import HOST, free_port
from tests.jaeger import _http as http
from tests.tools import cached_binary

PROMETHEUS_VERSION = "v0.316.0"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0

_CONFIG = """\
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: mesh
    static_configs:
      - targets: [{targets}]
"""


def prometheus_binary() -> Path | None:
    """``$MESH_PROMETHEUS`` if set, else the binary ``.ci/build-prometheus`` caches;
    ``None`` if that file is absent."""
    return cached_binary("MESH_PROMETHEUS", "prometheus", PROMETHEUS_VERSION)


@dataclass
class Prometheus:
    """A running Prometheus."""

    url: str
    log_path: Path
    process: subprocess.Popen[bytes]

    def query(self, expression: str) -> list[dict[str, Any]]:
        """The instant vector of ``expression``: [{"metric": labels, "value": [t, "v"]}]."""
        query = urllib.parse.urlencode({"query": expression})
        status, body = http("GET", f"{self.url}/api/v1/query?{query}")
        if status != 200:
            raise AssertionError(f"query {expression!r} answered {status}: {body[:300]!r}")
        return list(json.loads(body)["data"]["result"])

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as err:
            return f"(no prometheus log: {err})"
        return "prometheus log (tail):\n" + "\n".join(text.splitlines()[-lines:])


@contextmanager
def running_prometheus(
    tmp_path: Path, targets: list[str], binary: Path | None = None
) -> Iterator[Prometheus]:
    """Start Prometheus scraping ``targets`` ("127.0.0.1:PORT"), wait until it is ready,
    and stop it on exit, whatever the body did."""
    binary = binary or prometheus_binary()
    if binary is None:
        raise FileNotFoundError("no Prometheus binary: run .ci/build-prometheus")
    tmp_path.mkdir(parents=True, exist_ok=True)
    config = tmp_path / "prometheus.yml"
    config.write_text(_CONFIG.format(targets=", ".join(f'"{t}"' for t in targets)))
    port = free_port()
    log_path = tmp_path / "prometheus.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                str(binary),
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address={HOST}:{port}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
    try:
        running = Prometheus(url=f"http://{HOST}:{port}", log_path=log_path, process=process)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                status, _ = http("GET", f"{running.url}/-/ready")
            except OSError:
                status = 0
            if status == 200:
                break
            if process.poll() is not None or time.monotonic() >= deadline:
                raise RuntimeError(f"prometheus did not get ready\n{running.log_tail()}")
            time.sleep(0.05)
        yield running
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
        process.wait()

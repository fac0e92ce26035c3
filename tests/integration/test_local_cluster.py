"""LocalCluster starts the coordinator and its nodes together, on a port it picks; when
another process takes that port first, it starts again on another."""

from __future__ import annotations

import socket
from pathlib import Path

import anyio
import pytest

import mesh.client.local_cluster as local_cluster
from mesh.client.client import open_client
from mesh.client.local_cluster import LocalCluster


def test_a_taken_port_starts_the_cluster_again_on_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        picks = iter([taken])
        real_pick = local_cluster._free_port
        monkeypatch.setattr(local_cluster, "_free_port", lambda: next(picks, None) or real_pick())
        cluster = LocalCluster(nodes=2, slots=1, state_dir=tmp_path)
        try:
            cluster.start()

            async def nodes() -> list[dict[str, object]]:
                async with open_client(cluster.address) as client:
                    return await client.nodes()

            registered = anyio.run(nodes)
        finally:
            cluster.stop()

    assert cluster.address != f"tcp://127.0.0.1:{taken}"
    assert sorted(str(n["node_id"]) for n in registered) == ["node-1", "node-2"]
    first_try = (tmp_path / "logs" / "coordinator.log").read_text().lower()
    assert "address already in use" in first_try

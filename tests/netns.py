"""Several hosts on one machine: Linux network namespaces joined by a bridge.

``network_lab(["coord", "n1", "n2"])`` creates a namespace per host, each with one
interface (``eth0``, a veth pair) on a bridge that lives in a hub namespace of its own,
so nothing touches the machine's own network; host *i* gets 10.A.B.(i+1)/24 on a
subnet picked at random. Processes run inside a host with ``lab.popen(host, argv)``
(``ip netns exec``); ``lab.cut(host, other)`` drops traffic between two hosts (nftables
in ``host``'s namespace), ``lab.lose(host, percent)`` drops a share of what it sends,
and ``lab.heal(host)`` lets everything through again; ``lab.capture``
records the bridge with tcpdump. On exit every process started is killed and every
namespace removed, whatever the test did. Needs root, ``ip`` and (for cuts and
captures) ``nft`` and ``tcpdump``.
"""

from __future__ import annotations

import os
import random
import select
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest

__all__ = ["NetworkLab", "network_lab", "require_network_lab"]


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def require_network_lab(*tools: str) -> None:
    """Skip unless this process may create network namespaces and has ``tools``; under
    ``CI=true`` fail instead (CI must run these tests)."""
    missing = [t for t in ("ip", *tools) if shutil.which(t) is None]
    problem = None
    if os.geteuid() != 0:
        problem = "network namespaces need root"
    elif missing:
        problem = f"missing {', '.join(missing)} (Debian: iproute2, nftables, tcpdump)"
    if problem is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"multi-host tests cannot run: {problem}")
    pytest.skip(f"multi-host tests need network namespaces: {problem}")


@dataclass
class NetworkLab:
    """Hosts in namespaces on one bridge (see the module docstring)."""

    prefix: str
    hub: str
    subnet: str  # "10.A.B"
    hosts: dict[str, str] = field(default_factory=dict)  # host -> namespace
    addresses: dict[str, str] = field(default_factory=dict)  # host -> IPv4 address
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def namespace(self, host: str) -> str:
        """The namespace of ``host``."""
        return self.hosts[host]

    def popen(self, host: str, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        """Start ``argv`` inside ``host``; it is killed when the lab closes."""
        kwargs.setdefault("start_new_session", True)
        process = subprocess.Popen(["ip", "netns", "exec", self.hosts[host], *argv], **kwargs)
        self.processes.append(process)
        return process

    def run(
        self, host: str, argv: Sequence[str], timeout_s: float = 60, cwd: Path | None = None
    ) -> str:
        """Run ``argv`` inside ``host`` to completion; its stdout (raises on failure)."""
        done = subprocess.run(
            ["ip", "netns", "exec", self.hosts[host], *argv],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            cwd=cwd,
        )
        if done.returncode != 0:
            raise AssertionError(
                f"{' '.join(argv)} in {host} exited {done.returncode}: {done.stderr.strip()}"
            )
        return done.stdout

    def cut(self, host: str, other: str) -> None:
        """Drop every packet between ``host`` and ``other`` (both ways)."""
        ns, peer = self.hosts[host], self.addresses[other]
        rules = (
            "table inet meshcut {\n"
            " chain in { type filter hook input priority 0; }\n"
            " chain out { type filter hook output priority 0; }\n"
            "}\n"
            f"add rule inet meshcut in ip saddr {peer} drop\n"
            f"add rule inet meshcut out ip daddr {peer} drop\n"
        )
        subprocess.run(
            ["ip", "netns", "exec", ns, "nft", "-f", "-"],
            input=rules,
            check=True,
            capture_output=True,
            text=True,
        )

    def add_address(self, host: str, address: str) -> None:
        """Give ``host`` a second address on its interface (same subnet)."""
        _ip("-n", self.hosts[host], "addr", "add", f"{address}/24", "dev", "eth0")

    def lose(self, host: str, percent: int) -> None:
        """Drop ``percent`` % of the packets ``host`` sends, at random (nftables; this
        machine's kernel has no netem to add latency as well)."""
        rules = (
            "table inet meshloss {\n"
            " chain out { type filter hook output priority 0; "
            f"numgen random mod 100 < {percent} drop; }}\n"
            "}\n"
        )
        subprocess.run(
            ["ip", "netns", "exec", self.hosts[host], "nft", "-f", "-"],
            input=rules,
            check=True,
            capture_output=True,
            text=True,
        )

    def heal(self, host: str) -> None:
        """Undo every ``cut`` made in ``host``."""
        for table in ("meshcut", "meshloss"):
            subprocess.run(
                ["ip", "netns", "exec", self.hosts[host], "nft", "delete", "table", "inet", table],
                check=False,
                capture_output=True,
            )

    @contextmanager
    def capture(self, path: Path) -> Iterator[Path]:
        """Record every packet crossing the bridge into ``path`` (pcap) for the block."""
        # Frames forwarded between bridge ports never pass br0 itself: listen on every
        # port of the hub (each packet is seen on the way in and on the way out).
        # Immediate mode: packets still in the kernel's ring when tcpdump is stopped
        # would be lost otherwise.
        argv = ["tcpdump", "-i", "any", "--immediate-mode", "-U", "-w", str(path)]
        process = subprocess.Popen(
            ["ip", "netns", "exec", self.hub, *argv],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            _wait_for_listening(process)
            yield path
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if process.stderr is not None:
                process.stderr.close()

    def close(self) -> None:
        """Kill what was started and remove the namespaces."""
        for process in self.processes:
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        for ns in [*self.hosts.values(), self.hub]:
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)


def _wait_for_listening(process: subprocess.Popen[bytes], timeout_s: float = 10) -> None:
    """tcpdump says "listening on" on stderr once it captures."""
    assert process.stderr is not None
    stream: IO[bytes] = process.stderr
    deadline = time.monotonic() + timeout_s
    seen = b""
    while b"listening on" not in seen:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"tcpdump did not start: {seen.decode(errors='replace')}")
        readable, _, _ = select.select([stream], [], [], remaining)
        if readable:
            chunk = os.read(stream.fileno(), 4096)
            if not chunk:
                raise AssertionError(f"tcpdump exited: {seen.decode(errors='replace')}")
            seen += chunk


@contextmanager
def network_lab(hosts: Sequence[str]) -> Iterator[NetworkLab]:
    """Hosts on one bridge, each in its own namespace (removed on exit)."""
    tag = f"{os.getpid() % 100000}{random.randrange(100):02d}"
    subnet = f"10.{random.randrange(1, 250)}.{random.randrange(1, 250)}"
    lab = NetworkLab(prefix=f"mesh{tag}", hub=f"mesh{tag}-hub", subnet=subnet)
    try:
        _ip("netns", "add", lab.hub)
        _ip("-n", lab.hub, "link", "set", "lo", "up")
        _ip("-n", lab.hub, "link", "add", "br0", "type", "bridge")
        _ip("-n", lab.hub, "link", "set", "br0", "up")
        for index, host in enumerate(hosts):
            ns = f"mesh{tag}-{index}"
            address = f"{subnet}.{index + 1}"
            _ip("netns", "add", ns)
            lab.hosts[host], lab.addresses[host] = ns, address
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", f"p{index}")
            _ip("-n", ns, "link", "set", f"p{index}", "netns", lab.hub)
            _ip("-n", lab.hub, "link", "set", f"p{index}", "master", "br0")
            _ip("-n", lab.hub, "link", "set", f"p{index}", "up")
            _ip("-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
        yield lab
    finally:
        lab.close()

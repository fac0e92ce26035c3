"""The coordinator daemon's settings (built by the CLI from flags, env and file)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mesh.coordinator.web.settings import HttpSettings
from mesh.protocol.messages import ChannelSettings
from mesh.transport.curve import Curve

__all__ = ["CoordinatorConfig"]


@dataclass(frozen=True, slots=True)
class CoordinatorConfig:
    """Settings of a coordinator daemon."""

    bind: str = "tcp://127.0.0.1:5550"
    state_dir: Path = Path(".mesh/coordinator")
    heartbeat_interval_ms: int = 1000
    heartbeat_timeout_ms: int = 5000
    placement: str = "spread"
    cancel_timeout_ms: int = 10_000
    slot_timeout_ms: int = 300_000  # a job (new or restarting) waits this long for slots
    channels: ChannelSettings = field(default_factory=ChannelSettings)
    retained_jobs: int = 100  # finished jobs kept for list/status (oldest dropped first)
    checkpoint_dir: Path | None = None  # default: <state_dir>/checkpoints
    checkpoint_timeout_ms: int = 600_000
    checkpoint_min_pause_ms: int = 0
    tolerable_checkpoint_failures: int = 3
    retained_checkpoints: int = 3
    # The largest message part accepted on the coordinator's socket (ZeroMQ MAXMSGSIZE).
    max_message_bytes: int = 64 << 20
    # A connection sending this many malformed messages is cut (0: never).
    max_bad_messages: int = 100
    curve: Curve | None = None  # CURVE keys: every socket authenticated and encrypted
    http: HttpSettings | None = None  # the dashboard and REST API (None: not served)
    http_token: str | None = None  # what HTTP requests must carry (None: nothing)
    jaeger_url: str | None = None  # where the dashboard links traces to

    @property
    def checkpoint_base(self) -> Path:
        """Where checkpoints go unless a job says otherwise."""
        return self.checkpoint_dir or self.state_dir / "checkpoints"

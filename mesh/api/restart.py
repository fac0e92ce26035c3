"""``RestartStrategy``: what a job does when one of its tasks fails.

A failure — a task that raises, a node that is lost, a commit that fails — restarts the
whole job from its latest completed checkpoint (or from the start, if it has none)
until the strategy gives up; then the job is FAILED with the root cause::

    Job("orders", checkpoint_interval="10s",
        restart=RestartStrategy.fixed_delay(attempts=3, delay="5s"))

Without ``restart=``, a job that checkpoints restarts with
``RestartStrategy.exponential()`` (never gives up, as in Flink), and a job without
checkpoints does not restart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mesh.errors import GraphError
from mesh.time.durations import parse_duration

__all__ = ["RestartStrategy"]

_KINDS = ("none", "fixed_delay", "exponential", "failure_rate")


def _ms(value: Any, what: str) -> int:
    try:
        return parse_duration(value, what=f"RestartStrategy {what}")
    except ValueError as exc:
        raise GraphError(str(exc)) from None


def _count(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise GraphError(f"RestartStrategy {what} must be an int >= 0, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class RestartStrategy:
    """How often, and after how long, a failed job is restarted.

    Build one with ``fixed_delay``, ``exponential``, ``failure_rate`` or ``none``.
    """

    kind: str
    settings: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise GraphError(
                f"RestartStrategy kind must be one of {', '.join(_KINDS)}, got {self.kind!r}"
            )

    @classmethod
    def none(cls) -> RestartStrategy:
        """Never restart: the first failure fails the job."""
        return cls("none")

    @classmethod
    def fixed_delay(cls, attempts: int, delay: int | str = "1s") -> RestartStrategy:
        """Restart up to ``attempts`` times, waiting ``delay`` before each restart."""
        return cls(
            "fixed_delay",
            {"attempts": _count(attempts, "attempts"), "delay_ms": _ms(delay, "delay")},
        )

    @classmethod
    def exponential(
        cls,
        initial: int | str = "1s",
        max: int | str = "1m",
        multiplier: float = 2.0,
        reset_after: int | str = "1h",
    ) -> RestartStrategy:
        """Restart forever, waiting ``initial``, then ``multiplier`` times longer after each
        failure up to ``max``; a job that ran ``reset_after`` without failing starts again
        from ``initial``."""
        initial_ms, max_ms = _ms(initial, "initial"), _ms(max, "max")
        if initial_ms > max_ms:
            raise GraphError(
                f"RestartStrategy.exponential: initial {initial!r} is longer than max {max!r}"
            )
        if isinstance(multiplier, bool) or not isinstance(multiplier, int | float):
            raise GraphError(f"RestartStrategy multiplier must be a number, got {multiplier!r}")
        if not 1.0 <= multiplier <= 100.0:
            raise GraphError(
                f"RestartStrategy multiplier must be between 1 and 100, got {multiplier!r}"
            )
        return cls(
            "exponential",
            {
                "initial_ms": initial_ms,
                "max_ms": max_ms,
                "multiplier": float(multiplier),
                "reset_after_ms": _ms(reset_after, "reset_after"),
            },
        )

    @classmethod
    def failure_rate(
        cls, max_failures: int, interval: int | str = "1m", delay: int | str = "1s"
    ) -> RestartStrategy:
        """Restart after ``delay`` unless more than ``max_failures`` failures happened
        within the last ``interval``; then the job fails."""
        interval_ms = _ms(interval, "interval")
        if interval_ms <= 0:
            raise GraphError(f"RestartStrategy interval must be above zero, got {interval!r}")
        return cls(
            "failure_rate",
            {
                "max_failures": _count(max_failures, "max_failures"),
                "interval_ms": interval_ms,
                "delay_ms": _ms(delay, "delay"),
            },
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON form carried in the job graph."""
        return {"kind": self.kind, **self.settings}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RestartStrategy:
        """Rebuild from ``to_dict`` output."""
        settings = {k: v for k, v in data.items() if k != "kind"}
        return cls(str(data["kind"]), settings)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v:g}" for k, v in self.settings.items())
        return f"RestartStrategy.{self.kind}({args})"

"""Metrics through the OpenTelemetry metrics API: observable instruments whose callbacks
read a daemon's own counters when a reader (the Prometheus endpoint) collects.

Names follow the OpenTelemetry conventions (dotted, with a unit); the Prometheus
exporter turns ``mesh.subtask.records_in`` into ``mesh_subtask_records_in_total``.
With no meter provider installed, registering does nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

__all__ = ["Instrument", "Reading", "register"]


@dataclass(frozen=True, slots=True)
class Reading:
    """One value of an instrument, for one set of attributes."""

    value: float
    attributes: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Instrument:
    """An observable instrument and where its readings come from."""

    name: str
    description: str
    unit: str
    read: Callable[[], Iterable[Reading]]
    monotonic: bool = True  # a counter that only goes up; else a gauge


def register(meter_name: str, instruments: Iterable[Instrument]) -> None:
    """Register ``instruments`` on the meter ``meter_name`` of the global provider."""
    meter = metrics.get_meter(meter_name)
    for instrument in instruments:
        callback = _callback(instrument.read)
        if instrument.monotonic:
            meter.create_observable_counter(
                instrument.name,
                callbacks=[callback],
                unit=instrument.unit,
                description=instrument.description,
            )
        else:
            meter.create_observable_gauge(
                instrument.name,
                callbacks=[callback],
                unit=instrument.unit,
                description=instrument.description,
            )


def _callback(
    read: Callable[[], Iterable[Reading]],
) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def observe(options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(r.value, dict(r.attributes)) for r in read()]

    return observe

"""Running a daemon: its settings, its signals and systemd notifications, its keys and
the addresses it may use, and its telemetry (shared by ``mesh coordinator`` and
``mesh node``)."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from mesh._excgroups import unwrap
from mesh.commands.exits import EXIT_FAILED, EXIT_USAGE, fail
from mesh.errors import ConfigError
from mesh.state.lock import StateDirLocked

if TYPE_CHECKING:
    from mesh.config import Setting
    from mesh.telemetry.setup import MetricsServer, Telemetry
    from mesh.transport.curve import Curve

__all__ = [
    "advertise_host_of",
    "check_exposure",
    "curve_of",
    "daemon_settings",
    "reload_keys",
    "run_daemon",
    "serve",
]

# How long a daemon's graceful stop (its ``on_stop``) may take before it is cut short.
_GRACEFUL_STOP_S = 15.0


def serve(
    daemon_run: Callable[..., Coroutine[Any, Any, None]],
    on_ready: Callable[[Any], None],
    on_stop: Callable[[], Coroutine[Any, Any, None]] | None = None,
    *,
    starting: str | None = None,
    status: Callable[[], str] | None = None,
    on_reload: Callable[[], object] | None = None,
) -> None:
    """Run a daemon until SIGTERM/SIGINT; returns after a clean stop.

    The first signal runs ``on_stop`` (bounded by ``_GRACEFUL_STOP_S``) before the daemon
    is cancelled; a second signal cancels it at once. Under systemd: until ready, the
    ``starting`` status goes out with more start-up time; once ready, ``status()`` is
    sent whenever it changes; watchdog pings go out if systemd asks for them. SIGHUP calls
    ``on_reload``. Once ready, the garbage collector is tuned for the daemon's
    long life (``gc_tuning``).
    """
    from mesh.commands.gc_tuning import settle_heap
    from mesh.commands.service import keep_starting, report_status, send_watchdog_pings
    from mesh.systemd import EXTEND_TIMEOUT_USEC, notify, watchdog_period_s

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            watchdog_s = watchdog_period_s(os.environ, os.getpid())
            if watchdog_s is not None:
                tg.start_soon(send_watchdog_pings, watchdog_s)
            still_starting = anyio.CancelScope()
            if starting is not None:

                async def keep_starting_until_ready() -> None:
                    with still_starting:
                        await keep_starting(starting)

                notify(STATUS=starting, EXTEND_TIMEOUT_USEC=EXTEND_TIMEOUT_USEC)
                tg.start_soon(keep_starting_until_ready)

            async def stop_gracefully() -> None:
                assert on_stop is not None
                with anyio.move_on_after(_GRACEFUL_STOP_S):
                    await on_stop()
                tg.cancel_scope.cancel()

            async def stop_on_signal() -> None:
                stopping = False
                with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                    async for _ in signals:
                        notify(STOPPING=1)
                        if on_stop is None or stopping:
                            tg.cancel_scope.cancel()
                            return
                        stopping = True
                        tg.start_soon(stop_gracefully)

            async def reload_on_signal() -> None:
                assert on_reload is not None
                with anyio.open_signal_receiver(signal.SIGHUP) as signals:
                    async for _ in signals:
                        on_reload()

            tg.start_soon(stop_on_signal)
            if on_reload is not None:
                tg.start_soon(reload_on_signal)
            ready = await tg.start(daemon_run)
            still_starting.cancel()
            settle_heap()
            on_ready(ready)
            if status is not None:
                tg.start_soon(report_status, status)

    try:
        anyio.run(main, backend="asyncio")
    except BaseExceptionGroup as group:
        raise unwrap(group) from None


def daemon_settings(
    specs: tuple[Setting, ...], role: str, config_file: Path | None, **flags: object
) -> dict[str, Any]:
    """A daemon's effective settings (defaults < file < env < flags), with logging set
    up; a bad setting exits with a usage error naming it."""
    from mesh.config import resolve_settings
    from mesh.logs import setup_logging
    from mesh.telemetry.endpoint import traces_endpoint

    try:
        settings = resolve_settings(specs, role, flags=flags, config_file=config_file)
    except ConfigError as exc:
        raise fail(str(exc), EXIT_USAGE) from None
    trace_ids = None
    if traces_endpoint(settings["otlp_endpoint"]) is not None:
        from mesh.telemetry.logs import TraceIdFilter

        trace_ids = TraceIdFilter()
    setup_logging(
        settings["log_level"], role=role, log_format=settings["log_format"], trace_ids=trace_ids
    )
    return settings


def curve_of(settings: dict[str, Any], names: list[str]) -> Curve | None:
    """The daemon's CURVE keys (``keys`` setting), or None; a missing key exits 2."""
    if settings["keys"] is None:
        return None
    from mesh.transport.curve import Curve

    try:
        return Curve.load(settings["keys"], names, serve=True)
    except ConfigError as exc:
        raise fail(str(exc), EXIT_USAGE) from None


def check_exposure(what: str, host: str, settings: dict[str, Any]) -> None:
    """Exit 2 if a keyless daemon would ``what`` a non-loopback ``host``."""
    from mesh.transport.exposure import exposure_error

    error = exposure_error(
        what, host, keys=settings["keys"] is not None, insecure=settings["insecure"]
    )
    if error is not None:
        raise fail(error, EXIT_USAGE)


def reload_keys(curve: Curve | None) -> Callable[[], object] | None:
    """What SIGHUP does: re-read the allowed keys."""
    return curve.allow.reload if curve is not None and curve.allow is not None else None


def _install_metrics(
    service: str, instance_id: str | None, settings: dict[str, Any]
) -> MetricsServer | None:
    """The daemon's metrics: a Prometheus endpoint if ``metrics_port`` is set, an OTLP
    exporter if an OTLP endpoint is (the SDK is imported only then)."""
    from mesh.telemetry.endpoint import metrics_endpoint

    if not settings["metrics_port"] and metrics_endpoint(settings["otlp_endpoint"]) is None:
        return None
    from mesh.telemetry.setup import install_metrics

    try:
        return install_metrics(
            service,
            instance_id,
            settings["metrics_host"],
            settings["metrics_port"],
            settings["otlp_endpoint"],
        )
    except OSError as exc:
        raise fail(
            f"cannot serve metrics on {settings['metrics_host']}:{settings['metrics_port']}: {exc}",
            EXIT_FAILED,
        ) from None


def _install_tracing(
    service: str, instance_id: str | None, endpoint: str | None
) -> Telemetry | None:
    """The daemon's tracer provider (the SDK is imported only when traces are exported)."""
    from mesh.telemetry.endpoint import traces_endpoint

    if traces_endpoint(endpoint) is None:
        return None
    from mesh.telemetry.setup import install_tracing

    return install_tracing(service, instance_id, endpoint)


def advertise_host_of(settings: dict[str, Any]) -> str:
    """The host peers dial: ``advertise_host``; else ``bind_host``, unless that is every
    interface: then the address this host reaches the coordinator from. Never a
    wildcard (exit 2)."""
    from mesh.transport.exposure import is_wildcard, route_source, wildcard_advertise

    given = settings["advertise_host"]
    if given is not None:
        error = wildcard_advertise(given)
        if error is not None:
            raise fail(error, EXIT_USAGE)
        return str(given)
    if not is_wildcard(settings["bind_host"]):
        return str(settings["bind_host"])
    try:
        return route_source(settings["coordinator"])
    except OSError as exc:
        raise fail(
            f"bind_host = {settings['bind_host']!r} needs --advertise-host: no route to the "
            f"coordinator at {settings['coordinator']} to pick an address from ({exc})",
            EXIT_USAGE,
        ) from None


def run_daemon(
    service: str,
    instance_id: str | None,
    settings: dict[str, Any],
    run: Callable[[], None],
    failures: tuple[type[BaseException], ...] = (OSError,),
) -> None:
    """Run a daemon (``run``, which serves it) with its tracing and metrics installed,
    and shut them down after; a locked state directory exits 2, ``failures`` exit 1."""
    telemetry = _install_tracing(service, instance_id, settings["otlp_endpoint"])
    metrics = _install_metrics(service, instance_id, settings)
    try:
        run()
    except StateDirLocked as exc:
        raise fail(str(exc), EXIT_USAGE) from None
    except failures as exc:
        raise fail(str(exc), EXIT_FAILED) from None
    finally:
        if telemetry is not None:
            telemetry.shutdown()
        if metrics is not None:
            metrics.shutdown()

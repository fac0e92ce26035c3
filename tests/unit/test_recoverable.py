"""Which failures a restart can fix (mesh/node/runtime/recoverable.py)."""

from __future__ import annotations

import pytest

from mesh.errors import (
    ChannelError,
    CheckpointError,
    ConfigError,
    ConnectorError,
    EncodingError,
    GraphError,
    JobCodeError,
    RecordError,
    StateError,
)
from mesh.node.runtime.recoverable import non_recoverable_cause


def raised_from(error: BaseException, cause: BaseException) -> BaseException:
    try:
        raise error from cause
    except BaseException as exc:
        return exc


@pytest.mark.parametrize(
    "error",
    [
        ConfigError("bad"),
        GraphError("sink 'out': cannot write to /x: File exists"),
        JobCodeError("no Job"),
        PermissionError(13, "Permission denied"),
        NotADirectoryError(20, "Not a directory"),
        IsADirectoryError(21, "Is a directory"),
    ],
)
def test_errors_no_restart_can_fix(error: BaseException) -> None:
    assert non_recoverable_cause(error) is error


@pytest.mark.parametrize(
    "error",
    [
        RecordError("user code raised"),
        EncodingError("a set"),
        ValueError("boom"),
        ChannelError("sequence gap"),
        StateError("disk full"),
        CheckpointError("missing file"),
        FileNotFoundError(2, "No such file"),
        OSError(28, "No space left on device"),
        ConnectionError("peer gone"),
        ConnectorError("Kafka source 'events': cannot reach the Kafka brokers at 'k:9092'"),
        SystemExit(3),
    ],
)
def test_errors_a_restart_may_fix(error: BaseException) -> None:
    assert non_recoverable_cause(error) is None


def test_an_explicit_cause_counts() -> None:
    cause = PermissionError(13, "Permission denied")
    assert non_recoverable_cause(raised_from(StateError("write failed"), cause)) is cause


def test_what_user_code_raises_on_a_record_is_for_the_strategy() -> None:
    cause = PermissionError(13, "Permission denied")
    assert non_recoverable_cause(raised_from(RecordError("map raised"), cause)) is None


def test_an_error_being_handled_meanwhile_is_not_a_cause() -> None:
    try:
        try:
            raise PermissionError(13, "Permission denied")
        except PermissionError:
            raise ValueError("something else") from None
    except ValueError as exc:
        error = exc
    try:
        try:
            raise ConfigError("handled")
        except ConfigError:
            raise ValueError("implicit context")  # noqa: B904 - the point of the test
    except ValueError as exc:
        implicit = exc
    assert non_recoverable_cause(error) is None
    assert non_recoverable_cause(implicit) is None


def test_exception_groups_are_searched() -> None:
    inner = GraphError("bad sink")
    group = BaseExceptionGroup("several", [ValueError("a"), raised_from(RuntimeError(), inner)])
    assert non_recoverable_cause(group) is inner


def test_a_cycle_of_causes_ends() -> None:
    a, b = ValueError("a"), ValueError("b")
    a.__cause__, b.__cause__ = b, a
    assert non_recoverable_cause(a) is None

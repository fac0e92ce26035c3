"""``mesh run``'s progress (mesh/client/progress.py) from made-up statuses, and the
displays (mesh/client/live.py) on a fake terminal and a fake pipe."""

from __future__ import annotations

import io
from typing import Any

from mesh.client.live import ProgressDisplay, TextDisplay
from mesh.client.progress import PrintSchedule, progress_line, progress_of
from mesh.time.watermarks import MAX_WATERMARK
from tests.terminal import Screen

NOW = 1_700_000_010_000


def status(
    state: str = "RUNNING",
    *,
    records_in: int = 400,
    records_out: int = 390,
    in_rate: float = 100.0,
    ended: bool = False,
    source_progress: float | None = 0.4,
    watermarks: tuple[int | None, ...] = (None, None),
    checkpoint_ended_ms: int | None = None,
) -> dict[str, Any]:
    return {
        "state": state,
        "uptime_ms": 5_000,
        "ended_ms": NOW if ended else 0,
        "processing_started_ms": NOW - 4_000,
        "processing_finished_ms": NOW if ended else 0,
        "totals": {
            "records_in": records_in,
            "records_out": records_out,
            "in_rate": 0.0 if ended else in_rate,
            "out_rate": 0.0 if ended else in_rate,
        },
        "tasks": [
            {
                "id": 0,
                "operators": [{"uid": "s", "name": "Source", "kind": "source"}],
                "subtasks": [{"watermark": mark} for mark in watermarks],
            }
        ],
        "source_progress": source_progress,
        "checkpoints": {
            "latest": {"checkpoint_id": 7, "ended_ms": checkpoint_ended_ms}
            if checkpoint_ended_ms
            else None
        },
    }


def test_a_running_job_shows_rates_fraction_and_eta() -> None:
    p = progress_of(status(checkpoint_ended_ms=NOW - 1_500, watermarks=(5_000, 3_000)), NOW)
    assert (p.fraction, p.eta_ms, p.watermark, p.checkpoint_age_ms) == (0.4, 6_000, 3_000, 1_500)
    assert progress_line(p) == (
        "[RUNNING   ]    5.0s  in 400 (100/s)  out 390 (100/s)  "
        "watermark 1970-01-01 00:00:03.000Z  checkpoint 7 1.5s ago  40% eta 6.0s"
    )


def test_an_ended_job_shows_average_rates_not_zero() -> None:
    p = progress_of(status("FINISHED", records_in=1000, records_out=1000, ended=True), NOW)
    assert p.in_rate == 250.0 and p.eta_ms is None  # 1,000 records in 4 s of processing
    assert progress_line(p).startswith(
        "[FINISHED  ]    5.0s  in 1,000 (avg 250/s)  out 1,000 (avg 250/s)"
    )


def test_without_a_known_input_size_there_is_no_share_or_eta() -> None:
    p = progress_of(status(source_progress=None), NOW)
    assert p.fraction is None and p.eta_ms is None and "%" not in progress_line(p)


def test_the_end_of_event_time_reads_end() -> None:
    p = progress_of(status(watermarks=(MAX_WATERMARK, MAX_WATERMARK)), NOW)
    assert "watermark end" in progress_line(p)


def test_a_plain_display_prints_on_start_change_period_and_end() -> None:
    schedule = PrintSchedule(every_s=5)
    due = [
        schedule.due(state, at)
        for state, at in [("SCHEDULING", 0), ("SCHEDULING", 1), ("RUNNING", 2), ("RUNNING", 6)]
    ]
    assert due == [True, False, True, False]
    assert schedule.due("RUNNING", 7) is True
    assert schedule.due("RUNNING", 7.5, final=True) is True


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_the_progress_line_is_redrawn_in_place() -> None:
    terminal = FakeTerminal()
    display = ProgressDisplay(terminal)
    assert display.in_place
    for n in (100, 200, 300):
        display.show(progress_of(status(records_in=n), NOW))
    display.message("a message of its own")
    display.close(progress_of(status("FINISHED", records_in=1000, ended=True), NOW))
    screen = Screen(width=200)
    screen.feed(terminal.getvalue())
    assert screen.lines[0] == "a message of its own"
    assert screen.lines[1].startswith("[FINISHED  ]    5.0s  in 1,000 (avg 250/s)")
    assert len(screen.lines) == 2


def test_on_a_pipe_the_progress_is_plain_lines() -> None:
    pipe = io.StringIO()
    display = ProgressDisplay(pipe, every_s=60)
    for n in (100, 200, 300):
        display.show(progress_of(status(records_in=n), NOW))
    display.close(progress_of(status("FINISHED", records_in=1000, ended=True), NOW))
    lines = pipe.getvalue().splitlines()
    assert "\x1b" not in pipe.getvalue()
    assert [line[:12] for line in lines] == ["[RUNNING   ]", "[FINISHED  ]"]


def test_watched_status_is_redrawn_in_place_on_a_terminal_and_repeated_on_a_pipe() -> None:
    terminal = FakeTerminal()
    display = TextDisplay(terminal)
    display.show("job x: RUNNING\nline 2\nline 3", "RUNNING")
    display.show("job x: FINISHED\nline 2", "FINISHED", final=True)
    display.close()
    screen = Screen(width=80)
    screen.feed(terminal.getvalue())
    assert screen.lines == ["job x: FINISHED", "line 2"]

    pipe = io.StringIO()
    display = TextDisplay(pipe, every_s=60)
    display.show("job x: RUNNING", "RUNNING")
    display.show("job x: RUNNING", "RUNNING")  # too soon, same state: not printed
    display.show("job x: FINISHED", "FINISHED", final=True)
    display.close()
    assert pipe.getvalue() == "job x: RUNNING\n\njob x: FINISHED\n"

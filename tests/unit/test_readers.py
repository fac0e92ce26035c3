"""Source readers and file splits (mesh/node/readers.py, mesh/node/splits.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from unittest import mock

import anyio
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mesh import GraphError, RecordError, sources
from mesh.errors import UndecodableInput
from mesh.node.connectors import readers
from mesh.node.connectors.readers import SourceReader, builtin_reader
from mesh.node.connectors.splits import FileRange, plan_splits
from mesh.node.operators.context import TaskContext
from mesh.time.clock import ManualClock


def _reader(source: Any, ctx: TaskContext) -> Any:
    """A reader as a subtask gets it: built, given its fresh splits (the built-in file and
    index readers need no ``open``)."""
    reader = builtin_reader(source, ctx) or source.create_reader(ctx)
    reader.initialize(None)
    return reader


def _ctx(base_dir: Path, subtask: int = 0, parallelism: int = 1) -> TaskContext:
    return TaskContext(
        job_id="job-1",
        attempt=0,
        node_id="node-1",
        task_name="Source",
        subtask_index=subtask,
        parallelism=parallelism,
        max_parallelism=128,
        base_dir=base_dir,
        clock=ManualClock(),
    )


async def _drain(reader: SourceReader, batch: int) -> list[Any]:
    """Every record, failing at the first input the reader could not decode (as its
    subtask does with dead letters off)."""
    out: list[Any] = []
    try:
        for _ in range(100_000):  # a guard against a reader that never ends
            records = await reader.read(batch)
            if reader.rejected:
                raise reader.take_rejected()[0]
            if records is None:
                return out
            assert len(records) <= batch
            out.extend(records)
        raise AssertionError("reader did not end")
    finally:
        reader.close()


def _read_subtasks(
    source: sources.Source, base_dir: Path, parallelism: int, batch: int = 3
) -> list[list[Any]]:
    """Each subtask's records, in subtask order."""

    async def main() -> list[list[Any]]:
        return [
            await _drain(_reader(source, _ctx(base_dir, i, parallelism)), batch)
            for i in range(parallelism)
        ]

    return anyio.run(main)


# -- plan_splits ------------------------------------------------------------------------------


@given(
    st.lists(st.integers(min_value=0, max_value=50), max_size=5),
    st.integers(min_value=1, max_value=8),
)
def test_splits_cover_every_byte_once_in_order(sizes: list[int], parallelism: int) -> None:
    files = [(f"f{i}", size) for i, size in enumerate(sizes)]
    plans = [plan_splits(files, parallelism, k) for k in range(parallelism)]
    ranges = [r for plan in plans for r in plan]
    assert all(r.start < r.end for r in ranges), "empty ranges are left out"
    covered = [(r.path, b) for r in ranges for b in range(r.start, r.end)]
    assert covered == [(path, b) for path, size in files for b in range(size)]
    # Nearly equal shares.
    shares = [sum(r.end - r.start for r in plan) for plan in plans]
    assert max(shares) - min(shares) <= 1


def test_splits_examples() -> None:
    files = [("a", 10), ("b", 0), ("c", 5)]
    assert plan_splits(files, 1, 0) == [FileRange("a", 0, 10), FileRange("c", 0, 5)]
    assert plan_splits(files, 3, 0) == [FileRange("a", 0, 5)]
    assert plan_splits(files, 3, 1) == [FileRange("a", 5, 10)]
    assert plan_splits(files, 3, 2) == [FileRange("c", 0, 5)]
    assert plan_splits([], 2, 1) == []


# -- text and JSON lines files ----------------------------------------------------------------

_line_text = st.text(
    alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)),
    max_size=30,
)
_text_file = st.tuples(
    st.lists(_line_text, max_size=8),  # lines
    st.booleans(),  # trailing newline
    st.booleans(),  # \r\n line ends
)


def _content(lines: list[str], trailing: bool, crlf: bool) -> bytes:
    sep = "\r\n" if crlf else "\n"
    text = sep.join(lines) + (sep if trailing and lines else "")
    return text.encode()


def _expected_lines(content: bytes) -> list[str]:
    parts = content.decode().split("\n")
    if parts[-1] == "":  # the file ends with a newline (or is empty)
        parts.pop()
    return [p[:-1] if p.endswith("\r") else p for p in parts]


@given(
    files=st.lists(_text_file, max_size=4),
    parallelism=st.integers(min_value=1, max_value=6),
    chunk=st.integers(min_value=1, max_value=48),
    batch=st.integers(min_value=1, max_value=5),
)
def test_text_files_every_line_exactly_once(
    tmp_path_factory: pytest.TempPathFactory,
    files: list[tuple[list[str], bool, bool]],
    parallelism: int,
    chunk: int,
    batch: int,
) -> None:
    base = tmp_path_factory.mktemp("text")
    expected: list[str] = []
    for i, spec in enumerate(files):
        content = _content(*spec)
        (base / f"part-{i}.txt").write_bytes(content)
        expected.extend(_expected_lines(content))
    (base / "ignored.log").write_text("not matched\n")
    if not files:
        (base / "part-empty.txt").write_bytes(b"")
    with mock.patch.object(readers, "_CHUNK", chunk):
        per_subtask = _read_subtasks(sources.TextFile("*.txt"), base, parallelism, batch)
    # Subtasks read contiguous byte ranges of the sorted files: in subtask order, the
    # lines are exactly the files' lines, each once.
    assert [line for lines in per_subtask for line in lines] == expected


_json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**63), max_value=2**63 - 1),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=10),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=5,
)
# None stands for a blank line (empty, or only spaces).
_json_line = st.one_of(_json_values.map(lambda v: [v]), st.sampled_from([None, "blank"]))


@given(
    files=st.lists(
        st.tuples(st.lists(_json_line, max_size=6), st.booleans(), st.booleans()), max_size=4
    ),
    parallelism=st.integers(min_value=1, max_value=6),
    chunk=st.integers(min_value=1, max_value=48),
    batch=st.integers(min_value=1, max_value=5),
)
def test_json_lines_every_record_exactly_once_blank_lines_skipped(
    tmp_path_factory: pytest.TempPathFactory,
    files: list[tuple[list[Any], bool, bool]],
    parallelism: int,
    chunk: int,
    batch: int,
) -> None:
    base = tmp_path_factory.mktemp("jsonl")
    expected: list[Any] = []
    for i, (items, trailing, crlf) in enumerate(files):
        lines = []
        for item in items:
            if item is None:
                lines.append("")
            elif item == "blank":
                lines.append("   ")
            else:
                lines.append(orjson.dumps(item[0]).decode())
                expected.append(item[0])
        (base / f"in-{i}.jsonl").write_bytes(_content(lines, trailing, crlf))
    if not files:
        (base / "in-empty.jsonl").write_bytes(b"")
    with mock.patch.object(readers, "_CHUNK", chunk):
        per_subtask = _read_subtasks(sources.JsonLines("in-*.jsonl"), base, parallelism, batch)
    assert [r for records in per_subtask for r in records] == expected


def test_one_big_file_is_shared_by_every_subtask(tmp_path: Path) -> None:
    lines = [f"line {i:04d}" for i in range(400)]
    (tmp_path / "big.txt").write_text("\n".join(lines) + "\n")
    with mock.patch.object(readers, "_CHUNK", 64):
        per_subtask = _read_subtasks(sources.TextFile("big.txt"), tmp_path, 4, batch=7)
    assert [line for chunk in per_subtask for line in chunk] == lines
    assert all(90 <= len(chunk) <= 110 for chunk in per_subtask)


def test_absolute_path_and_text_details(tmp_path: Path) -> None:
    path = tmp_path / "mixed.txt"
    path.write_bytes(b"one\r\n\r\ntwo\n\nthree")
    (records,) = _read_subtasks(sources.TextFile(str(path)), Path("/nonexistent"), 1)
    assert records == ["one", "", "two", "", "three"]


def _bad_json_files(base: Path) -> Path:
    (base / "a.jsonl").write_text('{"x": 1}\n')
    bad = base / "b.jsonl"
    bad.write_text('{"y": 2}\n\n{oops\n{"z": 3}\n')
    return bad


@pytest.mark.parametrize(("chunk", "batch"), [(1 << 20, 100), (4, 1), (7, 2)])
def test_a_bad_json_line_names_the_file_and_byte_offset(
    tmp_path: Path, chunk: int, batch: int
) -> None:
    bad = _bad_json_files(tmp_path)
    with mock.patch.object(readers, "_CHUNK", chunk), pytest.raises(RecordError) as info:
        _read_subtasks(sources.JsonLines("*.jsonl"), tmp_path, 1, batch)
    message = str(info.value)
    assert str(bad) in message
    assert "byte offset 10" in message  # len('{"y": 2}\n\n')
    assert "is not valid JSON" in message
    assert "oops" in message


@pytest.mark.parametrize(("chunk", "batch"), [(1 << 20, 100), (4, 1), (7, 2)])
def test_a_bad_json_line_is_left_out_and_handed_over_with_its_origin(
    tmp_path: Path, chunk: int, batch: int
) -> None:
    """What the subtask sets aside as a dead letter: the line as text, the file and the
    byte offset; reading goes on after it."""
    bad = _bad_json_files(tmp_path)

    async def main() -> tuple[list[Any], list[UndecodableInput]]:
        reader = _reader(sources.JsonLines("*.jsonl"), _ctx(tmp_path))
        records: list[Any] = []
        rejected: list[UndecodableInput] = []
        try:
            while (batch_read := await reader.read(batch)) is not None:
                records.extend(batch_read)
                rejected.extend(reader.take_rejected())
        finally:
            reader.close()
        return records, rejected

    with mock.patch.object(readers, "_CHUNK", chunk):
        records, rejected = anyio.run(main)
    assert records == [{"x": 1}, {"y": 2}, {"z": 3}]
    (error,) = rejected
    assert error.raw == "{oops" and error.origin == {"file": str(bad), "offset": 10}
    assert str(bad) in str(error) and "byte offset 10 is not valid JSON" in str(error)


def test_a_bad_json_line_is_reported_by_the_subtask_that_owns_it(tmp_path: Path) -> None:
    path = tmp_path / "one.jsonl"
    path.write_text('{"ok": 1}\n' * 10 + "not json\n" + '{"ok": 2}\n' * 10)

    async def main() -> list[str]:
        errors = []
        for i in range(3):
            try:
                await _drain(_reader(sources.JsonLines("one.jsonl"), _ctx(tmp_path, i, 3)), 4)
            except RecordError as exc:
                errors.append(str(exc))
        return errors

    (message,) = anyio.run(main)
    assert str(path) in message
    assert "byte offset 100" in message


def test_invalid_utf8_in_a_text_file_names_the_offset(tmp_path: Path) -> None:
    (tmp_path / "t.txt").write_bytes(b"fine\n\xff\xfe broken\n")
    with pytest.raises(RecordError, match=r"byte offset 5 is not valid UTF-8"):
        _read_subtasks(sources.TextFile("t.txt"), tmp_path, 1)


@pytest.mark.parametrize(
    "source",
    [sources.JsonLines("data/*.jsonl"), sources.TextFile("missing.txt")],
    ids=["glob", "path"],
)
def test_no_matching_file_names_the_pattern(tmp_path: Path, source: Any) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "other.txt").write_text("x\n")
    with pytest.raises(GraphError) as info:
        _reader(source, _ctx(tmp_path))
    message = str(info.value)
    assert repr(source.path) in message
    assert f"{type(source).__name__} source: no file matches" in message
    assert str(tmp_path) in message


def test_a_directory_is_not_a_file(tmp_path: Path) -> None:
    (tmp_path / "dir.txt").mkdir()
    with pytest.raises(GraphError, match=r"no file matches \'dir\.txt\'"):
        _reader(sources.TextFile("dir.txt"), _ctx(tmp_path))


def test_only_empty_files_give_no_records(tmp_path: Path) -> None:
    (tmp_path / "e1.jsonl").write_bytes(b"")
    (tmp_path / "e2.jsonl").write_bytes(b"")
    assert _read_subtasks(sources.JsonLines("e*.jsonl"), tmp_path, 2) == [[], []]


def test_unknown_source_type_is_refused(tmp_path: Path) -> None:
    class Custom(sources.Source):
        pass

    with pytest.raises(NotImplementedError, match="source Custom does not say how it is read"):
        _reader(Custom(), _ctx(tmp_path))


@pytest.mark.asyncio
async def test_file_reader_keeps_its_position(tmp_path: Path) -> None:
    (tmp_path / "p.txt").write_text("ab\ncd\nef\n")
    reader: Any = _reader(sources.TextFile("p.txt"), _ctx(tmp_path))
    assert await reader.read(2) == ["ab", "cd"]
    assert reader.position == (0, 6)
    assert await reader.read(2) == ["ef"]
    assert await reader.read(2) is None
    reader.close()


# -- collections and generators ---------------------------------------------------------------


def test_collection_items_are_split_round_robin(tmp_path: Path) -> None:
    items = [{"i": i} for i in range(10)]
    per_subtask = _read_subtasks(sources.Collection(items), tmp_path, 3, batch=2)
    assert per_subtask == [
        [{"i": 0}, {"i": 3}, {"i": 6}, {"i": 9}],
        [{"i": 1}, {"i": 4}, {"i": 7}],
        [{"i": 2}, {"i": 5}, {"i": 8}],
    ]


def test_collection_with_more_subtasks_than_items(tmp_path: Path) -> None:
    assert _read_subtasks(sources.Collection(["x"]), tmp_path, 3) == [["x"], [], []]


@pytest.mark.asyncio
async def test_collection_batches_respect_max_records(tmp_path: Path) -> None:
    reader = _reader(sources.Collection(range(5)), _ctx(tmp_path))
    assert await reader.read(2) == [0, 1]
    assert await reader.read(2) == [2, 3]
    assert await reader.read(2) == [4]
    assert await reader.read(2) is None


def test_generator_with_count_strides_over_subtasks(tmp_path: Path) -> None:
    per_subtask = _read_subtasks(sources.Generator(lambda i: i * 10, count=7), tmp_path, 2, 3)
    assert per_subtask == [[0, 20, 40, 60], [10, 30, 50]]


def test_generator_with_zero_count_is_empty(tmp_path: Path) -> None:
    assert _read_subtasks(sources.Generator(str, count=0), tmp_path, 2) == [[], []]


@pytest.mark.asyncio
async def test_generator_without_count_never_ends(tmp_path: Path) -> None:
    reader = _reader(sources.Generator(lambda i: {"n": i}), _ctx(tmp_path, 1, 3))
    assert await reader.read(3) == [{"n": 1}, {"n": 4}, {"n": 7}]
    assert await reader.read(2) == [{"n": 10}, {"n": 13}]


def test_generator_function_raising_names_the_index(tmp_path: Path) -> None:
    def fn(i: int) -> int:
        return 100 // (i - 5)

    source = sources.Generator(fn, count=9)

    async def main() -> tuple[list[Any], RecordError]:
        # Subtask 0 of 2 makes the even indices and never meets i == 5.
        evens = await _drain(_reader(source, _ctx(tmp_path, 0, 2)), 10)
        with pytest.raises(RecordError) as info:
            await _drain(_reader(source, _ctx(tmp_path, 1, 2)), 10)
        return evens, info.value

    evens, error = anyio.run(main)
    assert evens == [100 // (i - 5) for i in (0, 2, 4, 6, 8)]
    message = str(error)
    assert "for index 5" in message
    assert "ZeroDivisionError" in message
    assert isinstance(error.__cause__, ZeroDivisionError)


def test_a_file_reader_reports_the_bytes_of_its_splits_read(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_bytes(b"".join(b"line %03d\n" % i for i in range(100)))
    reader = _reader(sources.TextFile(str(tmp_path / "a.txt")), _ctx(tmp_path, 1, 2))
    done, total = reader.progress()
    assert done == 0 and 400 <= total <= 600  # about half of the 900 bytes

    async def read_some() -> None:
        await reader.read(10)

    anyio.run(read_some)
    done, _ = reader.progress()
    assert 0 < done < total
    anyio.run(_drain, reader, 1000)
    assert reader.progress() == (total, total)


def test_a_collection_reader_reports_records_and_a_rated_generator_nothing(
    tmp_path: Path,
) -> None:
    reader = _reader(sources.Collection(list(range(10))), _ctx(tmp_path, 0, 3))
    assert reader.progress() == (0, 4)  # indices 0, 3, 6, 9

    async def read_some() -> None:
        await reader.read(3)

    anyio.run(read_some)
    assert reader.progress() == (3, 4)
    endless = _reader(sources.Generator(lambda i: i, rate=10), _ctx(tmp_path))
    assert endless.progress() is None

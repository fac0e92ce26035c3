"""Keys → key groups → subtasks (mesh/graph/keygroups.py)."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mesh.graph.keygroups import (
    DEFAULT_MAX_PARALLELISM,
    KeyGroupRange,
    KeyGroupRouter,
    canonical_key,
    key_group_for,
    key_group_range,
    stable_hash,
    subtask_for_key_group,
)

ROOT = Path(__file__).resolve().parents[2]

# Keys orjson can encode: ints within 64 bits, finite floats of moderate size.
scalar_keys = st.one_of(
    st.text(max_size=12),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False, min_value=-1e15, max_value=1e15),
    st.booleans(),
    st.none(),
)
keys = st.recursive(
    scalar_keys,
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.lists(children, max_size=3).map(tuple)
    ),
    max_leaves=6,
)


def _expected_subtask(key: object, parallelism: int, max_parallelism: int) -> int:
    kg = key_group_for(key, max_parallelism)
    return subtask_for_key_group(kg, parallelism, max_parallelism)


# -- ranges ---------------------------------------------------------------------------------


@st.composite
def _parallelisms(draw: st.DrawFn) -> tuple[int, int]:
    max_parallelism = draw(st.integers(min_value=1, max_value=512))
    parallelism = draw(st.integers(min_value=1, max_value=max_parallelism))
    return parallelism, max_parallelism


@given(_parallelisms())
def test_ranges_cover_every_key_group_once_contiguously(pm: tuple[int, int]) -> None:
    parallelism, max_parallelism = pm
    ranges = [key_group_range(i, parallelism, max_parallelism) for i in range(parallelism)]
    # Contiguous, in subtask order, from 0 to M, with no gap or overlap.
    assert ranges[0].start == 0
    assert ranges[-1].end == max_parallelism
    for before, after in itertools.pairwise(ranges):
        assert before.end == after.start
    covered = [kg for r in ranges for kg in r]
    assert covered == list(range(max_parallelism))
    # Nearly equal sizes (Flink's range assignment): sizes differ by at most one.
    sizes = [len(r) for r in ranges]
    assert max(sizes) - min(sizes) <= 1
    assert all(size >= 1 for size in sizes)
    # The owner of every key group is the subtask whose range holds it.
    for i, r in enumerate(ranges):
        for kg in r:
            assert subtask_for_key_group(kg, parallelism, max_parallelism) == i
            assert kg in r


def test_key_group_range_examples() -> None:
    assert key_group_range(0, 3, 10) == KeyGroupRange(0, 4)
    assert key_group_range(1, 3, 10) == KeyGroupRange(4, 7)
    assert key_group_range(2, 3, 10) == KeyGroupRange(7, 10)
    assert key_group_range(0, 1, 128) == KeyGroupRange(0, 128)
    assert key_group_range(5, 128, 128) == KeyGroupRange(5, 6)


def test_key_group_range_container_protocol() -> None:
    r = KeyGroupRange(3, 6)
    assert list(r) == [3, 4, 5]
    assert len(r) == 3
    assert 3 in r and 5 in r
    assert 6 not in r and 2 not in r
    assert "4" not in r
    assert len(KeyGroupRange(5, 5)) == 0
    assert len(KeyGroupRange(6, 5)) == 0


@pytest.mark.parametrize(
    ("subtask", "parallelism", "max_parallelism", "message"),
    [
        (0, 0, 8, "parallelism must be in 1..max_parallelism"),
        (0, 9, 8, "got 9"),
        (2, 2, 8, "subtask must be in 0..1, got 2"),
        (-1, 2, 8, "subtask must be in 0..1, got -1"),
    ],
)
def test_key_group_range_rejects_bad_arguments(
    subtask: int, parallelism: int, max_parallelism: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        key_group_range(subtask, parallelism, max_parallelism)


# -- the router -----------------------------------------------------------------------------


@given(_parallelisms(), st.lists(keys, max_size=30), st.integers(min_value=1, max_value=4))
def test_router_agrees_with_unmemoised_computation(
    pm: tuple[int, int], key_list: list[object], memo_limit: int
) -> None:
    parallelism, max_parallelism = pm
    router = KeyGroupRouter(parallelism, max_parallelism, memo_limit=memo_limit)
    # Twice over, so later lookups hit (or miss, after an overflow) the memo.
    for key in key_list + key_list:
        subtask = router.subtask_for(key)
        assert subtask == _expected_subtask(key, parallelism, max_parallelism)
        kg = key_group_for(key, max_parallelism)
        assert kg in key_group_range(subtask, parallelism, max_parallelism)
    assert len(router._memo) <= memo_limit


@given(_parallelisms(), st.lists(keys, max_size=30), st.integers(min_value=1, max_value=4))
def test_router_batch_lookup_agrees_with_one_key_at_a_time(
    pm: tuple[int, int], key_list: list[object], memo_limit: int
) -> None:
    parallelism, max_parallelism = pm
    router = KeyGroupRouter(parallelism, max_parallelism, memo_limit=memo_limit)
    expected = [_expected_subtask(key, parallelism, max_parallelism) for key in key_list]
    # Cold, then with the memo holding what fits.
    assert router.subtasks_for(key_list) == expected
    assert router.subtasks_for(key_list) == expected
    assert router.subtasks_for([*key_list, ["a", 1]])[-1] == _expected_subtask(
        ["a", 1], parallelism, max_parallelism
    )


def test_router_memo_overflow_keeps_answers_right() -> None:
    router = KeyGroupRouter(4, 64, memo_limit=2)
    names = [f"user-{i}" for i in range(50)]
    first = [router.subtask_for(k) for k in names]
    second = [router.subtask_for(k) for k in reversed(names)]
    assert second == list(reversed(first))
    assert first == [_expected_subtask(k, 4, 64) for k in names]
    assert len(router._memo) <= 2
    # Every subtask gets some of 50 keys: the router is not stuck on one answer.
    assert set(first) == {0, 1, 2, 3}


def test_router_list_keys_route_like_tuples_and_are_not_memoised() -> None:
    router = KeyGroupRouter(3, 32)
    for key in (["a", 1], [[1, 2], "x"], [], [None, True, 2.0]):
        assert router.subtask_for(key) == _expected_subtask(key, 3, 32)
        assert router.subtask_for(key) == router.subtask_for(canonical_key(key))
    assert all(not isinstance(k, list) for k in router._memo)


def test_router_equal_keys_share_a_subtask_whichever_form_is_memoised_first() -> None:
    router = KeyGroupRouter(7, 128)
    assert router.subtask_for(1.0) == router.subtask_for(1) == router.subtask_for(True)
    assert router.subtask_for(False) == router.subtask_for(0) == router.subtask_for(-0.0)


# -- canonical keys -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "same",
    [
        (1, 1.0, True),
        (0, 0.0, -0.0, False),
        (-3, -3.0),
        ([1, "a"], (1, "a"), [1.0, "a"], (True, "a")),
        ([[1, 2], 3], ((1, 2), 3), [(1.0, 2), 3.0]),
        ([], ()),
    ],
)
def test_equal_keys_land_in_the_same_key_group(same: tuple[object, ...]) -> None:
    hashes = {stable_hash(k) for k in same}
    assert len(hashes) == 1
    groups = {key_group_for(k, 128) for k in same}
    assert len(groups) == 1
    # And they are one dict key in state, too.
    assert len({canonical_key(k) for k in same}) == 1


def test_canonical_key_forms() -> None:
    assert canonical_key([1, [2.0, True]]) == (1, (2, 1))
    assert type(canonical_key(True)) is int
    assert type(canonical_key(2.0)) is int
    assert canonical_key(2.5) == 2.5
    assert canonical_key("x") == "x"
    assert canonical_key(None) is None


def test_dict_keys_are_refused() -> None:
    with pytest.raises(TypeError, match="not a dict"):
        canonical_key({"a": 1})
    with pytest.raises(TypeError, match="not a dict"):
        canonical_key(["ok", {"a": 1}])
    with pytest.raises(TypeError, match="cannot encode key of type set"):
        stable_hash({1, 2})


def _fmix32(h: int) -> int:
    # murmur3's 32-bit finaliser, written out from the published algorithm.
    h ^= h >> 16
    h = (h * 0x85EBCA6B) % 2**32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) % 2**32
    h ^= h >> 16
    return h


@pytest.mark.parametrize("key", ["user-1", 0, 42, -7, "héllo", ("a", 1), None, 2.5, ["x", [1]]])
def test_hash_is_the_documented_formula(key: object) -> None:
    # Rule 1: mix(crc32(canonical JSON encoding)).
    encoded = json.dumps(key, separators=(",", ":"), ensure_ascii=False).encode()
    assert encoded == orjson.dumps(canonical_key(key))
    assert stable_hash(key) == _fmix32(zlib.crc32(encoded))


@pytest.mark.parametrize(
    ("key", "hash_value", "group"),
    [
        ("user-1", 411039393, 33),
        (0, 985228334, 46),
        (42, 2339504796, 28),
        (-7, 2375435111, 103),
        ("héllo", 2759064768, 64),
        (("a", 1), 1542648732, 28),
        (None, 1645001824, 96),
        (2.5, 2920725263, 15),
    ],
)
def test_hash_values_never_change(key: object, hash_value: int, group: int) -> None:
    # The hash is part of the snapshot format: these values are pinned on purpose.
    assert stable_hash(key) == hash_value
    assert key_group_for(key, DEFAULT_MAX_PARALLELISM) == group


def test_sequential_keys_spread_over_every_key_group() -> None:
    groups = {key_group_for(i, 128) for i in range(4000)}
    assert groups == set(range(128))
    strings = {key_group_for(f"k{i}", 128) for i in range(4000)}
    assert strings == set(range(128))


def test_large_integral_float_keys_can_be_hashed() -> None:
    assert 0 <= key_group_for(1e20, 128) < 128


# -- stability across processes -------------------------------------------------------------

STABILITY_KEYS = [
    "user-1",
    "",
    "héllo wörld",
    "日本語のキー",
    "🙂 emoji",
    0,
    1,
    -1,
    2**40,
    -(2**62),
    3.25,
    True,
    None,
    ("a", 1),
    ("nested", ("x", 2.5), None),
    ["list", "key"],
]

_SCRIPT = """
import json, sys
from mesh.graph.keygroups import key_group_for, stable_hash
keys = {keys!r}
print(json.dumps([[stable_hash(k), key_group_for(k, 128), key_group_for(k, 7)] for k in keys]))
"""


def _in_process() -> list[list[int]]:
    return [[stable_hash(k), key_group_for(k, 128), key_group_for(k, 7)] for k in STABILITY_KEYS]


def test_key_groups_are_identical_in_every_process() -> None:
    script = _SCRIPT.format(keys=STABILITY_KEYS)
    procs = []
    for seed in ("0", "1", "12345", "random"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", script],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        outputs.append(json.loads(out))
    expected = _in_process()
    assert all(output == expected for output in outputs)

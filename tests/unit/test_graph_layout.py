"""The dashboard's layered drawing of a task graph (``mesh.graph.layout``): columns
follow the edges, boxes never overlap, edges only go right, crossings are removed
where an order without them exists."""

from __future__ import annotations

from itertools import combinations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mesh.graph.layout import Layout, layered_layout


def _overlap(layout: Layout[int]) -> bool:
    for a, b in combinations(layout.boxes.values(), 2):
        if (
            a.x < b.x + b.width
            and b.x < a.x + a.width
            and a.y < b.y + b.height
            and b.y < a.y + a.height
        ):
            return True
    return False


def test_a_chain_is_one_row_left_to_right() -> None:
    layout = layered_layout(["source", "map", "sink"], [("source", "map"), ("map", "sink")])
    boxes = layout.boxes
    assert boxes["source"].x < boxes["map"].x < boxes["sink"].x
    assert boxes["source"].y == boxes["map"].y == boxes["sink"].y == 0
    assert (layout.width, layout.height) == (3 * 180 + 2 * 80, 64)
    first = layout.edges[0]
    assert first.points == ((180.0, 32.0), (260.0, 32.0))


def test_a_diamond_has_its_branches_in_one_column_and_centred_ends() -> None:
    layout = layered_layout(["a", "b", "c", "d"], [("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")])
    b, c = layout.boxes["b"], layout.boxes["c"]
    assert b.x == c.x and b.y != c.y
    assert layout.boxes["a"].y == layout.boxes["d"].y == (b.y + c.y) / 2


def test_a_side_input_sits_just_before_its_consumer() -> None:
    # main: s -> m1 -> m2 -> join; side: t -> join (t would start in column 0)
    layout = layered_layout(
        ["s", "m1", "m2", "t", "join"],
        [("s", "m1"), ("m1", "m2"), ("m2", "join"), ("t", "join")],
    )
    assert layout.boxes["t"].x == layout.boxes["m2"].x
    assert all(len(edge.points) == 2 for edge in layout.edges)


def test_long_edges_bend_around_the_columns_they_cross() -> None:
    layout = layered_layout(["a", "b", "c"], [("a", "b"), ("b", "c"), ("a", "c")])
    long = next(e for e in layout.edges if (e.source, e.target) == ("a", "c"))
    assert len(long.points) == 4  # out of a, in and out of column 1, into c
    assert not _overlap(layout)  # type: ignore[arg-type]


def test_crossings_are_undone() -> None:
    # Given crosswise: a1 feeds b2, a2 feeds b1; the order puts b2 beside a1.
    layout = layered_layout(["a1", "a2", "b1", "b2"], [("a1", "b2"), ("a2", "b1")])
    boxes = layout.boxes
    assert (boxes["a1"].y < boxes["a2"].y) == (boxes["b2"].y < boxes["b1"].y)


def test_bad_graphs_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match="cycle"):
        layered_layout([1, 2], [(1, 2), (2, 1)])
    with pytest.raises(ValueError, match="unknown node"):
        layered_layout([1], [(1, 9)])
    empty = layered_layout([], [])
    assert (empty.width, empty.height, empty.boxes, empty.edges) == (0, 0, {}, ())


@st.composite
def dags(draw: st.DrawFn) -> tuple[list[int], list[tuple[int, int]]]:
    count = draw(st.integers(1, 14))
    pairs = [(a, b) for a in range(count) for b in range(a + 1, count)]
    edges = draw(st.lists(st.sampled_from(pairs), unique=True, max_size=24)) if pairs else []
    return list(range(count)), edges


@given(dags())
@settings(max_examples=150, deadline=None)
def test_any_dag_lays_out_without_overlaps_and_edges_going_right(
    graph: tuple[list[int], list[tuple[int, int]]],
) -> None:
    nodes, edges = graph
    layout = layered_layout(nodes, edges)
    assert set(layout.boxes) == set(nodes)
    assert not _overlap(layout)
    for box in layout.boxes.values():
        assert box.x >= 0 and box.x + box.width <= layout.width
        assert box.y >= 0 and box.y + box.height <= layout.height
    assert [(e.source, e.target) for e in layout.edges] == edges
    for edge in layout.edges:
        source, target = layout.boxes[edge.source], layout.boxes[edge.target]
        assert edge.points[0] == (source.x + source.width, source.y + source.height / 2)
        assert edge.points[-1] == (target.x, target.y + target.height / 2)
        xs = [x for x, _ in edge.points]
        assert xs == sorted(xs) and xs[0] < xs[-1]
    assert layered_layout(nodes, edges) == layout  # deterministic

"""A layered drawing of a job's task graph, left to right, for the dashboard.

The page draws boxes and polylines at the coordinates computed here, so the layout is
deterministic, tested without a browser, and computed once per graph (the structure of
a running job never changes; only its figures do). The method is the classic layered
one, kept small for graphs of a few to a few dozen tasks:

1. *Layers*: each task one column right of its furthest input (longest path); a source
   then moves right to sit just before its first consumer, so that a side input does
   not stretch across the page.
2. *Dummies*: an edge spanning several columns passes through a point in each, so that
   it can bend around the boxes in between.
3. *Order*: within each column, tasks are sorted by the mean position of their
   neighbours (barycenters), sweeping right then left a few times; the order with the
   fewest edge crossings is kept.
4. *Coordinates*: columns are spaced evenly; each is centred on the tallest.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Generic, TypeVar

__all__ = ["Box", "EdgePath", "Layout", "layered_layout"]

N = TypeVar("N", bound=Hashable)

_SWEEPS = 8


@dataclass(frozen=True)
class Box:
    """Where one task is drawn: its top-left corner and size."""

    x: float
    y: float
    width: float
    height: float


@dataclass(frozen=True)
class EdgePath(Generic[N]):
    """One edge, from the right side of its source's box to the left side of its
    target's, through a point in each column it crosses."""

    source: N
    target: N
    points: tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class Layout(Generic[N]):
    """The whole drawing: its size, every box and every edge."""

    width: float
    height: float
    boxes: dict[N, Box]
    edges: tuple[EdgePath[N], ...]


@dataclass(frozen=True)
class _Dummy:
    """A point of a long edge in a column it crosses."""

    edge: int
    column: int


def layered_layout(
    nodes: Sequence[N],
    edges: Sequence[tuple[N, N]],
    *,
    box: tuple[float, float] = (180.0, 64.0),
    gap: tuple[float, float] = (80.0, 28.0),
) -> Layout[N]:
    """Lay out the DAG of ``nodes`` and ``edges`` (each ``(source, target)``), boxes of
    size ``box``, ``gap`` apart across and down; ValueError if it has a cycle or an edge
    names an unknown node."""
    known = set(nodes)
    for source, target in edges:
        if source not in known or target not in known:
            raise ValueError(f"edge {source!r} -> {target!r} names an unknown node")
    column = _columns(nodes, edges)
    order = _order(nodes, edges, column)
    width, height = box
    gap_x, gap_y = gap
    tallest = max((len(c) for c in order), default=0)
    full_height = max(tallest * height + (tallest - 1) * gap_y, 0.0)
    position: dict[N | _Dummy, tuple[float, float]] = {}
    for index, members in enumerate(order):
        used = len(members) * height + (len(members) - 1) * gap_y
        top = (full_height - used) / 2
        for rank, member in enumerate(members):
            position[member] = (index * (width + gap_x), top + rank * (height + gap_y))
    boxes = {node: Box(*position[node], width, height) for node in nodes}
    paths = []
    for number, (source, target) in enumerate(edges):
        sx, sy = position[source]
        tx, ty = position[target]
        points = [(sx + width, sy + height / 2)]
        for between in range(column[source] + 1, column[target]):
            dx, dy = position[_Dummy(number, between)]
            points += [(dx, dy + height / 2), (dx + width, dy + height / 2)]
        points.append((tx, ty + height / 2))
        paths.append(EdgePath(source, target, tuple(points)))
    columns = len(order)
    full_width = max(columns * width + (columns - 1) * gap_x, 0.0)
    return Layout(full_width, full_height, boxes, tuple(paths))


def _columns(nodes: Sequence[N], edges: Sequence[tuple[N, N]]) -> dict[N, int]:
    inputs: dict[N, list[N]] = {node: [] for node in nodes}
    outputs: dict[N, list[N]] = {node: [] for node in nodes}
    for source, target in edges:
        inputs[target].append(source)
        outputs[source].append(target)
    column: dict[N, int] = {}
    waiting = {node: len(inputs[node]) for node in nodes}
    ready = [node for node in nodes if waiting[node] == 0]
    topological: list[N] = []
    while ready:
        node = ready.pop(0)
        topological.append(node)
        column[node] = max((column[i] + 1 for i in inputs[node]), default=0)
        for target in outputs[node]:
            waiting[target] -= 1
            if waiting[target] == 0:
                ready.append(target)
    if len(topological) != len(nodes):
        cyclic = [node for node in nodes if node not in column]
        raise ValueError(f"the graph has a cycle through {cyclic!r}")
    for node in reversed(topological):
        if not inputs[node] and outputs[node]:
            column[node] = min(column[t] for t in outputs[node]) - 1
    return column


def _order(
    nodes: Sequence[N], edges: Sequence[tuple[N, N]], column: dict[N, int]
) -> list[list[N | _Dummy]]:
    columns = max(column.values(), default=-1) + 1
    order: list[list[N | _Dummy]] = [[] for _ in range(columns)]
    for node in nodes:
        order[column[node]].append(node)
    # Each edge as a chain of single-column links, through its dummies.
    links: list[tuple[N | _Dummy, N | _Dummy]] = []
    for number, (source, target) in enumerate(edges):
        chain: list[N | _Dummy] = [source]
        for between in range(column[source] + 1, column[target]):
            dummy = _Dummy(number, between)
            order[between].append(dummy)
            chain.append(dummy)
        chain.append(target)
        links += pairwise(chain)
    left: dict[N | _Dummy, list[N | _Dummy]] = {m: [] for c in order for m in c}
    right: dict[N | _Dummy, list[N | _Dummy]] = {m: [] for c in order for m in c}
    for a, b in links:
        right[a].append(b)
        left[b].append(a)
    best = [list(c) for c in order]
    fewest = _crossings(best, right)
    for sweep in range(_SWEEPS):
        forward = sweep % 2 == 0
        indices = range(1, columns) if forward else range(columns - 2, -1, -1)
        for index in indices:
            fixed = order[index - 1] if forward else order[index + 1]
            rank = {member: r for r, member in enumerate(fixed)}
            neighbours = left if forward else right
            barycenter: dict[N | _Dummy, float] = {}
            for place, member in enumerate(order[index]):
                near = [rank[n] for n in neighbours[member]]
                # no neighbour there: it keeps its place
                barycenter[member] = sum(near) / len(near) if near else float(place)
            order[index] = sorted(order[index], key=barycenter.__getitem__)
        crossings = _crossings(order, right)
        if crossings < fewest:
            best, fewest = [list(c) for c in order], crossings
    return best


def _crossings(order: list[list[N | _Dummy]], right: dict[N | _Dummy, list[N | _Dummy]]) -> int:
    """Edge crossings between every two neighbouring columns (pairwise; fine for the
    few dozen links of a job graph)."""
    total = 0
    for here, there in pairwise(order):
        rank = {member: r for r, member in enumerate(there)}
        links = [(r, rank[b]) for r, a in enumerate(here) for b in right[a]]
        for i, (a1, b1) in enumerate(links):
            for a2, b2 in links[i + 1 :]:
                if (a1 - a2) * (b1 - b2) < 0:
                    total += 1
    return total

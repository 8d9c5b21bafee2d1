"""ui.graph_layout: the attribution graph's columns spread over the width, and labels that never overlap."""

from __future__ import annotations

import pytest

from ui.graph_layout import (ASSUMED_PLOT_PX, column_widths, label_boxes, pack_lines, place_labels, spread_row, spread_x,
                             text_px)


def _overlap(a, b) -> bool:
    return a[0] < b[1] and b[0] < a[1] and a[2] < b[3] and b[2] < a[3]


def test_columns_get_room_by_what_they_hold_and_add_up_to_the_width():
    # 16 positions: 28 nodes in one cell at position 6, 16 at 15, one elsewhere (the induction preset's shape).
    counts = {(0, p): 1 for p in range(16)} | {(1, 6): 28, (2, 15): 16, (4, 15): 10}
    widths = column_widths(counts, 16)
    assert sum(widths) == pytest.approx(16)
    assert widths[6] / widths[15] == pytest.approx(28 / 16)
    floor = min(widths)
    assert all(w == pytest.approx(floor) for p, w in enumerate(widths) if p not in (6, 15))
    assert floor == pytest.approx(0.35)  # the lone positions keep a third of an even share
    assert column_widths({(0, 0): 1000, (0, 1): 1}, 2) == pytest.approx([2 - 0.35, 0.35])
    assert column_widths({(0, 0): 2, (0, 1): 2}, 2) == pytest.approx([1, 1])


def test_nodes_of_a_cell_are_spread_evenly_inside_their_column_in_the_given_order():
    rows = [1] * 28 + [0] * 16 + [4] * 10
    positions = [6] * 28 + list(range(16)) + [15] * 10
    order = list(range(54))[::-1]  # reversed: the last node of a cell goes leftmost
    x, centres = spread_x(rows, positions, 16, order=order)
    widths = column_widths({(r, p): 1 for r, p in zip(rows, positions)} | {(1, 6): 28, (4, 15): 10}, 16)
    starts = [sum(widths[:p]) for p in range(16)]
    for i, p in enumerate(positions):
        assert starts[p] < x[i] < starts[p] + widths[p]
    busy = [x[i] for i in range(28)]
    gaps = [b - a for a, b in zip(sorted(busy), sorted(busy)[1:])]
    assert min(gaps) == pytest.approx(max(gaps)) and min(gaps) == pytest.approx(widths[6] / 28)
    assert busy == sorted(busy, reverse=True)  # order: increasing key left to right
    assert centres[6] == pytest.approx(starts[6] + widths[6] / 2)
    # The layout uses the whole width, not one side of it.
    assert min(x) < 1.0 and max(x) > 15.0


def test_packing_puts_labels_that_would_touch_on_other_lines():
    lines = pack_lines([0, 10, 100, 20], [30, 30, 30, 30], gap=4)
    assert lines[0] == 0 and lines[2] == 0 and lines[1] != lines[0] and lines[3] not in (lines[1],) and lines[3] != 0


@pytest.mark.parametrize("n_labels", [1, 3, 10, 40, 200])
def test_placed_labels_never_overlap(n_labels):
    # Ten targets in one column of width 1 out of 16 positions: the case that piled labels on one another.
    texts = [f"'␣target_{i}_long_word'" for i in range(n_labels)]
    xs = [15.0 + (j + 0.5) / n_labels for j in range(n_labels)]
    drawn, lines = place_labels(texts, xs, 16.0, max_chars=12, max_lines=3)
    assert all(len(t) <= 12 for t in drawn) and max(lines) < 3
    assert all(t == full or t.endswith("…") and full.startswith(t[:-1]) or t == "" for t, full in zip(drawn, texts))
    boxes = label_boxes(drawn, xs, lines, 16.0)
    assert all(not _overlap(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    if n_labels <= 3:
        assert drawn == [t[:11] + "…" for t in texts] or all(t for t in drawn)  # room: every label drawn


def test_short_labels_with_room_stay_whole_on_one_line():
    drawn, lines = place_labels(["a", "bb", "ccc"], [1.0, 8.0, 15.0], 16.0)
    assert drawn == ["a", "bb", "ccc"] and lines == [0, 0, 0]
    assert text_px("日本") == 2 * text_px("ab")  # wide characters count twice
    assert ASSUMED_PLOT_PX > 0


def test_targets_spread_right_aligned_over_the_room_their_labels_need():
    targets = ["'␣example'", "'case'", "'quence'", "'break'", "'␣sequences'", "'stant'", "'<0x92> (id 241)'", "'sequence'",
               "'␣useful'", "'␣iterable'"]
    xs = spread_row(targets, 16.0)
    assert xs == sorted(xs) and max(xs) < 16.0 and min(xs) > 0.0
    gaps = [b - a for a, b in zip(xs, xs[1:])]
    assert max(gaps) == pytest.approx(min(gaps))
    drawn, lines = place_labels(targets, xs, 16.0, max_lines=3)
    assert all(t == full or len(t) == 12 for t, full in zip(drawn, targets))  # whole, or cut only at 12 characters
    boxes = label_boxes(drawn, xs, lines, 16.0)
    assert all(not _overlap(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    few = spread_row(["'a'", "'b'"], 16.0)
    assert 14.0 < few[0] < few[1] < 16.0  # two short targets stay near the last position

"""Where the attribution graph's nodes and labels go: pure functions on positions, no plotly, no streamlit.

x: every token position gets a column whose width is proportional to the most nodes it holds in
one row (a layer, or the embeddings, or the logits), at least ``min_share`` of the total; nodes of
one cell spread evenly over the column. Total width: the number of positions, so the axis reads
in "positions" and a prompt of one busy position no longer piles its nodes into one spot.

Labels: drawn text is cut to ``max_chars`` (the full text stays in the hover), its box estimated
in pixels for a chart at least ``ASSUMED_PLOT_PX`` wide (a wider chart only adds room), and
labels of one row are stacked into as few lines as keep the boxes apart (greedy interval
packing). The targets (all at the last position) get their own row spread, right-aligned over the
room their labels need (:func:`spread_row`). Past ``max_lines`` the labels are cut shorter, and as a last resort left undrawn
(hover only), so no two drawn boxes overlap.
"""

from __future__ import annotations

import unicodedata
from typing import Hashable, Mapping, Sequence

ASSUMED_PLOT_PX = 600.0  # the narrowest plot area we lay out for (Streamlit's centred column, minus margins)
CHAR_PX = 6.5  # average glyph width at the labels' 10 px font; a wide (CJK) character counts twice
LINE_PX = 13.0  # one line of labels
GAP_PX = 4.0


def column_widths(cell_counts: Mapping[tuple[Hashable, int], int], n_positions: int, min_share: float = 0.35) -> list[float]:
    """Width of each position's column: proportional to its busiest cell (nodes in one row at that position),
    but at least ``min_share`` of an even share (1); the widths add up to ``n_positions``."""
    if n_positions <= 0:
        return []
    need = [1.0] * n_positions
    for (_, pos), count in cell_counts.items():
        need[pos] = max(need[pos], float(count))
    floored: set[int] = set()
    while True:  # columns below the floor get the floor; the others share the rest in proportion
        free = [p for p in range(n_positions) if p not in floored]
        scale = (n_positions - min_share * len(floored)) / sum(need[p] for p in free)
        below = {p for p in free if need[p] * scale < min_share}
        if not below:
            return [min_share if p in floored else need[p] * scale for p in range(n_positions)]
        floored |= below


def spread_x(rows: Sequence[Hashable], positions: Sequence[int], n_positions: int,
             order: Sequence[float] | None = None) -> tuple[list[float], list[float]]:
    """(x of each node, centre of each position's column). Nodes of one (row, position) cell are spread evenly
    across the column, in increasing ``order`` (default: as given)."""
    counts: dict[tuple[Hashable, int], int] = {}
    for row, pos in zip(rows, positions):
        counts[(row, pos)] = counts.get((row, pos), 0) + 1
    widths = column_widths(counts, n_positions)
    starts = [0.0] * n_positions
    for p in range(1, n_positions):
        starts[p] = starts[p - 1] + widths[p - 1]
    centres = [s + w / 2 for s, w in zip(starts, widths)]
    cells: dict[tuple[Hashable, int], list[int]] = {}
    for i, key in enumerate(zip(rows, positions)):
        cells.setdefault(key, []).append(i)
    x = [0.0] * len(positions)
    for (_, pos), members in cells.items():
        if order is not None:
            members.sort(key=lambda i: order[i])
        slot = widths[pos] / len(members)
        for j, i in enumerate(members):
            x[i] = starts[pos] + (j + 0.5) * slot
    return x, centres


def text_px(text: str) -> float:
    return CHAR_PX * sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def shorten(text: str, max_chars: int) -> str:
    return text if len(text) <= max_chars else text[: max(max_chars - 1, 1)] + "…"


def pack_lines(centres_px: Sequence[float], widths_px: Sequence[float], gap: float = GAP_PX) -> list[int]:
    """Line (0, 1, ...) of each label so that labels on one line keep ``gap`` apart: greedy, left to right,
    each on the lowest line where it fits."""
    line_ends: list[float] = []
    lines = [0] * len(centres_px)
    for i in sorted(range(len(centres_px)), key=lambda i: centres_px[i] - widths_px[i] / 2):
        left, right = centres_px[i] - widths_px[i] / 2, centres_px[i] + widths_px[i] / 2
        for line, end in enumerate(line_ends):
            if left >= end + gap:
                line_ends[line] = right
                lines[i] = line
                break
        else:
            line_ends.append(right)
            lines[i] = len(line_ends) - 1
    return lines


def place_labels(texts: Sequence[str], xs: Sequence[float], x_span: float, *, max_chars: int = 12,
                 max_lines: int = 3, plot_px: float = ASSUMED_PLOT_PX) -> tuple[list[str], list[int]]:
    """(drawn text, line) for labels of one row at data x ``xs`` on an axis ``x_span`` wide: cut to ``max_chars``,
    stacked into at most ``max_lines`` lines, cut shorter while they do not fit; a label that still does not fit
    is drawn empty (its hover keeps it)."""
    px = [x / x_span * plot_px for x in xs] if x_span > 0 else [0.0] * len(xs)
    for limit in range(max_chars, 1, -1):
        drawn = [shorten(t, limit) for t in texts]
        lines = pack_lines(px, [text_px(t) for t in drawn])
        if not lines or max(lines) < max_lines:
            return drawn, lines
    # Still too many: keep what fits on the lines, one character and "…" each, and draw the rest empty.
    drawn = [shorten(t, 2) for t in texts]
    lines = pack_lines(px, [text_px(t) for t in drawn])
    return [t if line < max_lines else "" for t, line in zip(drawn, lines)], [min(line, max_lines - 1) for line in lines]


def spread_row(texts: Sequence[str], x_span: float, *, max_chars: int = 12,
               plot_px: float = ASSUMED_PLOT_PX) -> list[float]:
    """x of each label of a row not tied to positions (the targets, all at the last position): evenly, right-aligned,
    over as much of the width as the labels (cut to ``max_chars``) need side by side, at most all of it."""
    if not texts:
        return []
    need_px = sum(text_px(shorten(t, max_chars)) + 2 * GAP_PX for t in texts)
    span = min(x_span, need_px / plot_px * x_span)
    slot = span / len(texts)
    return [x_span - span + (j + 0.5) * slot for j in range(len(texts))]


def label_boxes(texts: Sequence[str], xs: Sequence[float], lines: Sequence[int], x_span: float,
                plot_px: float = ASSUMED_PLOT_PX) -> list[tuple[float, float, float, float]]:
    """(left, right, bottom, top) pixel boxes of the drawn labels (empty ones left out): what a test checks."""
    boxes = []
    for text, x, line in zip(texts, xs, lines):
        if not text:
            continue
        centre, width = x / x_span * plot_px, text_px(text)
        boxes.append((centre - width / 2, centre + width / 2, line * LINE_PX, (line + 1) * LINE_PX))
    return boxes

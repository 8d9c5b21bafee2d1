"""Tokens as a strip of coloured HTML spans (red: the value rises, blue: it falls), with hover numbers.

Every token string is user-controlled (the corpus is an upload): it goes through
``html.escape`` after whitespace is made visible, and so does every hover title.
"""

from __future__ import annotations

import html
import math
from typing import Optional, Sequence

from ui.charts import visible


def _colour(value: float, scale: float) -> str:
    if not math.isfinite(value) or scale <= 0:
        return "transparent"
    alpha = min(1.0, abs(value) / scale) * 0.85
    rgb = "214,39,40" if value > 0 else "31,119,180"
    return f"rgba({rgb},{alpha:.3f})"


def token_strip(tokens: Sequence[str], values: Sequence[Optional[float]], scale: float, *,
                highlight: Optional[int] = None, titles: Optional[Sequence[str]] = None, first_index: int = 0) -> str:
    """One line of spans; ``values[i]`` colours token i (None/NaN: uncoloured); ``titles`` are plain text hovers."""
    spans = []
    for i, token in enumerate(tokens):
        value = values[i] if i < len(values) else None
        value = float("nan") if value is None else float(value)
        title = titles[i] if titles is not None else (f"{first_index + i}: {token!r}" + (
            f" Δ={value:+.3f}" if math.isfinite(value) else ""))
        border = "outline:2px solid #111;" if highlight == i else ""
        spans.append(
            f'<span title="{html.escape(title, quote=True)}" style="background:{_colour(value, scale)};{border}'
            f'padding:0 1px;border-radius:2px;white-space:pre">{html.escape(visible(token), quote=True)}</span>')
    return '<div style="font-family:monospace;line-height:1.9;word-break:break-all">' + "".join(spans) + "</div>"

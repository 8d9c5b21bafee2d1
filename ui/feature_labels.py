"""One name for a transcoder feature on every page: its id plus the tokens it fires on most and the tokens it
promotes most, read from the precomputed dashboards (``lens_core.features.dashboards``).

    names = feature_names(ctx)          # once per page run
    names.note()                        # with no dashboards: one caption saying so (not one per feature)
    names(1, 42)                        # "L1#42 on '␣the' '␣a' → '␣cat'"
    names.short(1, 42)                  # "L1#42:'␣the'→'␣cat'" for chart ticks and dense tables (no space: token
                                        # axes show spaces as ␣)

Labels are plain text (token names from ``ui.token_names``): escape them where they reach HTML or Markdown.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Optional

import streamlit as st

from lens_core.experiments._common import str_tokens
from lens_core.features import FeaturesUnavailable
from ui.graph_layout import shorten
from ui.token_names import token_name

NO_DASHBOARDS = ("Features are named by id only (layer#index): there are no dashboards for these transcoders, so their "
                 "top tokens are unknown (`python -m training.build_feature_dashboards` writes them).")
NO_DASHBOARDS_FOR_DICTIONARY = ("Features are named by id only (layer#index): held-out dashboards are precomputed only for "
                                "the bundled transcoders, so this dictionary's top tokens are unknown.")
FEATURE_ID = re.compile(r"L(\d+)#(\d+)")


def _stamp() -> tuple:
    from lens_core.features import transcoder

    directory = Path(transcoder.DEFAULT_TRANSCODERS_DIR)  # read at call time: new files are new entries
    weights = directory / transcoder.WEIGHTS_FILE
    return str(directory), weights.stat().st_mtime_ns if weights.is_file() else None


@st.cache_resource(max_entries=2, show_spinner=False)
def _dashboards(directory: str, version):
    from lens_core.features.dashboards import Dashboards

    try:
        return Dashboards(directory)
    except FeaturesUnavailable:
        return None


def dashboards_for(ctx) -> Any:
    """The bundled transcoders' dashboards (None when absent, for another model, or when the page uses another
    dictionary than the bundled transcoders: ``ctx.dictionary``, set by ``attribution_graph_view.require_dictionary``)."""
    if getattr(ctx.model.cfg, "model_name", None) != "default":
        return None
    chosen = getattr(ctx, "dictionary", None)
    if chosen is not None and not chosen.bundled:
        return None
    return _dashboards(*_stamp())


def token_texts(model: Any, ids: list[int]) -> list[str]:
    """Each token id as readers tell them apart (``ui.token_names``: a partial UTF-8 byte shows its bytes and id)."""
    return [token_name(model, i, t) for i, t in zip(ids, str_tokens(model, ids))] if ids else []


def parse_feature_id(text: str) -> Optional[tuple[int, int]]:
    """(layer, index) of the first ``L<layer>#<index>`` in a label, or None."""
    match = FEATURE_ID.search(str(text))
    return (int(match.group(1)), int(match.group(2))) if match else None


class FeatureNames:
    """Feature labels for one page run (memoised: a table may name the same feature many times)."""

    def __init__(self, model: Any, dash: Any, why_none: str = NO_DASHBOARDS):
        self.model, self.dash, self.why_none = model, dash, why_none
        self._tokens: dict[tuple[int, int], tuple[list[str], list[str]]] = {}
        self._noted = False

    @property
    def available(self) -> bool:
        return self.dash is not None

    def tokens(self, layer: int, index: int) -> tuple[list[str], list[str]]:
        """(tokens it fires on most, tokens it promotes most), three each at most; empty without a dashboard."""
        key = (int(layer), int(index))
        if key not in self._tokens:
            inputs: list[int] = []
            outputs: list[int] = []
            if self.dash is not None:
                try:
                    unit = self.dash.unit("feature", key[0], key[1])
                except FeaturesUnavailable:
                    unit = {}
                inputs = [i["token"] for i in unit.get("inputs", [])[:3]]
                outputs = [t for t, _ in unit.get("logits_up", [])[:3]]
            self._tokens[key] = (self._names(inputs), self._names(outputs))
        return self._tokens[key]

    def _names(self, ids: list[int]) -> list[str]:
        return token_texts(self.model, ids)

    def __call__(self, layer: int, index: int) -> str:
        """``L1#42 on 'a' 'b' 'c' → 'x' 'y' 'z'`` (just ``L1#42`` without its dashboard)."""
        inputs, outputs = self.tokens(layer, index)
        parts = [f"L{layer}#{index}"]
        if inputs:
            parts.append("on " + " ".join(repr(t) for t in inputs))
        if outputs:
            parts.append("→ " + " ".join(repr(t) for t in outputs))
        return " ".join(parts)

    def short(self, layer: int, index: int, max_chars: int = 10) -> str:
        """``L1#42:'a'→'x'``: the top input and promoted token, each cut to ``max_chars``."""
        inputs, outputs = self.tokens(layer, index)
        tail = ""
        if inputs or outputs:
            tail = ":" + (repr(shorten(inputs[0], max_chars)) if inputs else "") + \
                   ("→" + repr(shorten(outputs[0], max_chars)) if outputs else "")
        return f"L{layer}#{index}{tail}"

    def note(self, where=st) -> None:
        """Without dashboards, one caption saying why features are named by id (once per page run)."""
        if self.dash is None and not self._noted:
            self._noted = True
            where.caption(self.why_none)


def feature_names(ctx) -> FeatureNames:
    chosen = getattr(ctx, "dictionary", None)
    other = chosen is not None and chosen.other
    return FeatureNames(ctx.model, dashboards_for(ctx), NO_DASHBOARDS_FOR_DICTIONARY if other else NO_DASHBOARDS)

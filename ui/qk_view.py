"""Why a head attends where it does: the attribution graph page's QK section (``qk_attribution``).

Pick a layer, head, query and key position (the key defaults to the one the head attends to most); the
section shows the summary in words, the pairs of node groups behind the head's preference for that key,
and the top single (query-side node) x (key-side node) pairs with their feature labels."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from lens_core.experiments.graphs._qk_split import check_positions, unsupported_reason
from lens_core.experiments.graphs.qk_attribution import QKAttributionRequest, node_group, qk_attribution
from ui import state
from ui.charts import visible
from ui.feature_labels import FeatureNames
from ui.errors import guard, md_escape
from ui.model import run_experiment


def _node_label(names: FeatureNames, kind: str, layer: int, index: int, token: str) -> str:
    if kind == "feature":
        return names(layer, index)
    if kind == "embedding":
        return f"embedding {token!r}"
    if kind == "constant":
        return "constant (ln1 bias through W_Q/W_K, b_Q/b_K)"
    return node_group(kind, layer, index)


def qk_section(ctx, model, ids: list[int], fingerprint: str, dash, where=st) -> None:
    """The section; every bad choice ends in a message in the page, never a traceback."""
    where.subheader("Why a head attends where it does (QK attribution)")
    cfg = model.cfg
    reason = unsupported_reason(model, 0)
    if reason:
        where.info(md_escape(reason), icon=":material/info:")
        return
    n_pos = len(ids)
    cols = where.columns(4)
    layer = state.int_slider("Layer", 0, cfg.n_layers - 1, key="qk_layer", default=min(1, cfg.n_layers - 1), where=cols[0])
    head = state.int_slider("Head", 0, cfg.n_heads - 1, key="qk_head", default=0, where=cols[1])
    query = state.int_slider("Query position", 0, n_pos - 1, key="qk_query", default=n_pos - 1, where=cols[2])
    key = state.int_input("Key position (-1: the most attended)", -1, query, key="qk_key", default=-1, where=cols[3])
    if key >= 0:
        try:
            check_positions(model, layer, head, query, key, n_pos)
        except ValueError as exc:  # our own plain-words messages (window, causal)
            where.warning(md_escape(str(exc)), icon=":material/warning:")
            return
    request = QKAttributionRequest(tokens=tuple(ids), layer=layer, head=head, query_pos=query,
                                   key_pos=None if key < 0 else key, transcoders=fingerprint)
    with guard("splitting the attention score", stop=False, where=where):
        chosen = getattr(ctx, "dictionary", None)  # the page's dictionary (ui.attribution_graph_view.require_dictionary)
        result = run_experiment(model, "qk_attribution", qk_attribution, request, device=ctx.device,
                                **(chosen.run_kwargs() if chosen is not None else {}))
        where.markdown(md_escape(result.summary))
        tokens = [visible(t) for t in result.str_tokens]
        contrast = result.group_contrast
        order = contrast.flatten().argsort(descending=True)[:8].tolist()
        n_k = contrast.shape[1]
        where.caption("Pairs of node groups, by their part of the score's excess over the mean of the other keys "
                      "(what the softmax acts on); 'raw' is their part of the score itself. Both sum exactly.")
        where.dataframe(pd.DataFrame({
            "query side": [result.query_groups[i // n_k] for i in order],
            "key side": [result.key_groups[i % n_k] for i in order],
            "part of the excess": [round(float(contrast.flatten()[i]), 3) for i in order],
            "raw": [round(float(result.group_raw.flatten()[i]), 3) for i in order]}), hide_index=True, key="qk_groups")
        qt, kt = tokens[result.query_pos], tokens[result.key_pos]
        names = FeatureNames(model, dash)  # one per table: a node heads many of its pairs
        where.dataframe(pd.DataFrame({
            f"query node (@{result.query_pos})": [_node_label(names, result.query_kind[a], result.query_layer[a],
                                                              result.query_index[a], qt) for a in result.top_query],
            f"key node (@{result.key_pos})": [_node_label(names, result.key_kind[b], result.key_layer[b],
                                                          result.key_index[b], kt) for b in result.top_key],
            "part of the score": [round(v, 3) for v in result.top_value]}), hide_index=True, key="qk_pairs")

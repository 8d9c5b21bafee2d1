"""What the attribution-graph page shows besides the chart (``ui.attribution_graph_chart``): feature labels from
the dashboards, token and target names, a compact feature card, supernodes kept in the URL. No model math here."""

from __future__ import annotations

import html
import json
import re
from typing import Any, Optional

import pandas as pd
import streamlit as st

from lens_core.features import FeaturesUnavailable, load_transcoders
from ui.feature_labels import FeatureNames, _stamp, dashboards_for, token_texts  # noqa: F401  (re-exported)
from ui.token_names import token_name

SUPERNODES_KEY = "supernodes"


@st.cache_resource(max_entries=8, show_spinner=False)
def _transcoders(name: str, dtype: str, device: str, stamp: tuple, _model: Any):
    """(transcoders, fingerprint) of a loaded model, or (None, why not). ``stamp`` names the files' version."""
    try:
        tset = load_transcoders(_model)
    except FeaturesUnavailable as exc:
        return None, str(exc)
    return tset, tset.fingerprint()


def transcoders_for(ctx) -> tuple[Any, str]:
    return _transcoders(ctx.model_name, ctx.dtype, ctx.device, _stamp(), ctx.model)


# Dictionary kinds a page cannot use, and why, in words (ui.dictionary_choice reads the kind from the files).
GRAPH_REFUSES = {"SAE": "an SAE reconstructs one activation from itself; the graph replaces each MLP, so it needs "
                        "transcoders (MLP input -> MLP output): pick a transcoder set, skip transcoders or a CLT"}


def require_dictionary(ctx, missing: str, refuse: dict[str, str] | None = None):
    """The page's feature dictionary (``ui.dictionary_choice``: the settings' ``[features]`` entries for the loaded
    model, a choice in the page when there are several), as a ``Chosen`` (``.dictionary``, ``.fingerprint``,
    ``.run_kwargs()``). Without one, say why (``missing`` names what the page cannot show), offer the bundled model
    when it is allowed, and stop the page. ``refuse``: kind -> why this page cannot use that kind, in words."""
    from ui.dictionary_choice import choose_dictionary
    from ui.errors import md_escape

    chosen = choose_dictionary(ctx, lambda: transcoders_for(ctx))
    ctx.dictionary = chosen  # the page's labels read the bundled dashboards only for the bundled transcoders
    if chosen.dictionary is not None and chosen.kind in (refuse or {}):
        st.warning(md_escape(f"{missing} with this {chosen.kind}: {refuse[chosen.kind]}"), icon=":material/warning:")
        st.stop()
    if chosen.dictionary is not None:
        return chosen
    st.warning(md_escape(f"{missing}: {chosen.why}"), icon=":material/warning:")
    if ctx.settings.model_allowed("default") and ctx.model_name != "default":
        def use_bundled() -> None:
            st.session_state["model"] = "default"
            st.query_params["model"] = "default"
        st.button("Use the bundled model (it has transcoders)", on_click=use_bundled, key="use_bundled")
    st.stop()


def require_transcoders(ctx, missing: str) -> tuple[Any, str]:
    """(dictionary, fingerprint) of :func:`require_dictionary`."""
    chosen = require_dictionary(ctx, missing)
    return chosen.dictionary, chosen.fingerprint


def position_names(model, result) -> list[str]:
    """The prompt's tokens as readers tell them apart (``ui.token_names``: a partial UTF-8 byte shows its bytes and id)."""
    return [token_name(model, i, t) for i, t in zip(result.token_ids, result.str_tokens)]


def target_names(model, result) -> list[str]:
    """Each target as a reader tells it apart: a token (bytes and id when it is part of a character), or ``x − y``."""
    if result.direction:
        x, y = result.direction
        return [f"{token_name(model, x)} − {token_name(model, y)}"]
    return [token_name(model, i, t) for i, t in zip(result.logit_ids, result.logit_tokens)]


def node_labels(model, result, dash) -> list[str]:
    labels = []
    tokens, targets = position_names(model, result), target_names(model, result)
    names = FeatureNames(model, dash)
    describe = {
        "feature": lambda layer, pos, feature, token: names(layer, feature),
        "error": lambda layer, pos, feature, token: f"error L{layer} @{pos} {token!r}",
        "embedding": lambda layer, pos, feature, token: f"{token!r} @{pos}",
        "logit": lambda layer, pos, feature, token:
            f"logit {targets[result.logit_ids.index(feature)] if feature in result.logit_ids else targets[0]!r}",
    }
    for kind, layer, pos, feature in zip(result.node_kind, result.node_layer, result.node_pos, result.node_feature):
        labels.append(describe.get(kind, describe["logit"])(layer, pos, feature, tokens[pos]))
    return labels


# ---- the graph's failures a user causes, in plain words -------------------------------------------
GRAPH_DTYPES = ("float32", "bfloat16", "float16")  # half precision: the graph is computed in float32 (its notice says so)


def dtype_problem(dtype: str) -> Optional[str]:
    """Why the graph cannot be built in this dtype, or None (float32, and bfloat16/float16 forward passes, whose
    graph the library computes in float32)."""
    if dtype in GRAPH_DTYPES:
        return None
    return (f"Attribution graphs are built from float32, bfloat16 or float16 forward passes, not {dtype}: pick one of "
            "those as the dtype in the sidebar.")


def graph_failure(exc: BaseException, n_tokens: int) -> Optional[str]:
    """A plain sentence for an attribution graph the library refused to build because the prompt is too big for its
    node budget, or None for any other error."""
    text = str(exc)
    if "budget" not in text:
        return None
    nodes = re.search(r"(\d+) nodes, over the budget of (\d+)", text)
    fit = re.search(r"up to about (\d+) tokens", text)
    what = (f"its graph would have {int(nodes.group(1)):,} nodes, more than the {int(nodes.group(2)):,} this server "
            "builds" if nodes else "its graph would have more nodes than this server builds")
    advice = (f"Prompts of up to about {fit.group(1)} tokens fit; this one has {n_tokens}." if fit
              else f"This one has {n_tokens} tokens.")
    return f"This prompt is too long for an attribution graph: {what}. {advice} Shorten the prompt."


# ---- supernodes in the URL: JSON [[name, node_id, ...], ...] -------------------------------------
def read_supernodes(valid_ids: set[str]) -> tuple[list[list[str]], Optional[str]]:
    """The URL's supernodes restricted to this graph's node ids, and a note when some were dropped."""
    raw = st.query_params.get(SUPERNODES_KEY, "")
    if not raw:
        return [], None
    try:
        data = json.loads(raw)
        groups = [[str(x) for x in g] for g in data if isinstance(g, list) and g]
    except (ValueError, TypeError):
        return [], "The link's supernodes could not be read (not a JSON list of [name, node ids...]); none shown."
    kept, dropped = [], 0
    for g in groups:
        members = [i for i in g[1:] if i in valid_ids]
        dropped += len(g) - 1 - len(members)
        if members:
            kept.append([g[0]] + members)
    note = (f"{dropped} supernode member(s) from the link are not in this graph (other prompt or thresholds) and are not shown."
            if dropped else None)
    return kept, note


def write_supernodes(groups: list[list[str]]) -> None:
    if groups:
        st.query_params[SUPERNODES_KEY] = json.dumps(groups, separators=(",", ":"))
    elif SUPERNODES_KEY in st.query_params:
        del st.query_params[SUPERNODES_KEY]


def feature_card(model, dash, layer: int, index: int, where=st, why_none: str = "") -> None:
    """A compact dashboard: tokens it fires on, tokens it promotes/suppresses, its top contexts. ``why_none``: what
    to say without dashboards (``ui.feature_labels``' note for the page's dictionary)."""
    where.markdown(f"**Feature L{layer}#{index}**")
    if dash is None:
        where.caption(why_none or "No dashboards for these transcoders (training/build_feature_dashboards.py writes them).")
        return
    try:
        unit = dash.unit("feature", layer, index)
    except FeaturesUnavailable as exc:
        where.caption(html.escape(str(exc)))
        return
    where.caption(f"Fires on {100 * unit['density']:.2f}% of held-out positions.")
    cols = where.columns(3)
    inputs = unit.get("inputs", [])[:8]
    cols[0].dataframe(pd.DataFrame({"fires on": token_texts(model, [i["token"] for i in inputs]),
                                    "total activation": [round(i["sum"], 2) for i in inputs]}), hide_index=True)
    up, down = unit["logits_up"][:8], unit["logits_down"][:8]
    cols[1].dataframe(pd.DataFrame({"promotes": token_texts(model, [t for t, _ in up]), "logit": [round(v, 3) for _, v in up]}),
                      hide_index=True)
    cols[2].dataframe(pd.DataFrame({"suppresses": token_texts(model, [t for t, _ in down]),
                                    "logit": [round(v, 3) for _, v in down]}), hide_index=True)
    contexts = []
    for example in unit["top"][:6]:
        tokens = [t for t in example["tokens"] if t >= 0]
        acts = [a for t, a in zip(example["tokens"], example["acts"]) if t >= 0]
        shown = token_texts(model, tokens)
        peak = max(range(len(acts)), key=lambda j: acts[j]) if acts else 0
        text = "".join(f"[{t}]" if j == peak else t for j, t in enumerate(shown))
        contexts.append({"activation": round(example["value"], 3), "context (peak in [ ])": text})
    if contexts:
        where.dataframe(pd.DataFrame(contexts), hide_index=True)

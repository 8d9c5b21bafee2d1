"""Browse examples: ablate one component over a corpus and see where the loss moves most."""

import dataclasses

import numpy as np
import pandas as pd
import streamlit as st

from lens_core.experiments.corpus.browse import (METHODS, BrowseRequest, browse, chunk_requests, combine, parse_component,
                                          request_corpus, resolve_component)
from lens_core.experiments.corpus.browse_example import BrowseExampleRequest, browse_example
from ui import charts, state
from ui.corpus_input import corpus_picker
from ui.errors import guard, md_escape
from ui.export import experiment_snippet, export_bar
from ui.model import run_experiment
from ui.token_html import token_strip
from ui.widgets import app_context

CHUNK = 128  # windows per cached piece of a run: leaving the page keeps the finished pieces
DEFAULT_WINDOWS = 256  # a first view in seconds; the whole corpus is one number away
SHOWN = 20  # ranked rows drawn
CONTEXT = 24  # tokens of context before a ranked token
METHOD_HELP = {"zero": "the activation becomes 0",
               "mean": "its mean over the corpus at the same position",
               "resample": "its value in another window of the corpus, same position (seeded)"}

st.title("Browse examples")
st.caption("Remove one component over every window of a corpus and rank the tokens by how much the loss "
           "changes: where the loss rises most, the component helps most.")
ctx = app_context()
model = ctx.require_model()
cfg = model.cfg

choice = corpus_picker(model)
cols = st.columns([2, 2, 1])
comp_text = state.text_input("Component", key="component", default=f"L{min(1, cfg.n_layers - 1)}H{cfg.n_heads - 1}",
                             where=cols[0], help="A head L1H3, an attention layer L1 attn, an MLP L1 mlp, a neuron L1N42, or a transcoder "
                                  "feature L1F42 (models with transcoders: the bundled one).")
method = state.radio("Ablation", METHODS, key="abl_method", default="zero", where=cols[1], horizontal=True,
                     help="; ".join(f"{m}: {h}" for m, h in METHOD_HELP.items()))
seed = state.int_input("Seed", 0, 2**31 - 1, key="seed", default=0, where=cols[2], help="Resample: which window pairs with which.")
tset, fingerprint = None, "bundled"
try:
    component = parse_component(comp_text)
    if component[0] == "feature":
        from ui.attribution_graph_view import transcoders_for

        tset, fingerprint = transcoders_for(ctx)
        if tset is None:
            raise ValueError(f"Transcoder features need transcoders: {fingerprint}")
    resolve_component(model, component, tset)
except ValueError as error:
    st.error(md_escape(str(error)), icon=":material/error:")
    st.stop()
features = {} if tset is None else {"transcoders": tset}  # the fingerprint in the request keys the cache
if choice is None:
    st.stop()

base = BrowseRequest(component=component, method=method, corpus_text=choice.text, window_len=min(128, cfg.n_ctx),
                     seed=seed if method == "resample" else 0, transcoders=fingerprint)
with guard("preparing the corpus"):
    corpus = request_corpus(model, base)
n_windows = state.int_input("Windows", 1, corpus.n_windows, key="n_windows", default=min(corpus.n_windows, DEFAULT_WINDOWS),
                            help=f"The first N of the corpus's {corpus.n_windows} windows of {corpus.window_len} tokens "
                                 "(BOS, then the text). Each piece of 128 windows is cached as it finishes.")
if n_windows < corpus.n_windows:
    st.caption(f"Running the first {n_windows} of {corpus.n_windows} windows; raise **Windows** to cover the whole corpus.")
request = dataclasses.replace(base, window_stop=n_windows)

# -- the run, in cached chunks -------------------------------------------------------------
pieces = chunk_requests(request, n_windows, CHUNK)
bar = st.progress(0.0, text=f"Ablating {comp_text} over {n_windows} windows…")
parts = []
with guard("ablating over the corpus"):
    for i, piece in enumerate(pieces):
        def report(done, total, i=i):
            frac = (i + done / max(total, 1)) / len(pieces)
            bar.progress(frac, text=f"Ablating {comp_text}: window {piece.window_start + done} of {n_windows}…")

        parts.append(run_experiment(model, "browse", browse, piece, device=ctx.device, progress=report, **features))
        bar.progress((i + 1) / len(pieces), text=f"{piece.window_stop} of {n_windows} windows done (each piece is cached)")
    result = combine(request, parts, corpus)
bar.empty()

stats = result.stats
change = result.loss_change
st.subheader(f"{result.component_label}, {method} ablation, over {stats['n_tokens']:,} tokens ({md_escape(choice.label)})")
m = st.columns(4)
m[0].metric("Mean loss, before → after", f"{stats['mean_ablated_loss']:.3f}", delta=f"{stats['mean_change']:+.4f}",
            delta_color="inverse")
m[1].metric("Mean |loss change|", f"{stats['mean_abs_change']:.3f}")
m[2].metric(f"Share rising > {result.threshold} nats", f"{stats['share_rise_above']:.1%}")
m[3].metric(f"Share falling > {result.threshold} nats", f"{stats['share_fall_below']:.1%}")

finite = change[change.isfinite()].numpy()
hist = charts.count_histogram(finite, bins=120, title="Loss change per token (ablated − plain, nats)",
                              x_title="loss change (nats)", y_title="tokens")
st.plotly_chart(hist, key="histogram")

# -- the ranked tokens ----------------------------------------------------------------------
direction = state.radio("Rank by", ["rise", "fall"], key="rank", default="rise", horizontal=True,
                        format_func={"rise": "Largest loss rise (the component helps)",
                                     "fall": "Largest loss fall (the component hurts)"}.get)
ranked = (result.rise if direction == "rise" else result.fall).tolist()
scale = float(np.nanmax(np.abs(finite))) if finite.size else 1.0


def str_window(w: int) -> list[str]:
    return list(model.to_str_tokens(corpus.tokens[w, : int(corpus.lengths[w])]))


rows, options = [], []
for rank, (w, p) in enumerate(ranked[:SHOWN]):
    toks = str_window(w)
    lo, hi = max(0, p - CONTEXT), min(len(toks), p + 4)
    # Token p+1 is the one predicted at position p: colour each token by the change of its own loss.
    values = [None] + change[w].tolist()
    strip = token_strip(toks[lo:hi], values[lo:hi], scale, highlight=p + 1 - lo, first_index=lo)
    delta = float(change[w, p])
    st.markdown(f'<div style="display:flex;gap:8px;align-items:baseline"><b style="min-width:70px">#{rank + 1} '
                f'{delta:+.2f}</b>{strip}</div>', unsafe_allow_html=True)
    rows.append({"rank": rank + 1, "window": w, "position": p, "source": corpus.window_label(w),
                 "token": toks[p], "next token": toks[p + 1], "loss": float(result.loss[w, p]),
                 "ablated loss": float(result.ablated_loss[w, p]), "change": delta})
    options.append(f"{w}:{p}")
st.caption("Each row: the predicted token outlined, with the tokens before it; colour = that token's loss change "
           "(red: rises when ablated). Hover a token for its numbers.")
table = pd.DataFrame(rows)
snippet = choice.fix_snippet(experiment_snippet(ctx, browse, request, "print(result.stats)", "print(result.rise[:10])",
                                                **choice.snippet_args()))
export_bar("browse ranking", df=table, fig=hist, snippet=snippet)

# -- one example ------------------------------------------------------------------------------
if not options:
    st.info("No tokens to rank.")
    st.stop()


def parse_example(raw: str) -> str:
    w, p = (int(x) for x in raw.split(":"))
    if not (0 <= w < n_windows and 0 <= p < int(corpus.lengths[w]) - 1):
        raise ValueError("outside the corpus")
    return f"{w}:{p}"


labels = {o: f"#{i + 1}: window {o.split(':')[0]}, position {o.split(':')[1]} (Δ {rows[i]['change']:+.2f})"
          for i, o in enumerate(options)}
held = st.session_state.get("example", st.query_params.get("example"))
try:
    held = parse_example(str(held)) if held else None
except ValueError:
    held = None  # not a token of this corpus: the selectbox names the link's value and shows the first row
if held and held not in options:  # a picked example stays picked when the ranking changes
    hw, hp = (int(x) for x in held.split(":"))
    options.append(held)
    labels[held] = f"window {hw}, position {hp} (Δ {float(change[hw, hp]):+.2f}, not among the {SHOWN} shown)"
example = state.selectbox("Example", options, key="example", default=options[0],
                          format_func=lambda o: labels.get(o, f"window {o.split(':')[0]}, position {o.split(':')[1]}"))
w, p = (int(x) for x in example.split(":"))
with guard("examining the example"):
    panel = run_experiment(model, "browse_example", browse_example,
                           BrowseExampleRequest(component=component, method=method, corpus_text=choice.text,
                                                window_len=base.window_len, seed=base.seed, window=w, position=p,
                                                transcoders=fingerprint),
                           device=ctx.device, **features)
st.subheader(f"Window {w} ({md_escape(panel.window_label)}), predicting "
             f"{md_escape(charts.visible(panel.next_token))} at position {p}")
values = [None] + change[w].tolist()
st.markdown(token_strip(panel.str_tokens, values, scale, highlight=p + 1), unsafe_allow_html=True)
m = st.columns(4)
m[0].metric("Loss of the next token", f"{panel.loss_after:.3f}", delta=f"{panel.loss_after - panel.loss_before:+.3f} "
            f"(was {panel.loss_before:.3f})", delta_color="inverse")
m[1].metric("P(next token)", f"{panel.prob_after:.3f}", delta=f"was {panel.prob_before:.3f}", delta_color="off")
m[2].metric(f"DLA of {result.component_label} to it", f"{panel.dla:+.3f}", delta=f"of logit {panel.dla_logit:.2f}",
            delta_color="off")
m[3].metric(f"Logit lens at {panel.lens_layer}: P(next)", f"{panel.lens_next_prob:.3f}")
left, right = st.columns(2)
top = pd.DataFrame({"before": [charts.visible(t) for t in panel.before_top_tokens], "p before": panel.before_top_probs.tolist(),
                    "after ablation": [charts.visible(t) for t in panel.after_top_tokens],
                    "p after": panel.after_top_probs.tolist(),
                    f"logit lens {panel.lens_layer}": [charts.visible(t) for t in panel.lens_top_tokens],
                    "p lens": panel.lens_top_probs.tolist()})
left.markdown("**Top predictions: plain, ablated, and the logit lens entering the component's layer**")
left.dataframe(top, hide_index=True)
fig = None
if panel.attention.numel():
    labels_x = [f"{i}: {charts.visible(t)}" for i, t in enumerate(panel.str_tokens[: p + 1])]
    fig = charts.bar(panel.attention, labels_x, title=f"{result.component_label}'s attention from position {p}",
                     x_title="source position", y_title="attention")
    right.plotly_chart(fig, key="example_attention")
else:
    right.caption("Attention patterns are shown for heads.")
ex_snippet = choice.fix_snippet(experiment_snippet(ctx, browse_example, BrowseExampleRequest(
    component=component, method=method, corpus_text=choice.text, window_len=base.window_len, seed=base.seed, window=w,
    position=p, transcoders=fingerprint), "print(result.loss_before, result.loss_after, result.dla)",
    **choice.snippet_args()))
export_bar("browse example", df=top, fig=fig, snippet=ex_snippet)

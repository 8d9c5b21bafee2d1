"""Head detectors: previous-token, duplicate-token and induction scores of every head, on the prompt or repeated random tokens."""

import pandas as pd
import streamlit as st
import torch

from lens_core.experiments.views.detectors import DETECTORS, DetectorRequest, head_detectors
from ui import charts, state
from ui.errors import guard
from ui.export import experiment_snippet, export_bar
from ui.links import head_links
from ui.model import run_experiment
from ui.widgets import app_context, preset_picker, value_presets

DETECTOR_NAMES = {
    "previous_token": "Previous token",
    "duplicate_token": "Duplicate token",
    "induction": "Induction",
}
DETECTOR_HELP = {
    "previous_token": "attention from each token to the one just before it",
    "duplicate_token": "attention from each token to earlier copies of itself",
    "induction": "attention from each token to the token after an earlier copy of itself",
}
SOURCES = {"prompt": "The prompt", "random": "Repeated random tokens"}

st.title("Head detectors")
ctx = app_context()
preset_picker("detectors", {"prompt": "prompt"}, ctx)
model = ctx.require_model()
cfg = model.cfg
max_tokens = min(int(cfg.n_ctx), ctx.settings.max_prompt_tokens)
max_seq_len = (max_tokens - 1) // 2  # BOS + the sequence twice
default_seq_len = min(50, max_seq_len)
if max_seq_len >= 2:
    value_presets("detectors", [
        {"name": "Induction heads (ARENA)",
         "values": {"det_source": "random", "seq_len": default_seq_len, "det_batch": 4, "seed": 0, "exclude_bos": True,
                    "exclude_current": False, "detector": "induction"},
         "help": f"BOS + {default_seq_len} random tokens repeated twice, 4 sequences: induction heads score near 1."},
    ])

# -- inputs ----------------------------------------------------------------------------
source = state.radio("Tokens to run", list(SOURCES), key="det_source", default="prompt", horizontal=True,
                     format_func=lambda s: SOURCES[s])
if source == "random":
    if max_seq_len < 2:
        st.error(f"This model's context ({max_tokens} tokens) is too short for repeated random tokens.", icon=":material/error:")
        st.stop()
    cols = st.columns(3)
    seq_len = state.int_input("Sequence length (repeated twice)", 2, max_seq_len, key="seq_len", default=default_seq_len,
                              where=cols[0], help=f"BOS + the sequence + the same sequence: at most {max_seq_len} here.")
    batch = state.int_input("Sequences", 1, 16, key="det_batch", default=4, where=cols[1])
    seed = state.int_input("Seed", 0, 2**31 - 1, key="seed", default=0, where=cols[2])
cols = st.columns(2)
exclude_bos = state.checkbox("Exclude BOS", key="exclude_bos", default=True, where=cols[0],
                             help="Leave attention to position 0 out of the denominator: BOS is a resting place, not a signal.")
exclude_current = state.checkbox("Exclude the current token", key="exclude_current", default=False, where=cols[1],
                                 help="Leave each token's attention to itself out of the denominator.")
detector = state.radio("Detector", list(DETECTORS), key="detector", default="induction", horizontal=True,
                       format_func=lambda d: DETECTOR_NAMES[d], help="; ".join(f"{DETECTOR_NAMES[d]}: {h}" for d, h in DETECTOR_HELP.items()))

if source == "prompt":
    model, tokens = ctx.require_prompt()
    request = DetectorRequest(tokens=tuple(int(t) for t in tokens[0].tolist()), exclude_bos=exclude_bos,
                              exclude_current_token=exclude_current)
else:
    request = DetectorRequest(seq_len=seq_len, batch=batch, seed=seed, exclude_bos=exclude_bos,
                              exclude_current_token=exclude_current)

with guard("computing the detector scores"):
    result = run_experiment(model, "head_detectors", head_detectors, request, device=ctx.device)

# -- the heatmap ------------------------------------------------------------------------
layers, heads = result.axis_labels
scores = getattr(result, detector)
st.subheader(f"{DETECTOR_NAMES[detector]} score of every head")
fig = charts.heatmap(scores, heads, layers, title=f"{DETECTOR_NAMES[detector]} score ({DETECTOR_HELP[detector]})",
                     x_title="head", y_title="layer", value_name="score", labels_are_tokens=False)
fig.data[0].update(zmin=0.0, zmax=1.0)
st.plotly_chart(fig, key="detector_chart")
if torch.isnan(scores).all():
    st.info(f"No position of these tokens has a {DETECTOR_NAMES[detector].lower()} target "
            "(e.g. no token repeats), so the score is undefined.", icon=":material/info:")
else:
    flat = torch.nan_to_num(scores, nan=-1.0).flatten()
    best = int(flat.argmax())
    st.caption(f"Highest: {layers[best // len(heads)]}{heads[best % len(heads)]} at {float(scores.flatten()[best]):.3f}. "
               "A score is the attention on the detector's targets as a fraction of the allowed attention, "
               "averaged over the positions that have a target.")
    head_links(st, ctx, best // len(heads), best % len(heads))

if result.source == "random":
    with st.expander("The first sequence"):
        st.text(" ".join(charts.visible(t) for t in result.str_tokens))

table = pd.DataFrame([
    {"layer": l, "head": h, "label": f"{layers[l]}{heads[h]}",
     **{DETECTOR_NAMES[d]: float(getattr(result, d)[l, h]) for d in DETECTORS}}
    for l in range(len(layers)) for h in range(len(heads))
])
st.dataframe(table.sort_values(DETECTOR_NAMES[detector], ascending=False, na_position="last"), hide_index=True,
             key="detector_table")
snippet = experiment_snippet(ctx, head_detectors, request, f"print(result.{detector})  # [layer, head]",
                             **({"prompt": ctx.prompt} if source == "prompt" else {}))
export_bar(f"detectors_{detector}", df=table, fig=fig, snippet=snippet)

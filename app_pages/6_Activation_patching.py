"""Activation patching: copy activations between a clean and a corrupted prompt, one cell at a time, and watch the metric."""

import pandas as pd
import streamlit as st

from lens_core.experiments.interventions.patching import DIRECTIONS, SWEEPS, PatchingRequest, activation_patching
from ui import charts, state
from ui.errors import guard, md_escape
from ui.contrast_inputs import contrast_inputs, corrupted_ids_or_stop, preset_with_corrupted
from ui.export import experiment_snippet, export_bar
from ui.links import head_links
from ui.model import run_experiment
from ui.notices import patching_value_choice, small_gap_warning
from ui.widgets import app_context, preset_picker

VALUES = ("normalized", "logit difference", "answer probability")
DEFAULT_SWEEPS = ["resid_pre", "head_out_all_pos"]
SWEEP_HELP = {
    "resid_pre": "the residual stream entering each layer, one position at a time",
    "resid_mid": "the residual between attention and MLP",
    "resid_post": "the residual leaving each layer",
    "attn_out": "each layer's attention output, one position at a time",
    "mlp_out": "each layer's MLP output, one position at a time",
    "head_out_all_pos": "each head's output (z) at every position at once",
    "head_out_by_pos": "each head's output at one position",
    "q_all_pos": "each head's queries", "k_all_pos": "each head's keys", "v_all_pos": "each head's values",
    "pattern_all_pos": "each head's attention pattern",
}

st.title("Activation patching")
ctx = app_context()
model = ctx.require_model()




preset_picker("activation_patching",
              {"prompt": "prompt", "corrupted_prompt": "corrupted", "answer": "answer", "wrong_answer": "wrong_answer"},
              ctx, extra_pages=("attention",), derive=preset_with_corrupted(model))
st.caption("The clean prompt is the sidebar's prompt. A preset with no corrupted prompt of its own gets a derived one: "
           "the first occurrence of the answer token in the prompt becomes the wrong answer (or, if the answer is not "
           "in the prompt, the first repeated token's first occurrence becomes another token), so the model can no "
           "longer copy the answer. Edit the corrupted prompt freely; it must have as many tokens as the clean one.")
model, clean_tokens = ctx.require_prompt()
clean_ids = [int(t) for t in clean_tokens[0].tolist()]

# -- inputs ----------------------------------------------------------------------------
corrupted_text, corrupted_tokens, answer_text, answer, wrong_text, wrong = contrast_inputs(ctx, model, clean_tokens)
cols = st.columns([3, 2, 3])
sweeps = state.multiselect("Sweeps", list(SWEEPS), key="sweeps", default=DEFAULT_SWEEPS, where=cols[0],
                           help="; ".join(f"{name}: {text}" for name, text in SWEEP_HELP.items()))
direction = state.radio("Direction", DIRECTIONS, key="direction", where=cols[1], horizontal=True,
                        help="denoise: patch clean activations into the corrupted run. "
                             "noise: patch corrupted activations into the clean run.")
show_column = cols[2]  # "Show" is drawn once the baselines are known: its default depends on them
if not sweeps:
    cols[0].error("Pick at least one sweep.", icon=":material/error:")
if not sweeps:
    st.stop()
corrupted_ids = corrupted_ids_or_stop(clean_ids, corrupted_tokens, answer, wrong_text, wrong)

# -- the sweeps ------------------------------------------------------------------------------
results, requests = {}, {}
progress_bar = st.progress(0.0, text="Patching…")
for i, sweep in enumerate(sweeps):
    request = requests[sweep] = PatchingRequest(clean_tokens=tuple(clean_ids), corrupted_tokens=tuple(corrupted_ids),
                                                answer=answer, wrong_answer=wrong, sweep=sweep, direction=direction)

    def report(done: int, total: int, i=i, sweep=sweep) -> None:
        progress_bar.progress(min(1.0, (i + done / max(total, 1)) / len(sweeps)), text=f"{sweep}: {done}/{total} cells")

    with guard(f"running the {sweep} sweep"):
        results[sweep] = run_experiment(model, "activation_patching", activation_patching, request,
                                        device=ctx.device, progress=report)
    progress_bar.progress((i + 1) / len(sweeps), text=f"{sweep}: done")
progress_bar.empty()

first = results[sweeps[0]]
metric = (f"logit({charts.visible(answer_text)}) − logit({charts.visible(wrong_text)})" if wrong is not None
          else f"logit({charts.visible(answer_text)})")
st.subheader("Baselines")
cols = st.columns(4)
cols[0].metric(md_escape(f"Clean {metric}"), f"{first.clean_logit_diff:.3f}")
cols[1].metric(md_escape(f"Corrupted {metric}"), f"{first.corrupted_logit_diff:.3f}")
cols[2].metric("Clean P(answer)", f"{first.clean_answer_prob:.3f}")
cols[3].metric("Corrupted P(answer)", f"{first.corrupted_answer_prob:.3f}")
undefined = corrupted_ids == clean_ids or bool(first.normalized.isnan().all())
small_gap = not undefined and small_gap_warning(model, clean_ids, first.clean_logit_diff, first.corrupted_logit_diff,
                                                 ctx.device)
value = patching_value_choice(VALUES, small_gap, where=show_column,
                              help="normalized: (patched − corrupted) / (clean − corrupted) of the logit difference.")
if corrupted_ids == clean_ids:
    st.warning("The corrupted prompt is the clean prompt: every patch changes nothing. Edit it, or derive one.",
               icon=":material/warning:")
elif value == "normalized" and bool(first.normalized.isnan().all()):
    st.warning("Clean and corrupted give the same metric, so the normalized value is undefined: showing the logit "
               "difference instead.", icon=":material/warning:")
    value = "logit difference"

field = {"normalized": "normalized", "logit difference": "logit_diff", "answer probability": "answer_prob"}[value]
for sweep, result in results.items():
    st.subheader(f"{sweep}: {SWEEP_HELP.get(sweep, '')}")
    z = getattr(result, field)
    layer_names = result.axis_labels[0]
    if result.axes == ["layer", "pos"]:
        x_labels, y_labels, x_title, y_title = result.clean_str_tokens, layer_names, "position", "layer"
    elif result.axes == ["layer", "head"]:
        x_labels, y_labels, x_title, y_title = result.axis_labels[1], layer_names, "head", "layer"
    else:  # layer, head, pos: one row per head
        heads = result.axis_labels[1]
        z = z.reshape(-1, z.shape[-1])
        x_labels, y_labels, x_title, y_title = result.clean_str_tokens, [f"{l}{h}" for l in layer_names for h in heads], "position", "head"
    fig = charts.heatmap(z, x_labels, y_labels, title=f"Patching {sweep} ({direction}): {value}", x_title=x_title,
                         y_title=y_title, value_name=value, zmid=None if field == "answer_prob" else 0.0,
                         labels_are_tokens=x_title == "position")
    st.plotly_chart(fig, key=f"patching_{sweep}")
    if result.axes == ["layer", "head"] and not bool(z.isnan().all()):
        top = int(z.nan_to_num(0.0).abs().flatten().argmax())
        head_links(st, ctx, top // z.shape[1], top % z.shape[1], caption=f"Strongest head, L{top // z.shape[1]}H{top % z.shape[1]}:",
                   answer=answer_text, wrong_answer=wrong_text)
    long = result.logit_diff.reshape(-1).shape[0]
    table = pd.DataFrame({
        "cell": [f"{y}/{x}" for y in range(len(y_labels)) for x in range(len(x_labels))],
        "row": [charts.visible(str(y)) for y in y_labels for _ in x_labels],
        "column": [charts.visible(str(x)) for _ in y_labels for x in x_labels],
        "logit difference": result.logit_diff.reshape(-1).tolist(),
        "normalized": result.normalized.reshape(-1).tolist(),
        "answer probability": result.answer_prob.reshape(-1).tolist(),
    }) if long == len(x_labels) * len(y_labels) else None
    snippet = experiment_snippet(ctx, activation_patching, requests[sweep],
                                 "print(result.axes, result.clean_logit_diff, result.corrupted_logit_diff)",
                                 f"print(result.{field})", clean_prompt=ctx.prompt, corrupted_prompt=corrupted_text,
                                 answer=answer_text, wrong_answer=wrong_text or None)
    export_bar(f"patching_{sweep}", df=table, fig=fig, snippet=snippet)

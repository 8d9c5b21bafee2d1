"""Ablation: knock out heads, attention layers, MLPs or whole blocks and see the metric and the loss per token move."""

import pandas as pd
import streamlit as st

from lens_core.experiments.interventions.ablation import (
    MEAN_OVER,
    METHODS,
    AblationRequest,
    AblationSweepRequest,
    ablation,
    ablation_sweep,
)
from ui import charts, state
from ui.errors import UserInputError, guard, md_escape
from ui.export import experiment_snippet, export_bar
from ui.model import run_experiment
from ui.widgets import (
    answer_pair_inputs,
    app_context,
    preset_picker,
    validate_prompt,
    value_presets,
)

METHOD_HELP = {
    "zero": "the activation becomes 0",
    "mean": "its mean over the reference prompts (the prompt itself when there are none)",
    "resample": "its value on one reference prompt of the same length (picked with the seed)",
}
SWEEP_TARGETS = {"heads": "each head", "attn": "each attention layer", "mlp": "each MLP"}


def component_options(n_layers: int, n_heads: int) -> list[str]:
    """Labels as lens_core writes them: L1H3, L0 attn, L0 mlp, L0 layer (attention and MLP together)."""
    options = [f"L{l}H{h}" for l in range(n_layers) for h in range(n_heads)]
    options += [f"L{l} {kind}" for l in range(n_layers) for kind in ("attn", "mlp", "layer")]
    return options


def component_of(label: str) -> tuple:
    if " " in label:
        layer, kind = label.split(" ")
        return (kind, int(layer[1:]))
    layer, head = label[1:].split("H")
    return ("head", int(layer), int(head))


def reference_token_ids(model, text: str, n_pos: int, method: str, mean_over: str, settings) -> tuple[tuple[int, ...], ...]:
    """Each non-empty line of ``text`` as token ids, checked for what the method needs."""
    lines = [line for line in text.splitlines() if line.strip()]
    same_length = method == "resample" or (method == "mean" and mean_over == "prompts")
    if same_length and not lines:
        need = "resample ablation" if method == "resample" else "a per-position mean"
        raise UserInputError(f"Enter at least one reference prompt (one per line): {need} needs them.")
    refs = []
    for i, line in enumerate(lines, start=1):
        tokens, error = validate_prompt(model, line, settings)
        if error:
            raise UserInputError(f"Reference prompt {i}: {error}")
        if same_length and tokens.shape[1] != n_pos:
            raise UserInputError(
                f"Reference prompt {i} is {tokens.shape[1]} tokens long; {method} ablation"
                f"{' per position' if method == 'mean' else ''} needs the prompt's length, {n_pos} tokens."
            )
        refs.append(tuple(int(t) for t in tokens[0].tolist()))
    return tuple(refs)


st.title("Ablation")
ctx = app_context()
preset_picker("ablation", {"prompt": "prompt", "answer": "answer", "wrong_answer": "wrong_answer"}, ctx)
model, tokens = ctx.require_prompt()
cfg = model.cfg
n_pos = int(tokens.shape[1])
value_presets("ablation", [
    {"name": "Zero-ablate the last layer's heads",
     "values": {"ablate": [f"L{cfg.n_layers - 1}H{h}" for h in range(cfg.n_heads)], "abl_method": "zero"},
     "help": "Every head of the last layer at once, zero ablation."},
    {"name": "Sweep: mean-ablate each head",
     "values": {"abl_method": "mean", "mean_over": "positions", "refs": "", "abl_sweep": True, "sweep_target": "heads"},
     "help": "Each head on its own, replaced by its mean over the prompt's positions."},
])

# -- inputs ----------------------------------------------------------------------------
answer_text, answer, wrong_text, wrong = answer_pair_inputs(model, tokens)
chosen = state.multiselect("Components to ablate", component_options(cfg.n_layers, cfg.n_heads), key="ablate",
                           default=[f"L{cfg.n_layers - 1}H0"],
                           help="Heads (L1H3), attention layers (L0 attn), MLPs (L0 mlp) or whole blocks (L0 layer).")
cols = st.columns(3)
method = state.radio("Method", METHODS, key="abl_method", default="zero", where=cols[0], horizontal=True,
                     help="; ".join(f"{m}: {h}" for m, h in METHOD_HELP.items()))
mean_over = MEAN_OVER[0]
if method == "mean":
    mean_over = state.radio("Mean over", MEAN_OVER, key="mean_over", default="positions", where=cols[1], horizontal=True,
                            help="positions: one mean over every position of every reference prompt (any lengths); "
                                 "prompts: one mean per position (references must have the prompt's length).")
seed = 0
if method == "resample":
    seed = state.int_input("Seed", 0, 2**31 - 1, key="seed", default=0, where=cols[1],
                           help="Picks which reference prompt the activations come from.")
reference_ids: tuple = ()
if method != "zero":
    refs_text = state.text_area("Reference prompts (one per line)", key="refs", default="",
                                help="Empty: mean over the prompt itself (mean over positions only).")
    with guard("reading the reference prompts"):
        reference_ids = reference_token_ids(model, refs_text, n_pos, method, mean_over, ctx.settings)
    if not reference_ids:
        st.caption("No reference prompts: the mean is over the prompt's own positions.")
sweep = state.checkbox("Also ablate each component in turn (sweep)", key="abl_sweep", default=False)
sweep_target = "heads"
if sweep:
    sweep_target = state.radio("Sweep over", list(SWEEP_TARGETS), key="sweep_target", default="heads", horizontal=True,
                               format_func=lambda t: SWEEP_TARGETS[t])

if answer is None or (wrong_text and wrong is None):
    st.stop()  # the message is under the answer box
ids = tuple(int(t) for t in tokens[0].tolist())
metric_label = f"logit({answer_text!r}) − logit({wrong_text!r})" if wrong is not None else f"logit({answer_text!r})"
metric_name = "Logit difference" if wrong is not None else "Answer logit"
common = dict(tokens=ids, method=method, reference_tokens=reference_ids, mean_over=mean_over, seed=seed,
              answer=answer, wrong_answer=wrong)

# -- the chosen components together ---------------------------------------------------
if chosen:
    request = AblationRequest(components=tuple(component_of(c) for c in chosen), **common)
    with guard("running the ablation"):
        result = run_experiment(model, "ablation", ablation, request, device=ctx.device)

    st.subheader(f"Effect of {method}-ablating {', '.join(result.component_labels)}")
    cols = st.columns(3)
    cols[0].metric(f"{metric_name}, before → after", f"{result.ablated_metric:.3f}",
                   delta=f"{result.ablated_metric - result.metric:+.3f} (was {result.metric:.3f})", delta_color="off")
    cols[1].metric("P(answer), before → after", f"{result.ablated_answer_prob:.3f}",
                   delta=f"{result.ablated_answer_prob - result.answer_prob:+.3f} (was {result.answer_prob:.3f})",
                   delta_color="off")
    base_loss = result.loss_per_token.float()
    ablated_loss = result.ablated_loss_per_token.float()
    if len(base_loss):
        cols[2].metric("Mean loss, before → after", f"{float(ablated_loss.mean()):.3f}",
                       delta=f"{float(ablated_loss.mean() - base_loss.mean()):+.3f} (was {float(base_loss.mean()):.3f})",
                       delta_color="off")
    st.caption(f"Metric at the last position: {md_escape(metric_label)}, from the unablated and the ablated run.")

    str_toks = result.str_tokens
    if len(str_toks) > 1:
        labels = [f"{p}: {charts.visible(str_toks[p])} → {charts.visible(str_toks[p + 1])}" for p in range(len(str_toks) - 1)]
        fig = charts.lines({"before": base_loss, "after ablation": ablated_loss}, labels,
                           title="Loss predicting each next token, before and after ablation",
                           x_title="position: token → next token", y_title="loss (nats)")
        st.plotly_chart(fig, key="loss_chart")
        table = pd.DataFrame({
            "position": range(len(labels)),
            "token": [charts.visible(t) for t in str_toks[:-1]],
            "next token": [charts.visible(t) for t in str_toks[1:]],
            "loss before": base_loss.tolist(),
            "loss after": ablated_loss.tolist(),
            "change": (ablated_loss - base_loss).tolist(),
        })
    else:
        fig, table = None, pd.DataFrame()
        st.info("A one-token prompt has no next token to score.")
    snippet = experiment_snippet(ctx, ablation, request, 'print(result.metric, "->", result.ablated_metric)',
                                 "print(result.loss_per_token)", "print(result.ablated_loss_per_token)",
                                 prompt=ctx.prompt, answer=answer_text, wrong_answer=wrong_text or None)
    export_bar("ablation", df=table, fig=fig, snippet=snippet)
else:
    st.info("Pick at least one component to ablate.", icon=":material/info:")

# -- each component in turn -------------------------------------------------------------
if sweep:
    sweep_request = AblationSweepRequest(target=sweep_target, **common)
    st.subheader(f"{method.capitalize()}-ablating {SWEEP_TARGETS[sweep_target]} in turn")
    bar = st.progress(0.0, text="Sweeping…")
    with guard("running the ablation sweep"):
        sweep_result = run_experiment(
            model, "ablation_sweep", ablation_sweep, sweep_request, device=ctx.device,
            progress=lambda done, total: bar.progress(done / max(total, 1), text=f"Sweeping… {done}/{total}"),
        )
    bar.empty()
    st.caption(f"Unablated: {metric_name.lower()} {sweep_result.base_metric:.3f}, mean loss {sweep_result.base_loss:.3f}.")
    layers = sweep_result.axis_labels[0]
    if sweep_target == "heads":
        heads = sweep_result.axis_labels[1]
        metric_fig = charts.heatmap(sweep_result.metric_change, heads, layers, title=f"Change in {metric_name.lower()}",
                                    x_title="head", y_title="layer", value_name=f"Δ {metric_name.lower()}", zmid=0.0,
                                    labels_are_tokens=False)
        loss_fig = charts.heatmap(sweep_result.loss_change, heads, layers, title="Change in mean loss", x_title="head",
                                  y_title="layer", value_name="Δ loss", zmid=0.0, labels_are_tokens=False)
        sweep_table = pd.DataFrame([
            {"component": f"{layers[l]}{heads[h]}", "logit diff": float(sweep_result.metric[l, h]),
             "Δ logit diff": float(sweep_result.metric_change[l, h]), "mean loss": float(sweep_result.loss[l, h]),
             "Δ loss": float(sweep_result.loss_change[l, h])}
            for l in range(len(layers)) for h in range(len(heads))
        ])
    else:
        names = [f"{l} {sweep_target}" for l in layers]
        metric_fig = charts.bar(sweep_result.metric_change, names, title=f"Change in {metric_name.lower()}", x_title="component",
                                y_title=f"Δ {metric_name.lower()}")
        loss_fig = charts.bar(sweep_result.loss_change, names, title="Change in mean loss", x_title="component",
                              y_title="Δ loss")
        sweep_table = pd.DataFrame({"component": names, "logit diff": sweep_result.metric.tolist(),
                                    "Δ logit diff": sweep_result.metric_change.tolist(),
                                    "mean loss": sweep_result.loss.tolist(), "Δ loss": sweep_result.loss_change.tolist()})
    cols = st.columns(2)
    with cols[0]:
        st.plotly_chart(metric_fig, key="sweep_metric_chart")
    with cols[1]:
        st.plotly_chart(loss_fig, key="sweep_loss_chart")
    sweep_snippet = experiment_snippet(ctx, ablation_sweep, sweep_request, "print(result.axis_labels)",
                                       "print(result.metric_change)  # change in the logit difference, per component",
                                       "print(result.loss_change)  # change in mean loss",
                                       prompt=ctx.prompt, answer=answer_text, wrong_answer=wrong_text or None)
    export_bar("ablation_sweep", df=sweep_table, fig=metric_fig, snippet=sweep_snippet)

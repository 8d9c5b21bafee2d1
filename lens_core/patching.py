"""TransformerLens's activation-patching functions (``get_act_patch_*``), on lens_core's engines.

Same signatures and results as ``transformer_lens.patching``: ``get_act_patch_resid_pre(model,
corrupted_tokens, clean_cache, patching_metric)`` patches the clean run's activation into the
corrupted run, one cell at a time, and returns ``patching_metric(logits)`` per cell, e.g.
``[n_layers, pos]``. What differs is how the cells run:

- a metric that reads only the last position's logits (checked by calling it once on logits
  whose other positions are NaN) goes to the suffix engine (``experiments._suffix``): each
  cell recomputes only the layers and positions its patch can change, many cells per batch,
  and only the last position is unembedded, and only the columns the metric reads when a
  small set of them gives the same value (a logit difference: two columns);
- any other metric (one prompt): cells batched per layer, starting at the patched layer
  (``experiments.patching.run_cells``), full logits per cell;
- a corrupted batch of several prompts: one hooked run per cell, as TransformerLens does.
"""

from __future__ import annotations

from typing import Callable

import torch

from .experiments import _suffix
from .experiments._common import capped, final_norm
from .experiments.interventions.patching import LayerCells, bytes_per_row, run_cells
from .utils import get_act_name

Metric = Callable[[torch.Tensor], torch.Tensor]
MEMORY_BUDGET_MB = 256.0


def _cells(model, activation: str, axes: tuple, n_pos: int) -> tuple[list[tuple], tuple]:
    """Indices into one layer's activation (no batch dim) in TransformerLens's cell order, and the
    sweep's shape without the layer axis."""
    n_heads = model.cfg.n_key_value_heads if activation in ("k", "v") else model.cfg.n_heads
    if axes == ("pos",):
        return [(p,) for p in range(n_pos)], (n_pos,)
    if axes == ("head",):
        cells = [(h,) for h in range(n_heads)] if activation == "pattern" else [(slice(None), h) for h in range(n_heads)]
        return cells, (n_heads,)
    if axes == ("pos", "head"):
        return [(p, h) for p in range(n_pos) for h in range(n_heads)], (n_pos, n_heads)
    if axes == ("head", "dest_pos"):  # pattern [head, query, key]
        return [(h, p) for h in range(n_heads) for p in range(n_pos)], (n_heads, n_pos)
    raise ValueError(f"unknown cell axes {axes}")


def _reads_last_position_only(metric: Metric, logits: torch.Tensor) -> bool:
    """Whether ``metric`` ignores every position but the last (its value is finite and unchanged when
    the others are NaN)."""
    probe = logits.clone()
    probe[:, :-1] = float("nan")
    try:
        value, reference = torch.as_tensor(metric(probe)).float(), torch.as_tensor(metric(logits)).float()
    except Exception:  # a metric that cannot take NaNs (e.g. argmax-based indexing)
        return False
    return bool(torch.isfinite(value).all()) and torch.allclose(value, reference, rtol=1e-6, atol=1e-6)


def _metric_columns(metric: Metric, logits: torch.Tensor) -> torch.Tensor:
    """The vocabulary columns a last-position metric reads (all of them unless a small set can be shown).

    Candidates are the columns where the metric's gradient is nonzero (a logit difference: its two
    answers); they are kept only if the metric gives the same value with every other logit NaN.
    """
    every = torch.arange(logits.shape[-1], device=logits.device)
    try:
        with torch.inference_mode(False), torch.enable_grad():
            probe = logits.detach().clone().requires_grad_(True)
            (grad,) = torch.autograd.grad(torch.as_tensor(metric(probe)).sum(), probe)
    except Exception:  # not differentiable, not a tensor, ...: read them all
        return every
    columns = grad[:, -1].reshape(-1, logits.shape[-1]).ne(0).any(0).nonzero()[:, 0]
    if len(columns) == 0 or len(columns) > 64:
        return every
    masked = torch.full_like(logits, float("nan"))
    masked[:, -1, columns] = logits[:, -1, columns]
    try:
        value, reference = torch.as_tensor(metric(masked)).float(), torch.as_tensor(metric(logits)).float()
    except Exception:
        return every
    same = bool(torch.isfinite(value).all()) and torch.allclose(value, reference, rtol=1e-6, atol=1e-6)
    return columns if same else every


def _metric_values(metric: Metric, rows: torch.Tensor, template: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """``metric`` on each row of last-position logits of ``columns`` ``[rows, n_columns]``, written into
    ``template`` [1, pos, vocab] (NaN elsewhere)."""
    out = torch.empty(rows.shape[0])
    for i in range(rows.shape[0]):
        template[0, -1, columns] = rows[i]
        out[i] = float(metric(template))
    return out


@torch.no_grad()
def generic_activation_patch(model, corrupted_tokens: torch.Tensor, clean_cache, patching_metric: Metric,
                             activation_name: str, index_axis_names: tuple) -> torch.Tensor:
    """Patch ``activation_name`` cell by cell (cells along ``index_axis_names`` after the layer) and
    return the metric per cell: ``[n_layers, *cells]``."""
    cfg = model.cfg
    if corrupted_tokens.dim() == 1:
        corrupted_tokens = corrupted_tokens[None]
    n, n_pos = cfg.n_layers, corrupted_tokens.shape[1]
    names = [get_act_name(activation_name, l) for l in range(n)]
    cells, shape = _cells(model, activation_name, tuple(index_axis_names), n_pos)
    if corrupted_tokens.shape[0] > 1:
        return _per_cell(model, corrupted_tokens, clean_cache, patching_metric, names, cells).reshape(n, *shape)
    sources = [clean_cache[name][0] for name in names]
    runner = _suffix.SuffixRunner(model, corrupted_tokens, extra_names=names) if _suffix.supported(model) else None
    if runner is not None and _reads_last_position_only(patching_metric, runner.base_logits):
        logits = runner.base_logits
        columns = _metric_columns(patching_metric, logits)
        axis = _suffix.POSITION_AXIS[activation_name]
        suffix_cells = []
        for l, name in enumerate(names):
            changed = sources[l] != runner.cache[name][0]
            for index in cells:
                start = _suffix.first_change(index, changed, axis)
                suffix_cells.append(_suffix.SuffixCell(l, activation_name, index, sources[l], start))
        template = torch.full_like(logits[:1], float("nan"))
        W_U, b_U = model.W_U[:, columns], model.b_U[columns]  # only the columns the metric reads

        def readout(last: torch.Tensor) -> tuple[torch.Tensor]:
            return (_metric_values(patching_metric, capped(model, final_norm(model, last) @ W_U + b_U), template, columns),)

        max_rows = max(1, int(MEMORY_BUDGET_MB * 2**20 // (bytes_per_row(model, n_pos) + 4 * len(columns))))
        (values,) = runner.run(suffix_cells, readout, max_rows)
        return values.reshape(n, *shape)
    resid_names = [f"blocks.{l}.hook_resid_pre" for l in range(n)]
    _, base_cache = model.run_with_cache(corrupted_tokens, names_filter=resid_names)
    groups = [LayerCells(l, names[l], sources[l], cells) for l in range(n)]

    def full_readout(final: torch.Tensor) -> tuple[torch.Tensor]:
        logits = capped(model, final_norm(model, final) @ model.W_U + model.b_U)  # [rows, pos, vocab]
        return (torch.tensor([float(patching_metric(logits[i : i + 1])) for i in range(logits.shape[0])]),)

    results = run_cells(model, [base_cache[name][0] for name in resid_names], groups, full_readout,
                        MEMORY_BUDGET_MB, last_position_only=False)
    return torch.cat([r[0] for r in results]).reshape(n, *shape)


def _per_cell(model, tokens, clean_cache, metric, names, cells) -> torch.Tensor:
    out = []
    for name in names:
        clean = clean_cache[name]
        for index in cells:
            full = (slice(None), *index)

            def patch(act, hook, full=full, clean=clean):
                act = act.clone()
                act[full] = clean[full].to(act.dtype)
                return act

            out.append(float(metric(model.run_with_hooks(tokens, fwd_hooks=[(name, patch)]))))
    return torch.tensor(out)


def _sweep(activation: str, axes: tuple, doc: str) -> Callable:
    def sweep(model, corrupted_tokens: torch.Tensor, clean_cache, patching_metric: Metric) -> torch.Tensor:
        return generic_activation_patch(model, corrupted_tokens, clean_cache, patching_metric, activation, axes)

    sweep.__doc__ = f"Activation patching of {doc}: the metric per cell, a tensor [n_layers, {', '.join(axes)}]."
    return sweep


get_act_patch_resid_pre = _sweep("resid_pre", ("pos",), "the residual stream entering each block, by position")
get_act_patch_resid_mid = _sweep("resid_mid", ("pos",), "the residual stream between attention and MLP, by position")
get_act_patch_attn_out = _sweep("attn_out", ("pos",), "each attention layer's output, by position")
get_act_patch_mlp_out = _sweep("mlp_out", ("pos",), "each MLP layer's output, by position")
get_act_patch_attn_head_out_all_pos = _sweep("z", ("head",), "each head's output (z), all positions")
get_act_patch_attn_head_q_all_pos = _sweep("q", ("head",), "each head's queries, all positions")
get_act_patch_attn_head_k_all_pos = _sweep("k", ("head",), "each head's keys, all positions")
get_act_patch_attn_head_v_all_pos = _sweep("v", ("head",), "each head's values, all positions")
get_act_patch_attn_head_pattern_all_pos = _sweep("pattern", ("head",), "each head's attention pattern")
get_act_patch_attn_head_out_by_pos = _sweep("z", ("pos", "head"), "each head's output (z), by position")
get_act_patch_attn_head_q_by_pos = _sweep("q", ("pos", "head"), "each head's queries, by position")
get_act_patch_attn_head_k_by_pos = _sweep("k", ("pos", "head"), "each head's keys, by position")
get_act_patch_attn_head_v_by_pos = _sweep("v", ("pos", "head"), "each head's values, by position")
get_act_patch_attn_head_pattern_by_pos = _sweep("pattern", ("head", "dest_pos"), "each head's pattern row, by query position")


def get_act_patch_block_every(model, corrupted_tokens, clean_cache, metric) -> torch.Tensor:
    """resid_pre, attn_out and mlp_out sweeps stacked: [3, n_layers, pos]."""
    return torch.stack([f(model, corrupted_tokens, clean_cache, metric)
                        for f in (get_act_patch_resid_pre, get_act_patch_attn_out, get_act_patch_mlp_out)])


def get_act_patch_attn_head_all_pos_every(model, corrupted_tokens, clean_cache, metric) -> torch.Tensor:
    """Head output, query, key, value and pattern sweeps (all positions) stacked: [5, n_layers, n_heads]."""
    return torch.stack([f(model, corrupted_tokens, clean_cache, metric) for f in (
        get_act_patch_attn_head_out_all_pos, get_act_patch_attn_head_q_all_pos, get_act_patch_attn_head_k_all_pos,
        get_act_patch_attn_head_v_all_pos, get_act_patch_attn_head_pattern_all_pos)])


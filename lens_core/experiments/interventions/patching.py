"""Activation patching, batched.

Two prompts of equal token length: ``clean`` (the behaviour) and ``corrupted``
(the behaviour broken). Each cell of a sweep copies one activation from the
*source* run into the *base* run and measures, at the last position, the logit
difference ``answer - wrong_answer`` (``normalized``: clean = 1, corrupted = 0)
and the answer's probability. ``direction="denoise"`` (default, as
TransformerLens's ``get_act_patch_*``): base = corrupted, source = clean.
``"noise"``: base = clean, source = corrupted.

How a sweep runs (instead of one full forward pass per cell), see ``_suffix``:
- a cell patching layer ``l`` whose first changed position is ``s`` recomputes only
  blocks ``l..`` and positions ``s..``, reading the base run's cached residual and
  keys/values for everything before (so earlier layers are never recomputed); a cell
  whose source equals the base activation is not run at all;
- many cells share one batch (rows of later layers join as the batch passes their
  layer), cut to fit ``memory_budget_mb``;
- the last block computes only the last position, and only that position is
  unembedded (only the answer columns of ``W_U`` with ``with_answer_prob=False``).
Models whose attention weights the suffix engine cannot read fall back to
``run_cells``: per layer, ``model(resid, start_at_layer=l)`` with a masking hook.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Optional, Sequence

import torch

from lens_core.results import ExperimentResult
from lens_core.utils import get_act_name

from . import _suffix
from .._common import (ContrastRequest, answer_metrics, capped, contrast_tokens, final_norm, layer_labels,
                       resolve_answers, str_tokens, unembed)

Progress = Optional[Callable[[int, int], None]]

# sweep name -> (activation, cells: "pos" | "head" | "head_pos")
SWEEPS: dict[str, tuple[str, str]] = {
    "resid_pre": ("resid_pre", "pos"),
    "resid_mid": ("resid_mid", "pos"),
    "resid_post": ("resid_post", "pos"),
    "attn_out": ("attn_out", "pos"),
    "mlp_out": ("mlp_out", "pos"),
    "head_out_all_pos": ("z", "head"),
    "head_out_by_pos": ("z", "head_pos"),
    "q_all_pos": ("q", "head"),
    "k_all_pos": ("k", "head"),
    "v_all_pos": ("v", "head"),
    "pattern_all_pos": ("pattern", "head"),
}
DIRECTIONS = ("denoise", "noise")


@dataclasses.dataclass(frozen=True)
class PatchingRequest(ContrastRequest):
    sweep: str = "resid_pre"
    direction: str = "denoise"
    memory_budget_mb: float = 256.0
    # The answer's probability needs the whole vocabulary's logits at the last position of every
    # patched run; without it only the two answer columns of W_U are used. Off: answer_prob is NaN.
    with_answer_prob: bool = True


@dataclasses.dataclass
class PatchingResult(ExperimentResult):
    kind = "activation_patching"
    logit_diff: torch.Tensor  # sweep shape, e.g. [layer, pos] or [layer, head]
    normalized: torch.Tensor  # (x - corrupted) / (clean - corrupted); NaN if clean == corrupted
    answer_prob: torch.Tensor
    sweep: str
    direction: str
    axes: list  # e.g. ["layer", "pos"]
    axis_labels: list  # one list of labels per axis
    clean_logit_diff: float
    corrupted_logit_diff: float
    clean_answer_prob: float
    corrupted_answer_prob: float
    clean_str_tokens: list
    corrupted_str_tokens: list


# ---- the batched engine (also used by ablation sweeps) ---------------------------
@dataclasses.dataclass
class LayerCells:
    """Cells that patch activation ``name`` of one layer, each an index into the activation
    without its batch dim; ``source`` is the activation to copy in (no batch dim)."""

    layer: int
    name: str
    source: torch.Tensor
    cells: list


def bytes_per_row(model, n_pos: int) -> int:
    """A rough upper bound on the live activations of one batch row through one block."""
    cfg = model.cfg
    floats = n_pos * (6 * cfg.d_model + 3 * cfg.d_mlp + 4 * cfg.n_heads * cfg.d_head + 3 * cfg.n_heads * n_pos)
    floats += 2 * cfg.d_vocab_out  # the last position's logits and softmax
    return floats * torch.finfo(cfg.dtype).bits // 8


def final_resid(model, resid: torch.Tensor, start_at_layer: int, fwd_hooks: list) -> torch.Tensor:
    """Run from ``start_at_layer`` to the residual after the last block, no unembedding."""
    with model.hooks(fwd_hooks=fwd_hooks):
        return model(resid, start_at_layer=start_at_layer, stop_at_layer=model.cfg.n_layers)


def run_cells(
    model,
    base_resid_pre: Sequence[torch.Tensor],
    groups: Sequence[LayerCells],
    readout: Callable[[torch.Tensor], tuple[torch.Tensor, ...]],
    memory_budget_mb: float = 256.0,
    progress: Progress = None,
    last_position_only: bool = True,
) -> list[tuple[torch.Tensor, ...]]:
    """Run every cell of every group; returns, per group, ``readout(final_resid)`` concatenated
    over the group's cells. ``final_resid`` is ``[batch, d_model]`` at the last position, or
    ``[batch, pos, d_model]`` with ``last_position_only=False``.

    ``base_resid_pre[l]`` is the base run's residual entering block ``l`` (``[pos, d_model]``).
    """
    n_pos = base_resid_pre[0].shape[0]
    row_bytes = bytes_per_row(model, n_pos)
    if not last_position_only:
        row_bytes += 2 * n_pos * model.cfg.d_vocab_out * torch.finfo(model.cfg.dtype).bits // 8
    chunk = max(1, int(memory_budget_mb * 2**20 // row_bytes))
    total = sum(len(g.cells) for g in groups)
    done = 0
    out = []
    for group in groups:
        pieces = []
        resid_pre = f"blocks.{group.layer}.hook_resid_pre"
        for start in range(0, len(group.cells), chunk):
            cells = group.cells[start : start + chunk]
            mask = torch.zeros((len(cells), *group.source.shape), dtype=torch.bool, device=group.source.device)
            for row, index in enumerate(cells):
                mask[(row, *index)] = True
            resid = base_resid_pre[group.layer].expand(len(cells), *base_resid_pre[group.layer].shape)
            if group.name == resid_pre:
                resid, hooks = torch.where(mask, group.source, resid), []  # patch the input itself
            else:
                source = group.source

                def patch(act: torch.Tensor, hook, mask=mask, source=source) -> torch.Tensor:
                    return torch.where(mask, source.to(act.dtype), act)

                hooks = [(group.name, patch)]
            out_resid = final_resid(model, resid, group.layer, hooks)  # [batch, pos, d_model]
            pieces.append(readout(out_resid[:, -1] if last_position_only else out_resid))
            done += len(cells)
            if progress is not None:
                progress(done, total)
        out.append(tuple(torch.cat(parts) for parts in zip(*pieces)))
    return out


def metric_readout(
    model, answer: int, wrong: Optional[int], with_prob: bool = True
) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """Final residual at the last position ``[rows, d_model]`` -> (logit difference, answer probability)."""
    columns = [answer] if wrong is None else [answer, wrong]

    def readout(last: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        normed = final_norm(model, last)
        if with_prob:
            return answer_metrics(unembed(model, normed), answer, wrong)
        logits = capped(model, normed @ model.W_U[:, columns] + model.b_U[columns]).float()  # [rows, 1 or 2]
        diff = logits[:, 0] - (logits[:, 1] if wrong is not None else 0.0)
        return diff, torch.full_like(diff, float("nan"))

    return readout


def normalize(values: torch.Tensor, clean: float, corrupted: float) -> torch.Tensor:
    span = clean - corrupted
    if not math.isfinite(span) or abs(span) < 1e-9:
        return torch.full_like(values, float("nan"))
    return (values - corrupted) / span


def position_labels(strs: Sequence[str]) -> list[str]:
    """Unique position labels ``"3: tok"`` (a prompt may repeat a token)."""
    return [f"{i}: {s}" for i, s in enumerate(strs)]


def sweep_setup(model, request):
    """Checked sweep and direction, then the pair's tokens and answers: (activation, cell_kind, clean,
    corrupted, answer, wrong, base_tokens, source_tokens). Shared by exact and attribution patching."""
    if request.sweep not in SWEEPS:
        raise ValueError(f"unknown sweep {request.sweep!r}; choose one of {sorted(SWEEPS)}")
    if request.direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {request.direction!r}")
    activation, cell_kind = SWEEPS[request.sweep]
    if activation == "resid_mid" and model.cfg.parallel_attn_mlp:
        raise ValueError("this model runs attention and MLP in parallel: it has no resid_mid")
    clean, corrupted = contrast_tokens(model, request)
    answer, wrong = resolve_answers(model, request)
    base_tokens, source_tokens = (corrupted, clean) if request.direction == "denoise" else (clean, corrupted)
    return activation, cell_kind, clean, corrupted, answer, wrong, base_tokens, source_tokens


# ---- the experiment ----------------------------------------------------------------
@torch.inference_mode()
def activation_patching(model, request: PatchingRequest, progress: Progress = None) -> PatchingResult:
    cfg = model.cfg
    activation, cell_kind, clean, corrupted, answer, wrong, base_tokens, source_tokens = sweep_setup(model, request)
    n, n_pos = cfg.n_layers, clean.shape[1]

    sweep_names = [get_act_name(activation, l) for l in range(n)]
    n_heads = cfg.n_key_value_heads if activation in ("k", "v") else cfg.n_heads
    if cell_kind == "pos":
        cells, shape = [(p,) for p in range(n_pos)], (n, n_pos)
    elif cell_kind == "head":
        if activation == "pattern":
            cells = [(h,) for h in range(n_heads)]  # pattern is [head, query, key]
        else:
            cells = [(slice(None), h) for h in range(n_heads)]
        shape = (n, n_heads)
    else:
        cells, shape = [(p, h) for h in range(n_heads) for p in range(n_pos)], (n, n_heads, n_pos)

    source_logits, source_cache = model.run_with_cache(source_tokens, names_filter=sweep_names)
    readout = metric_readout(model, answer, wrong, request.with_answer_prob)
    if _suffix.supported(model):
        runner = _suffix.SuffixRunner(model, base_tokens, extra_names=sweep_names)
        base_logits = runner.base_logits
        suffix_cells = []
        for l, name in enumerate(sweep_names):
            source = source_cache[name][0]
            changed = source != runner.cache[name][0]
            for index in cells:
                start = _suffix.first_change(index, changed, _suffix.POSITION_AXIS[activation])
                suffix_cells.append(_suffix.SuffixCell(l, activation, index, source, start))
        max_rows = max(1, int(request.memory_budget_mb * 2**20 // bytes_per_row(model, n_pos)))
        diff, prob = runner.run(suffix_cells, readout, max_rows, progress)
    else:
        resid_names = [f"blocks.{l}.hook_resid_pre" for l in range(n)]
        base_logits, base_cache = model.run_with_cache(base_tokens, names_filter=resid_names)
        groups = [LayerCells(l, sweep_names[l], source_cache[sweep_names[l]][0], cells) for l in range(n)]
        base_resid = [base_cache[name][0] for name in resid_names]
        results = run_cells(model, base_resid, groups, readout, request.memory_budget_mb, progress)
        diff, prob = torch.cat([r[0] for r in results]), torch.cat([r[1] for r in results])
    diff, prob = diff.reshape(shape).float().cpu(), prob.reshape(shape).float().cpu()
    base_diff, base_prob = answer_metrics(base_logits[0, -1], answer, wrong)
    source_diff, source_prob = answer_metrics(source_logits[0, -1], answer, wrong)
    if request.direction == "denoise":
        (clean_diff, clean_prob), (corr_diff, corr_prob) = (source_diff, source_prob), (base_diff, base_prob)
    else:
        (clean_diff, clean_prob), (corr_diff, corr_prob) = (base_diff, base_prob), (source_diff, source_prob)

    head_prefix = "KV" if activation in ("k", "v") and cfg.n_key_value_heads != cfg.n_heads else "H"
    clean_strs = str_tokens(model, clean[0].tolist())
    labels = {"layer": layer_labels(n), "pos": position_labels(clean_strs), "head": [f"{head_prefix}{h}" for h in range(n_heads)]}
    axes = {"pos": ["layer", "pos"], "head": ["layer", "head"], "head_pos": ["layer", "head", "pos"]}[cell_kind]
    clean_diff, corr_diff = float(clean_diff), float(corr_diff)
    return PatchingResult(
        logit_diff=diff,
        normalized=normalize(diff, clean_diff, corr_diff),
        answer_prob=prob,
        sweep=request.sweep,
        direction=request.direction,
        axes=axes,
        axis_labels=[labels[a] for a in axes],
        clean_logit_diff=clean_diff,
        corrupted_logit_diff=corr_diff,
        clean_answer_prob=float(clean_prob),
        corrupted_answer_prob=float(corr_prob),
        clean_str_tokens=clean_strs,
        corrupted_str_tokens=str_tokens(model, corrupted[0].tolist()),
    )

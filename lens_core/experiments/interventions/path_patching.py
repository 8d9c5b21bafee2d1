"""Path patching (Wang et al., IOI): patch sender heads only along the paths into chosen receivers.

With ``direction="denoise"`` the base run is the corrupted prompt and the
senders' outputs come from the clean prompt (``"noise"``, the IOI paper's
setting, swaps them). For one set of senders:

1. Run the base prompt with every head's output (``hook_z``) frozen to its base
   value (up to the last receiver's layer), except the senders, whose ``hook_z`` is taken from the source run.
   MLPs are not frozen: they recompute, so paths sender -> MLP -> receiver count.
   Record the receivers' inputs: ``hook_q|k|v`` of each receiver head, or the
   final residual stream.
2. For head receivers: run the base prompt again, normally, except that each
   receiver head's q/k/v is replaced by the value recorded in step 1. Measure the
   metric at the last position. For the final residual, the metric is read from
   the residual recorded in step 1.

With ``senders=None`` every head in a layer before the earliest receiver is
tried as a single sender (one batch row each): the result is ``[layer, head]``
with NaN where a head cannot send to the receivers. Receivers on k or v of a
grouped-query model patch the whole key/value head that the named query head
reads (``head // n_kv_groups``).
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Union

import torch

from lens_core.results import ExperimentResult

from .._common import (ContrastRequest, answer_metrics, check_head, contrast_tokens, final_norm, layer_labels,
                       resolve_answers, str_tokens, unembed)
from .patching import DIRECTIONS, Progress, bytes_per_row, normalize

Receiver = Union[str, tuple[int, int, str]]  # "resid_final" or (layer, head, "q" | "k" | "v")


@dataclasses.dataclass(frozen=True)
class PathPatchingRequest(ContrastRequest):
    receivers: tuple[Receiver, ...] = ("resid_final",)
    senders: Optional[tuple[tuple[int, int], ...]] = None  # None: sweep every head as a single sender
    direction: str = "denoise"
    memory_budget_mb: float = 256.0


@dataclasses.dataclass
class PathPatchingResult(ExperimentResult):
    kind = "path_patching"
    logit_diff: torch.Tensor  # [layer, head] (sweep) or [1] (given senders)
    normalized: torch.Tensor
    answer_prob: torch.Tensor
    axes: list
    axis_labels: list
    receiver_labels: list
    direction: str
    clean_logit_diff: float
    corrupted_logit_diff: float
    clean_str_tokens: list


def _check_receivers(model, receivers) -> tuple[bool, list[tuple[int, int, str]]]:
    if not receivers:
        raise ValueError("give at least one receiver")
    if all(r == "resid_final" for r in receivers):
        return True, []
    heads = []
    for r in receivers:
        if r == "resid_final" or isinstance(r, str):
            raise ValueError("receivers are either 'resid_final' or (layer, head, 'q'|'k'|'v') heads, not a mix")
        layer, head, which = r
        check_head(model, layer, head, "receiver")
        if which not in ("q", "k", "v"):
            raise ValueError(f"a receiver head's input is 'q', 'k' or 'v', got {which!r}")
        heads.append((layer, head, which))
    return False, heads


@torch.inference_mode()
def path_patching(model, request: PathPatchingRequest, progress: Progress = None) -> PathPatchingResult:
    cfg = model.cfg
    n = cfg.n_layers
    if request.direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {request.direction!r}")
    to_final, receivers = _check_receivers(model, request.receivers)
    clean, corrupted = contrast_tokens(model, request)
    answer, wrong = resolve_answers(model, request)
    base_tokens, source_tokens = (corrupted, clean) if request.direction == "denoise" else (clean, corrupted)
    first_receiver = n if to_final else min(r[0] for r in receivers)

    if request.senders is None:
        sender_sets = [((l, h),) for l in range(first_receiver) for h in range(cfg.n_heads)]
    else:
        if not request.senders:
            raise ValueError("senders is empty: give some (layer, head) pairs, or None to sweep every head")
        for layer, head in request.senders:
            check_head(model, layer, head, "sender")
            if layer >= first_receiver:
                raise ValueError(f"sender L{layer}H{head} is not before every receiver (first receiver layer {first_receiver})")
        sender_sets = [tuple(request.senders)]

    z_names = [f"blocks.{l}.attn.hook_z" for l in range(n)]
    resid_names = [f"blocks.{l}.hook_resid_pre" for l in range(n)]
    base_logits, base_cache = model.run_with_cache(base_tokens, names_filter=z_names + resid_names)
    source_logits, source_cache = model.run_with_cache(source_tokens, names_filter=z_names)
    base_z = [base_cache[name][0] for name in z_names]  # [pos, head, d_head]
    source_z = [source_cache[name][0] for name in z_names]
    base_resid = [base_cache[name][0] for name in resid_names]

    def metrics(last: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return answer_metrics(unembed(model, final_norm(model, last)), answer, wrong)

    chunk = max(1, int(request.memory_budget_mb * 2**20 // (2 * bytes_per_row(model, clean.shape[1]))))
    diffs, probs = [], []
    for start in range(0, len(sender_sets), chunk):
        batch = sender_sets[start : start + chunk]
        rows = len(batch)
        from_layer = min(l for senders in batch for l, _ in senders)
        # Step 1: every head frozen to base, senders to source, up to the last receiver layer.
        stop = n if to_final else max(r[0] for r in receivers) + 1
        hooks = []
        for l in range(from_layer, stop):
            mask = torch.zeros(rows, 1, cfg.n_heads, 1, dtype=torch.bool, device=base_z[l].device)
            for row, senders in enumerate(batch):
                for sl, sh in senders:
                    if sl == l:
                        mask[row, 0, sh, 0] = True
            frozen = torch.where(mask, source_z[l], base_z[l])  # [rows, pos, head, d_head]
            hooks.append((z_names[l], lambda act, hook, frozen=frozen: frozen.to(act.dtype)))
        recorded: dict[str, torch.Tensor] = {}
        for layer, _, which in receivers:
            name = f"blocks.{layer}.attn.hook_{which}"

            def record(act: torch.Tensor, hook, name=name) -> None:
                recorded[name] = act.clone()

            hooks.append((name, record))
        resid = base_resid[from_layer].expand(rows, *base_resid[from_layer].shape)
        with model.hooks(fwd_hooks=hooks):
            out = model(resid, start_at_layer=from_layer, stop_at_layer=stop)
        if to_final:
            diff, prob = metrics(out[:, -1])
        else:
            # Step 2: a normal base run with the receivers' inputs replaced.
            patch_hooks = []
            for layer, head, which in receivers:
                name = f"blocks.{layer}.attn.hook_{which}"
                index = head if which == "q" else head // cfg.n_kv_groups
                head_mask = torch.zeros(1, 1, recorded[name].shape[2], 1, dtype=torch.bool, device=resid.device)
                head_mask[0, 0, index, 0] = True

                def patch(act: torch.Tensor, hook, value=recorded[name], head_mask=head_mask) -> torch.Tensor:
                    return torch.where(head_mask, value, act)

                patch_hooks.append((name, patch))
            resid = base_resid[first_receiver].expand(rows, *base_resid[first_receiver].shape)
            with model.hooks(fwd_hooks=patch_hooks):
                out = model(resid, start_at_layer=first_receiver, stop_at_layer=n)
            diff, prob = metrics(out[:, -1])
        diffs.append(diff)
        probs.append(prob)
        if progress is not None:
            progress(start + rows, len(sender_sets))
    diff, prob = torch.cat(diffs).float().cpu(), torch.cat(probs).float().cpu()

    base_diff, _ = answer_metrics(base_logits[0, -1], answer, wrong)
    source_diff, _ = answer_metrics(source_logits[0, -1], answer, wrong)
    clean_diff, corr_diff = (source_diff, base_diff) if request.direction == "denoise" else (base_diff, source_diff)
    clean_diff, corr_diff = float(clean_diff), float(corr_diff)
    if request.senders is None:
        grid_diff = torch.full((n, cfg.n_heads), float("nan"))
        grid_prob = torch.full((n, cfg.n_heads), float("nan"))
        grid_diff[:first_receiver] = diff.reshape(first_receiver, cfg.n_heads)
        grid_prob[:first_receiver] = prob.reshape(first_receiver, cfg.n_heads)
        diff, prob = grid_diff, grid_prob
        axes, axis_labels = ["layer", "head"], [layer_labels(n), [f"H{h}" for h in range(cfg.n_heads)]]
    else:
        axes, axis_labels = ["senders"], [["+".join(f"L{l}H{h}" for l, h in request.senders)]]
    receiver_labels = ["resid_final"] if to_final else [f"L{l}H{h}.{w}" for l, h, w in receivers]
    return PathPatchingResult(
        logit_diff=diff,
        normalized=normalize(diff, clean_diff, corr_diff),
        answer_prob=prob,
        axes=axes,
        axis_labels=axis_labels,
        receiver_labels=receiver_labels,
        direction=request.direction,
        clean_logit_diff=clean_diff,
        corrupted_logit_diff=corr_diff,
        clean_str_tokens=str_tokens(model, clean[0].tolist()),
    )

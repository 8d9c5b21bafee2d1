"""How well transcoders stand in for their MLPs, on a set of token rows.

Per layer: fraction of variance unexplained (FVU = sum |y - tc(x)|^2 / sum |y - mean y|^2 over every
position of every row, BOS included: the splice replaces it too), mean L0 (active features per
position), and the share of features that never fire on the rows ("dead"). For the whole set: the
model's loss, and its loss with every transcoder spliced in at once with no error term.
"""

from __future__ import annotations

from typing import Any

import torch

from .splice import splice_hooks
from .transcoder import TranscoderSet


@torch.no_grad()
def evaluate_transcoders(model: Any, tset: TranscoderSet, rows: torch.Tensor, chunk: int = 16) -> dict[str, Any]:
    names = sorted({n for tc in tset for n in (tc.cfg.hook_in, tc.cfg.hook_out)})
    sq_err = {l: 0.0 for l in tset.layers}
    total_sum = {l: 0.0 for l in tset.layers}
    total_sq = {l: 0.0 for l in tset.layers}
    active = {l: 0.0 for l in tset.layers}
    fired = {l: torch.zeros(tset[l].cfg.d_sae, dtype=torch.bool) for l in tset.layers}
    n_tokens = 0
    clean_losses, spliced_losses = [], []
    for start in range(0, len(rows), chunk):
        batch = rows[start:start + chunk]
        loss, cache = model.run_with_cache(batch, names_filter=names, return_type="loss", loss_per_token=True)
        clean_losses.append(loss.flatten())
        n_tokens += batch.numel()
        for layer in tset.layers:
            tc = tset[layer]
            x, y = cache[tc.cfg.hook_in].float(), cache[tc.cfg.hook_out].float()
            acts = tc.encode(x)
            sq_err[layer] += (tc.decode(acts) - y).pow(2).sum().item()
            y = y.reshape(-1, y.shape[-1]).double()
            total_sum[layer] = total_sum[layer] + y.sum(0)
            total_sq[layer] += y.pow(2).sum().item()
            nonzero = acts != 0
            active[layer] += nonzero.sum().item()
            fired[layer] |= nonzero.reshape(-1, nonzero.shape[-1]).any(0).cpu()
        with model.hooks(fwd_hooks=splice_hooks(tset, error_term=False)):
            spliced_losses.append(model(batch, return_type="loss", loss_per_token=True).flatten())
    layers = {}
    for layer in tset.layers:
        variance = total_sq[layer] - (total_sum[layer].pow(2).sum().item() / n_tokens)
        layers[layer] = {"fvu": sq_err[layer] / variance, "l0": active[layer] / n_tokens,
                         "dead_frac": 1.0 - fired[layer].float().mean().item()}
    clean = torch.cat(clean_losses).mean().item()
    spliced = torch.cat(spliced_losses).mean().item()
    return {"layers": layers, "clean_loss": clean, "spliced_loss": spliced, "loss_increase": spliced - clean,
            "n_tokens": n_tokens}

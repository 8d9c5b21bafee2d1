"""Feature and neuron dashboards, precomputed over a corpus of token windows.

A *unit* is a transcoder feature (``kind="feature"``) or an MLP neuron (``kind="neuron"``,
``blocks.{l}.mlp.hook_post``). For each unit of each layer, over every real position of every window
except BOS (position 0, a constant the model uses as an attention sink, whose activations would
crowd out everything else):

- ``top_value / top_window / top_pos [unit, n_top]``: the highest activations and where they are;
- ``ctx_tokens / ctx_acts [unit, n_top, before + 1 + after]``: the tokens around each of those
  positions (token -1 outside the window) and the unit's activation on each;
- ``density [unit]``: share of positions where it is > 0; ``hist [unit, n_bins]`` counts of its
  positive activations in equal bins over ``(0, hist_hi]``;
- ``logit_ids / logit_vals [unit, 2 * n_logits]``: the tokens its output direction (``W_dec[f]``, or
  ``W_out[n]``) raises most then lowers most, through ``W_U`` (the direct path, final norm ignored);
- features only: ``input_ids / input_sum / input_count [unit, n_inputs]``, the current tokens on which
  it fires with the largest total activation.

Stored as safetensors (``{kind}.{layer}.{field}``) + JSON metadata; ``Dashboards`` reads them back.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, Union

import torch

from .files import require_files
from .transcoder import FeaturesUnavailable, TranscoderSet

DASHBOARD_FILE = "dashboards.safetensors"
DASHBOARD_META = "dashboards.json"
FORMAT = "circuit-explorer-dashboards"


def _unit_acts(model: Any, tset: Optional[TranscoderSet], tokens: torch.Tensor, layer: int, kind: str,
               chunk: int) -> torch.Tensor:
    """[window, pos, unit] float32 activations of one layer's units on every window."""
    name = f"blocks.{layer}.ln2.hook_normalized" if kind == "feature" else f"blocks.{layer}.mlp.hook_post"
    out = []
    for start in range(0, len(tokens), chunk):
        _, cache = model.run_with_cache(tokens[start:start + chunk], names_filter=[name], stop_at_layer=layer + 1)
        acts = cache[name]
        out.append(tset[layer].encode(acts.float()) if kind == "feature" else acts.float())
    return torch.cat(out)


@torch.no_grad()
def layer_dashboard(model: Any, acts: torch.Tensor, tokens: torch.Tensor, lengths: torch.Tensor,
                    directions: torch.Tensor, n_top: int = 20, before: int = 16, after: int = 7, n_bins: int = 20,
                    n_logits: int = 10, n_inputs: int = 10, input_tokens: bool = True) -> dict[str, torch.Tensor]:
    """Every field of one layer's dashboard from its activations [window, pos, unit] (see module doc)."""
    n_win, n_pos, n_units = acts.shape
    valid = torch.arange(n_pos)[None, :] < lengths[:, None]
    valid[:, 0] = False  # BOS
    flat = acts.masked_fill(~valid[..., None], float("-inf")).reshape(-1, n_units)  # [window*pos, unit]
    k = min(n_top, int(valid.sum()))
    top_value, top_flat = flat.topk(k, dim=0)  # [k, unit]
    top_value, top_flat = top_value.T.contiguous(), top_flat.T.contiguous()  # [unit, k]
    top_window, top_pos = top_flat // n_pos, top_flat % n_pos
    offsets = torch.arange(-before, after + 1)
    ctx_pos = top_pos[..., None] + offsets  # [unit, k, ctx]
    inside = (ctx_pos >= 0) & (ctx_pos < lengths[top_window][..., None])
    safe_pos = ctx_pos.clamp(0, n_pos - 1)
    win = top_window[..., None].expand_as(ctx_pos)
    unit = torch.arange(n_units)[:, None, None].expand_as(ctx_pos)
    ctx_acts = torch.where(inside, acts[win, safe_pos, unit], torch.zeros(()))
    ctx_tokens = torch.where(inside, tokens[win, safe_pos], torch.full((), -1, dtype=tokens.dtype))

    real = acts[valid]  # [n, unit]
    hist_hi = real.max(0).values.clamp_min(1e-6)
    fired = torch.zeros(n_units)
    hist = torch.zeros(n_units * n_bins, dtype=torch.long)
    token_ids = tokens[valid]  # [n]
    sums = torch.zeros(model.cfg.d_vocab, n_units) if input_tokens else None
    counts = torch.zeros(model.cfg.d_vocab, n_units) if input_tokens else None
    for start in range(0, len(real), 8192):  # chunks keep the bin indices small
        part = real[start:start + 8192]
        positive = part > 0
        fired += positive.sum(0)
        bins = torch.clamp((part / hist_hi * n_bins).ceil().long() - 1, 0, n_bins - 1) + torch.arange(n_units) * n_bins
        hist += torch.bincount(bins[positive], minlength=n_units * n_bins)
        if input_tokens:
            sums.index_add_(0, token_ids[start:start + 8192], part.clamp_min(0))
            counts.index_add_(0, token_ids[start:start + 8192], positive.float())
    density = fired / max(1, len(real))
    hist = hist.view(n_units, n_bins)

    tok_dtype = torch.int16 if model.cfg.d_vocab <= 32767 else torch.int32
    effects = directions.float() @ model.W_U.float()  # [unit, vocab]
    up = effects.topk(n_logits, dim=-1)
    down = (-effects).topk(n_logits, dim=-1)
    out = {"top_value": top_value, "top_window": top_window.int(), "top_pos": top_pos.to(torch.int16),
           "ctx_tokens": ctx_tokens.to(tok_dtype), "ctx_acts": ctx_acts.half(), "density": density,
           "hist": hist.int(), "hist_hi": hist_hi,
           "logit_ids": torch.cat([up.indices, down.indices], -1).to(tok_dtype),
           "logit_vals": torch.cat([up.values, -down.values], -1)}
    if input_tokens:
        best = sums.topk(n_inputs, dim=0)
        out.update({"input_ids": best.indices.T.contiguous().to(tok_dtype), "input_sum": best.values.T.contiguous(),
                    "input_count": counts.gather(0, best.indices).T.contiguous().int()})
    return out


@torch.no_grad()
def build_dashboards(model: Any, tset: TranscoderSet, tokens: torch.Tensor, lengths: torch.Tensor,
                     kinds: tuple[str, ...] = ("feature", "neuron"), chunk: int = 32,
                     progress: Any = None, **options: Any) -> dict[str, torch.Tensor]:
    """All layers' dashboards, as one flat dict of tensors named ``{kind}.{layer}.{field}``."""
    tensors: dict[str, torch.Tensor] = {}
    for kind in kinds:
        for layer in range(model.cfg.n_layers):
            if kind == "feature" and layer not in tset:
                continue
            acts = _unit_acts(model, tset, tokens, layer, kind, chunk)
            directions = tset[layer].W_dec if kind == "feature" else model.blocks[layer].mlp.W_out
            fields = layer_dashboard(model, acts, tokens, lengths, directions, input_tokens=(kind == "feature"),
                                     **options)
            tensors.update({f"{kind}.{layer}.{name}": t.contiguous() for name, t in fields.items()})
            if progress:
                progress(f"{kind}s of layer {layer}: done")
            del acts
    return tensors


def save_dashboards(tensors: dict[str, torch.Tensor], directory: Union[str, Path], meta: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    directory = Path(directory)
    save_file(tensors, str(directory / DASHBOARD_FILE))
    (directory / DASHBOARD_META).write_text(json.dumps({"format": FORMAT, **meta}, indent=1) + "\n")


class Dashboards:
    """Read access to saved dashboards: ``unit(kind, layer, index)`` -> a JSON-able dict."""

    def __init__(self, directory: Union[str, Path]) -> None:
        directory = Path(directory)
        meta_path, file = directory / DASHBOARD_META, directory / DASHBOARD_FILE
        try:
            require_files("dashboard", meta_path, file)
        except FeaturesUnavailable as exc:
            raise FeaturesUnavailable(f"{exc}; run training/build_feature_dashboards.py") from None
        try:
            self.meta = json.loads(meta_path.read_text())
            from safetensors.torch import load_file

            self.tensors = load_file(str(file))
        except Exception as exc:
            raise FeaturesUnavailable(f"cannot read the dashboards in {directory}: {type(exc).__name__}: {exc}") from exc
        if self.meta.get("format") != FORMAT:
            raise FeaturesUnavailable(f"{meta_path} is not a dashboard file")

    def n_units(self, kind: str, layer: int) -> int:
        key = f"{kind}.{layer}.density"
        if key not in self.tensors:
            raise FeaturesUnavailable(f"no {kind} dashboards for layer {layer!r}")
        return int(self.tensors[key].shape[0])

    def unit(self, kind: str, layer: int, index: int) -> dict[str, Any]:
        n = self.n_units(kind, layer)
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < n:
            raise FeaturesUnavailable(f"{kind} {index!r} is out of range: layer {layer} has {kind}s 0..{n - 1}")
        t = {name.split(".", 2)[2]: v[index] for name, v in self.tensors.items() if name.startswith(f"{kind}.{layer}.")}
        n_logits = t["logit_ids"].shape[0] // 2
        out = {"kind": kind, "layer": layer, "index": index, "density": float(t["density"]),
               "hist": t["hist"].tolist(), "hist_hi": float(t["hist_hi"]),
               "top": [{"value": float(v), "window": int(w), "pos": int(p), "tokens": tok.tolist(), "acts": a.float().tolist()}
                       for v, w, p, tok, a in zip(t["top_value"], t["top_window"], t["top_pos"], t["ctx_tokens"],
                                                  t["ctx_acts"]) if kind == "neuron" or v > 0],
               "logits_up": list(zip(t["logit_ids"][:n_logits].tolist(), t["logit_vals"][:n_logits].tolist())),
               "logits_down": list(zip(t["logit_ids"][n_logits:].tolist(), t["logit_vals"][n_logits:].tolist())),
               "context_before": int(self.meta.get("before", 16))}
        if "input_ids" in t:
            out["inputs"] = [{"token": int(i), "sum": float(s), "count": int(c)}
                             for i, s, c in zip(t["input_ids"], t["input_sum"], t["input_count"]) if s > 0]
        return out

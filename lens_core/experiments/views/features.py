"""Sparse features on a prompt: which fire where, one unit's activation, and steering.

All three read the model's transcoders (``lens_core.features.load_transcoders``; the request's
``transcoders`` field carries their fingerprint so the cache keys them), or the dictionary passed as
``transcoders=``: a transcoder set (per-layer, skip, SAE) or a cross-layer transcoder (CLT), whose layer ``L``
features are its layer-``L`` encoder's and whose steering edits change the feature's writes into every layer
``L..n_layers-1`` (``lens_core.features.clt_edits``). A unit is a dictionary feature (``kind="feature"``) or an
MLP neuron (``kind="neuron"``, ``blocks.{l}.mlp.hook_post``).
"""

from __future__ import annotations

import dataclasses
from typing import Literal, Optional

import torch

from lens_core.features import FeaturesUnavailable, feature_activations, load_transcoders, steer
from lens_core.features.per_layer import check_layer, check_layer_feature, dictionary_layers, layer_width
from lens_core.results import ExperimentResult

from .._common import resolve_tokens, str_tokens

KINDS = ("feature", "neuron")


def _transcoders(model, transcoders=None):
    return transcoders if transcoders is not None else load_transcoders(model)


def _layers(tset, layers: tuple[int, ...]) -> list[int]:
    chosen = list(layers) if layers else dictionary_layers(tset)
    for layer in chosen:
        check_layer(tset, layer)  # a clear error for a layer without a transcoder
    return chosen


@dataclasses.dataclass(frozen=True)
class FeatureActivationsRequest:
    prompt: Optional[str] = None
    tokens: Optional[tuple[int, ...]] = None
    layers: tuple[int, ...] = ()  # () = every layer with a transcoder
    top_per_token: int = 8
    top_per_layer: int = 12  # features with the largest peak activation on the prompt, with every position
    transcoders: str = "bundled"


@dataclasses.dataclass
class FeatureActivationsResult(ExperimentResult):
    kind = "feature_activations"
    top_features: torch.Tensor  # [layer, pos, top] feature ids (-1 where fewer are active)
    top_acts: torch.Tensor  # [layer, pos, top]
    n_active: torch.Tensor  # [layer, pos] active features
    peak_features: torch.Tensor  # [layer, row] the layer's features by peak activation on the prompt (-1: none)
    peak_acts: torch.Tensor  # [layer, row, pos] their activation at every position
    layers: list  # [layer] layer numbers
    str_tokens: list  # [pos]


@torch.inference_mode()
def feature_activations_on_prompt(model, request: FeatureActivationsRequest, transcoders=None) -> FeatureActivationsResult:
    tset = _transcoders(model, transcoders)
    tokens = resolve_tokens(model, request.prompt, request.tokens)
    layers = _layers(tset, request.layers)
    if request.top_per_token < 1 or request.top_per_layer < 1:
        raise ValueError("top_per_token and top_per_layer must be at least 1")
    acts = feature_activations(model, tset, tokens, layers)
    k = min(int(request.top_per_token), min(layer_width(tset, l) for l in layers))
    tops = [acts[l][0].float().topk(k, dim=-1) for l in layers]
    values = torch.stack([t.values for t in tops])
    ids = torch.stack([t.indices for t in tops])
    rows = min(int(request.top_per_layer), min(layer_width(tset, l) for l in layers))
    peaks = [acts[l][0].float().max(0).values.topk(rows) for l in layers]
    peak_ids = torch.stack([torch.where(p.values > 0, p.indices, torch.full_like(p.indices, -1)) for p in peaks])
    peak_acts = torch.stack([acts[l][0].float()[:, p.indices].T for l, p in zip(layers, peaks)])
    return FeatureActivationsResult(
        top_features=torch.where(values > 0, ids, torch.full_like(ids, -1)).cpu(), top_acts=values.clamp_min(0).cpu(),
        n_active=torch.stack([(acts[l][0] != 0).sum(-1) for l in layers]).cpu(), peak_features=peak_ids.cpu(),
        peak_acts=peak_acts.cpu(), layers=layers,
        str_tokens=str_tokens(model, tokens[0].tolist()))


@dataclasses.dataclass(frozen=True)
class UnitActivationRequest:
    """One unit (``kind`` "feature" of a transcoder, or "neuron" of an MLP) at ``layer``, number ``index``."""

    prompt: Optional[str] = None
    tokens: Optional[tuple[int, ...]] = None
    kind: Literal["feature", "neuron"] = "feature"
    layer: int = 0
    index: int = 0
    transcoders: str = "bundled"


@dataclasses.dataclass
class UnitActivationResult(ExperimentResult):
    """One feature's (or neuron's) activation at every position of the prompt."""

    kind = "unit_activation"
    acts: torch.Tensor  # [pos]
    unit: str  # "L1 feature 42" / "L1 neuron 7"
    str_tokens: list  # [pos]


@torch.inference_mode()
def unit_activation(model, request: UnitActivationRequest, transcoders=None) -> UnitActivationResult:
    tokens = resolve_tokens(model, request.prompt, request.tokens)
    if request.kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {request.kind!r}")
    if request.kind == "feature":
        tset = _transcoders(model, transcoders)
        check_layer_feature(tset, request.layer, request.index)
        acts = feature_activations(model, tset, tokens, [request.layer])[request.layer][0, :, request.index]
    else:
        if not 0 <= request.layer < model.cfg.n_layers:
            raise FeaturesUnavailable(f"layer {request.layer} is out of range: the model has layers 0..{model.cfg.n_layers - 1}")
        if not 0 <= request.index < model.cfg.d_mlp:
            raise FeaturesUnavailable(f"neuron {request.index} is out of range: layer {request.layer} has neurons "
                                      f"0..{model.cfg.d_mlp - 1}")
        name = f"blocks.{request.layer}.mlp.hook_post"
        stop = request.layer + 1 if request.layer + 1 < model.cfg.n_layers else None
        _, cache = model.run_with_cache(tokens, names_filter=[name], stop_at_layer=stop)
        acts = cache[name][0, :, request.index]
    return UnitActivationResult(acts=acts.float().cpu(), unit=f"L{request.layer} {request.kind} {request.index}",
                                str_tokens=str_tokens(model, tokens[0].tolist()))


@dataclasses.dataclass(frozen=True)
class SteeringRequest:
    prompt: Optional[str] = None
    tokens: Optional[tuple[int, ...]] = None
    edits: tuple[tuple[int, int, float], ...] = ()  # (layer, feature, value): clamp to value; 0.0 zeroes it
    positions: tuple[int, ...] = ()  # () = every position
    error_term: bool = True  # keep what the transcoder misses, so only the edit changes the model
    top_k: int = 10
    transcoders: str = "bundled"


@dataclasses.dataclass
class SteeringResult(ExperimentResult):
    """Top next-token predictions at every position, before and after the edits."""

    kind = "feature_steering"
    original_ids: torch.Tensor  # [pos, k]
    original_probs: torch.Tensor  # [pos, k]
    steered_ids: torch.Tensor  # [pos, k]
    steered_probs: torch.Tensor  # [pos, k]
    kl: torch.Tensor  # [pos] KL(original || steered) of the next-token distributions
    original_tokens: list  # [pos][k]
    steered_tokens: list  # [pos][k]
    str_tokens: list  # [pos]


@torch.inference_mode()
def feature_steering(model, request: SteeringRequest, transcoders=None) -> SteeringResult:
    tset = _transcoders(model, transcoders)
    tokens = resolve_tokens(model, request.prompt, request.tokens)
    edits: dict[int, dict[int, float]] = {}
    for layer, feature, value in request.edits:
        edits.setdefault(int(layer), {})[int(feature)] = float(value)
    n_pos = tokens.shape[1]
    for p in request.positions:
        if not -n_pos <= p < n_pos:
            raise ValueError(f"position {p} is outside the prompt (0..{n_pos - 1})")
    positions = list(request.positions) if request.positions else None
    original, steered = steer(model, tset, tokens, edits, positions=positions, error_term=request.error_term)
    k = min(int(request.top_k), model.cfg.d_vocab_out)
    lp_orig, lp_steer = original[0].float().log_softmax(-1), steered[0].float().log_softmax(-1)
    kl = (lp_orig.exp() * (lp_orig - lp_steer)).sum(-1)
    o, s = lp_orig.exp().topk(k, dim=-1), lp_steer.exp().topk(k, dim=-1)
    return SteeringResult(
        original_ids=o.indices.cpu(), original_probs=o.values.cpu(), steered_ids=s.indices.cpu(),
        steered_probs=s.values.cpu(), kl=kl.cpu(),
        original_tokens=[str_tokens(model, row.tolist()) for row in o.indices],
        steered_tokens=[str_tokens(model, row.tolist()) for row in s.indices],
        str_tokens=str_tokens(model, tokens[0].tolist()))

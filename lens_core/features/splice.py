"""Running a model with transcoders (or SAEs) in the loop, through ordinary hooks.

Everything here returns or uses ``(hook name, fn)`` pairs, so it composes with
``run_with_cache``, patching and any other hooks of the same call.

- ``splice_hooks``: replace each chosen layer's ``hook_out`` by the transcoder's reconstruction of it,
  computed from that call's ``hook_in``. With ``error_term=True`` the reconstruction error
  ``y - tc(x)`` is added back, so the model's output is unchanged (up to rounding) until features
  are edited; without it, the model runs on the transcoders' outputs alone.
- Feature edits (steering): ``{layer: {feature: value}}`` sets those features' activations to
  ``value`` (0.0 zeroes them) at the chosen positions before decoding.
- ``feature_activations``: the features at every position of a prompt, from one forward pass that
  stops after the last layer needed.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Sequence, Union

import torch

from .clt import CrossLayerTranscoder
from .clt_edits import clt_steer
from .per_layer import dictionary_layers, layer_encoder
from .transcoder import FeaturesUnavailable, Transcoder, TranscoderSet

Edits = Mapping[int, Mapping[int, float]]  # layer -> feature -> clamped value
Positions = Optional[Union[int, Sequence[int], slice]]


def _apply_edits(acts: torch.Tensor, tc: Transcoder, edits: Mapping[int, float], positions: Positions) -> torch.Tensor:
    acts = acts.clone()
    index = slice(None) if positions is None else positions
    for feature, value in edits.items():
        tc.check_feature(feature)
        acts[:, index, feature] = float(value)
    return acts


def check_edits(tset: TranscoderSet, edits: Optional[Edits]) -> None:
    for layer, per_feature in (edits or {}).items():
        tc = tset[layer]
        for feature in per_feature:
            tc.check_feature(feature)


def splice_hooks(tset: TranscoderSet, layers: Optional[Sequence[int]] = None, error_term: bool = False,
                 edits: Optional[Edits] = None, positions: Positions = None,
                 record: Optional[dict[int, torch.Tensor]] = None) -> list[tuple[str, Callable]]:
    """Hooks that put the transcoders of ``layers`` (default: all, plus every edited layer) in the model.

    ``record``, if given, receives each spliced layer's feature activations (before edits), [batch, pos, d_sae].
    Layers that are edited but not in ``layers`` are spliced with the error term, so only the edit changes them.
    """
    edits = dict(edits or {})
    check_edits(tset, edits)
    chosen = list(tset.layers if layers is None else layers)
    for layer in chosen:
        tset[layer]  # clear error for an unknown layer
    plan = {layer: error_term for layer in chosen}
    for layer in edits:
        plan.setdefault(layer, True)
    inputs: dict[int, torch.Tensor] = {}  # private to this list of hooks (one call)
    hooks: list[tuple[str, Callable]] = []
    for layer, with_error in plan.items():
        tc = tset[layer]

        def replace(y: torch.Tensor, x: torch.Tensor, tc: Transcoder = tc, layer: int = layer,
                    with_error: bool = with_error) -> torch.Tensor:
            acts = tc.encode(x)
            if record is not None:
                record[layer] = acts.detach()
            skip = tc.skip(x) if hasattr(tc, "skip") else 0  # a SkipTranscoder's linear term (skip.py)
            recon = tc.decode(acts) + skip
            out = recon if layer not in edits else tc.decode(_apply_edits(acts, tc, edits[layer], positions)) + skip
            # out + (y - recon), associated so that an unedited layer returns y bit for bit
            return y + (out - recon) if with_error else out

        if tc.cfg.is_sae:
            hooks.append((tc.cfg.hook_out, lambda y, hook, replace=replace: replace(y, y)))
        else:
            def keep(x: torch.Tensor, hook: Any, layer: int = layer) -> None:
                inputs[layer] = x

            hooks.append((tc.cfg.hook_in, keep))
            hooks.append((tc.cfg.hook_out, lambda y, hook, layer=layer, replace=replace: replace(y, inputs.pop(layer))))
    return hooks


class _Enough(Exception):
    """Raised by the last input hook: every activation needed is in hand, so the forward pass stops there."""


@torch.no_grad()
def feature_activations(model: Any, tset: TranscoderSet, tokens: torch.Tensor,
                        layers: Optional[Sequence[int]] = None) -> dict[int, torch.Tensor]:
    """{layer: [batch, pos, d_sae]} for the clean model on ``tokens``: one pass, which stops at the deepest
    input hook point needed (the rest of the model, unembedding included, never runs). ``tset`` may also be a
    ``CrossLayerTranscoder``: a layer's features are its encoder's (``encode_layer``)."""
    chosen = list(dictionary_layers(tset) if layers is None else layers)
    by_name: dict[str, list[int]] = {}
    encoders = {layer: layer_encoder(tset, layer) for layer in chosen}
    for layer in chosen:
        by_name.setdefault(encoders[layer][0], []).append(layer)
    order = {name: i for i, name in enumerate(model.hook_dict)}
    unknown = [name for name in by_name if name not in order]
    if unknown:
        raise FeaturesUnavailable(f"the model has no hook point {unknown[0]!r}")
    last = max(by_name, key=order.__getitem__)
    out: dict[int, torch.Tensor] = {}

    def capture(x: torch.Tensor, hook: Any) -> None:
        for layer in by_name[hook.name]:
            out[layer] = encoders[layer][1](x)
        if hook.name == last:
            raise _Enough

    try:
        with model.hooks(fwd_hooks=[(name, capture) for name in by_name]):
            model(tokens, return_type=None)
    except _Enough:
        pass
    return {layer: out[layer] for layer in chosen}


@torch.no_grad()
def run_spliced(model: Any, tset: TranscoderSet, tokens: torch.Tensor, return_type: str = "logits",
                **splice_kwargs: Any) -> Any:
    """The model's output with ``splice_hooks(tset, **splice_kwargs)`` in place."""
    with model.hooks(fwd_hooks=splice_hooks(tset, **splice_kwargs)):
        return model(tokens, return_type=return_type)


@torch.no_grad()
def steer(model: Any, tset: TranscoderSet, tokens: torch.Tensor, edits: Edits, positions: Positions = None,
          error_term: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(original logits, logits with ``edits`` applied), each [batch, pos, d_vocab]. With a ``CrossLayerTranscoder``
    an edit of layer L changes the feature's writes into every layer L..last (``clt_edits.clt_steer``)."""
    if isinstance(tset, CrossLayerTranscoder):
        return clt_steer(model, tset, tokens, edits, positions=positions, error_term=error_term)
    if not edits:
        raise FeaturesUnavailable("choose at least one feature to steer")
    original = model(tokens)
    steered = run_spliced(model, tset, tokens, layers=list(edits), edits=edits, positions=positions, error_term=error_term)
    return original, steered

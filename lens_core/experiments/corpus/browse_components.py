"""What a corpus browse can remove: a head, an attention layer, an MLP, a neuron, or a transcoder feature.

``("head", l, h)``: the head's ``hook_z``; ``("attn", l)``: ``hook_attn_out``; ``("mlp", l)``:
``hook_mlp_out``; ``("neuron", l, i)``: ``mlp.hook_post[..., i]``; ``("feature", l, i)``: feature i
of layer l's transcoder (``lens_core.features``). A feature is removed from the real MLP output,
not from a spliced-in transcoder: ``mlp_out + (value - a_i(x)) * W_dec[i]`` where ``a_i(x)`` is the
feature's activation on the MLP's input. The rest of the MLP (and the transcoder's error) stays.
Text labels: ``L1H3``, ``L1 attn``, ``L1 mlp``, ``L1N42``, ``L1F42``.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, Optional, Sequence

import torch

from .._common import check_head, check_layer

COMPONENT_KINDS = ("head", "attn", "mlp", "neuron", "feature")


def parse_component(text: str) -> tuple:
    """``"L1H3"`` → ("head", 1, 3), ``"L1 attn"``, ``"L1 mlp"``, ``"L1N42"`` (neuron), ``"L1F42"`` (feature)."""
    s = text.strip()
    patterns = [(r"L(\d+)H(\d+)", "head"), (r"L(\d+)N(\d+)", "neuron"), (r"L(\d+)F(\d+)", "feature"),
                (r"L(\d+)\s*attn", "attn"), (r"L(\d+)\s*mlp", "mlp")]
    for pattern, kind in patterns:
        m = re.fullmatch(pattern, s, flags=re.IGNORECASE)
        if m:
            return (kind, *(int(g) for g in m.groups()))
    raise ValueError(f"cannot read component {text!r}: write L1H3 (head), L1 attn, L1 mlp, L1N42 (neuron) "
                     "or L1F42 (transcoder feature)")


def component_label(component: Sequence) -> str:
    kind = component[0]
    if kind in ("head", "neuron", "feature"):
        return f"L{component[1]}{kind[0].upper()}{component[2]}"
    return f"L{component[1]} {kind}"


@dataclasses.dataclass(frozen=True, eq=False)
class Target:
    layer: int
    hook: str  # where the ablation edits the model
    index: Optional[int]  # head, neuron or feature index
    kind: str
    transcoder: Any = None  # features: the layer's lens_core.features.Transcoder
    source: str = ""  # features: the transcoders' fingerprint (keys the corpus means)

    @property
    def read_hook(self) -> str:
        """The hook the component's activation is computed from."""
        return self.transcoder.cfg.hook_in if self.kind == "feature" else self.hook

    def full(self, act: torch.Tensor) -> torch.Tensor:
        """``read_hook``'s activation to the array the component is a slice of (all features, for a feature)."""
        return self.transcoder.encode(act) if self.kind == "feature" else act

    def select(self, full: torch.Tensor) -> torch.Tensor:
        """The component's part ``[batch, pos, ...]`` of :meth:`full`."""
        if self.kind == "head":
            return full[:, :, self.index]
        if self.kind in ("neuron", "feature"):
            return full[..., self.index]
        return full

    def ablation_hooks(self, value: torch.Tensor) -> list[tuple[str, Callable]]:
        """Hooks that set the component to ``value`` (broadcast over batch and positions)."""
        if self.kind != "feature":
            def replace(act: torch.Tensor, hook) -> torch.Tensor:
                act = act.clone()
                v = value.to(act.dtype)
                if self.kind == "head":
                    act[:, :, self.index] = v
                elif self.kind == "neuron":
                    act[..., self.index] = v
                else:
                    act[:] = v
                return act

            return [(self.hook, replace)]
        tc, i = self.transcoder, self.index

        def edit(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            a = tc.encode(x)[..., i]
            return y + ((value.to(y.dtype) - a)[..., None] * tc.W_dec[i]).to(y.dtype)

        if tc.cfg.hook_in == tc.cfg.hook_out:  # an SAE: it reads what it edits
            return [(self.hook, lambda y, hook: edit(y, y))]
        kept: dict[str, torch.Tensor] = {}

        def keep(x: torch.Tensor, hook) -> None:
            kept["x"] = x

        return [(tc.cfg.hook_in, keep), (self.hook, lambda y, hook: edit(y, kept.pop("x")))]

    def value_shape(self, model) -> tuple:
        cfg = model.cfg
        if self.kind == "head":
            return (cfg.d_head,)
        if self.kind in ("neuron", "feature"):
            return ()
        return (cfg.d_model,)


def resolve_component(model, component: Sequence, transcoders: Any = None) -> Target:
    """Check a component against the model; features load the model's transcoders unless given."""
    component = tuple(component)
    if not component or component[0] not in COMPONENT_KINDS:
        raise ValueError(f"a component is one of {COMPONENT_KINDS} with its layer (and index), got {component!r}")
    kind = component[0]
    if len(component) != (2 if kind in ("attn", "mlp") else 3):
        raise ValueError(f"malformed {kind} component {component!r}")
    if kind == "head":
        layer, head = check_head(model, component[1], component[2])
        return Target(layer, f"blocks.{layer}.attn.hook_z", head, kind)
    layer = check_layer(model, component[1])
    if kind == "neuron":
        n = component[2]
        if not isinstance(n, int) or not 0 <= n < model.cfg.d_mlp:
            raise ValueError(f"neuron index must be in [0, {model.cfg.d_mlp}), got {n!r}")
        return Target(layer, f"blocks.{layer}.mlp.hook_post", n, kind)
    if kind == "feature":
        from lens_core.features import FeaturesUnavailable, load_transcoders

        tset = transcoders if transcoders is not None else load_transcoders(model)
        if layer not in tset:
            raise FeaturesUnavailable(f"there is no transcoder for layer {layer} (layers {list(tset.layers)})")
        tc = tset[layer]
        index = tc.check_feature(component[2])
        return Target(layer, tc.cfg.hook_out, index, kind, tc, tset.fingerprint())
    return Target(layer, f"blocks.{layer}.hook_{kind}_out", None, kind)

"""Cross-layer transcoders (CLTs): one encoder per layer, decoders into that layer and every later one.

Layer ``s`` has features that read ``hook_in(s)`` and write to ``hook_out(t)`` for every ``t >= s``::

    a_s      = sparsity((x_s - 0) @ W_enc[s] + b_enc[s])                       [..., d_sae]
    y_t      = sum_{s <= t} a_s @ W_dec[s][:, t - s, :]  +  b_dec[t]           [..., d_out]
    (+ x_t @ W_skip[t] when the CLT has a skip term)

Shapes (this module's layout): ``W_enc[s]`` [d_in, d_sae], ``b_enc[s]`` [d_sae], ``threshold[s]``
[d_sae] (JumpReLU), ``W_dec[s]`` [d_sae, n_layers - s, d_out], ``b_dec`` [n_layers, d_out],
``W_skip[t]`` [d_in, d_out]. circuit-tracer's files store ``W_enc`` as [d_sae, d_in] per layer; the
reader keeps a transposed view (no copy, so memory-mapped files stay mapped).
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import torch
from torch import nn

from .transcoder import ACTIVATIONS, FeaturesUnavailable, hook_width, missing_hook_hint, sparsify


class CrossLayerTranscoder(nn.Module):
    kind = "cross-layer transcoder"

    def __init__(self, W_enc: Sequence[torch.Tensor], b_enc: Sequence[torch.Tensor], W_dec: Sequence[torch.Tensor],
                 b_dec: torch.Tensor, hook_in: str = "ln2.hook_normalized", hook_out: str = "hook_mlp_out",
                 activation: str = "relu", k: Optional[int] = None, threshold: Optional[Sequence[torch.Tensor]] = None,
                 W_skip: Optional[Sequence[torch.Tensor]] = None, source: str = "") -> None:
        super().__init__()
        self.source = source
        n = len(W_enc)
        if n == 0:
            raise FeaturesUnavailable(f"{source}: a cross-layer transcoder needs at least one layer")
        if activation not in ACTIVATIONS:
            raise FeaturesUnavailable(f"{source}: activation must be one of {ACTIVATIONS}, got {activation!r}")
        self.n_layers, (self.d_in, self.d_sae) = n, tuple(W_enc[0].shape)
        self.d_out = int(b_dec.shape[-1])
        self.hook_in_name, self.hook_out_name = hook_in, hook_out
        self.activation, self.k = activation, k
        if activation in ("topk", "batchtopk") and not (k and 0 < k <= self.d_sae):
            raise FeaturesUnavailable(f"{source}: a {activation} CLT needs 0 < k <= d_sae ({self.d_sae}), got k={k!r}")
        self._check(W_enc, b_enc, W_dec, b_dec, threshold, W_skip)
        self.W_enc = nn.ParameterList([nn.Parameter(w) for w in W_enc])
        self.b_enc = nn.ParameterList([nn.Parameter(b) for b in b_enc])
        self.W_dec = nn.ParameterList([nn.Parameter(w) for w in W_dec])
        self.b_dec = nn.Parameter(b_dec)
        self.threshold = nn.ParameterList([nn.Parameter(t, requires_grad=False) for t in threshold]) if threshold else None
        self.W_skip = nn.ParameterList([nn.Parameter(w) for w in W_skip]) if W_skip else None

    def _check(self, W_enc, b_enc, W_dec, b_dec, threshold, W_skip) -> None:
        n, d_in, d_sae, d_out = self.n_layers, self.d_in, self.d_sae, self.d_out

        def need(name: str, got, want) -> None:
            if tuple(got) != tuple(want):
                raise FeaturesUnavailable(f"{self.source}: {name} has shape {tuple(got)}, expected {tuple(want)} "
                                          f"(n_layers={n}, d_in={d_in}, d_sae={d_sae}, d_out={d_out})")

        if len(b_enc) != n or len(W_dec) != n:
            raise FeaturesUnavailable(f"{self.source}: {n} encoders but {len(b_enc)} encoder biases and {len(W_dec)} decoders")
        for s in range(n):
            need(f"W_enc[{s}]", W_enc[s].shape, (d_in, d_sae))
            need(f"b_enc[{s}]", b_enc[s].shape, (d_sae,))
            need(f"W_dec[{s}]", W_dec[s].shape, (d_sae, n - s, d_out))
            if threshold is not None:
                need(f"threshold[{s}]", threshold[s].shape, (d_sae,))
            if W_skip is not None:
                need(f"W_skip[{s}]", W_skip[s].shape, (d_in, d_out))
        need("b_dec", b_dec.shape, (n, d_out))
        if self.activation == "jumprelu" and threshold is None:
            raise FeaturesUnavailable(f"{self.source}: a JumpReLU CLT needs thresholds")

    # ------------------------------------------------------------------ hooks
    def hook_in(self, layer: int) -> str:
        return f"blocks.{layer}.{self.hook_in_name}"

    def hook_out(self, layer: int) -> str:
        return f"blocks.{layer}.{self.hook_out_name}"

    # ------------------------------------------------------------------ maths
    def pre_acts(self, x: torch.Tensor, layer: int) -> torch.Tensor:
        return x @ self.W_enc[layer] + self.b_enc[layer]

    def encode_layer(self, x: torch.Tensor, layer: int) -> torch.Tensor:
        """[..., d_in] read at ``hook_in(layer)`` -> that layer's features [..., d_sae]."""
        threshold = self.threshold[layer] if self.threshold is not None else None
        return sparsify(self.pre_acts(x, layer), self.activation, self.k, threshold)

    def decode_layer(self, acts: Mapping[int, torch.Tensor], layer: int, x: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The output at ``hook_out(layer)`` from the features of layers ``<= layer`` (``acts``: layer -> [..., d_sae]).

        ``x`` (the input at ``hook_in(layer)``) is needed only for the skip term."""
        out = self.b_dec[layer]
        for s, a in acts.items():
            if s <= layer:
                out = out + a @ self.W_dec[s][:, layer - s, :]
        if self.W_skip is not None:
            if x is None:
                raise FeaturesUnavailable("this CLT has a skip term: decode_layer needs the layer's input x")
            out = out + x @ self.W_skip[layer]
        return out

    def forward(self, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Every layer's output from every layer's input (``inputs[s]`` read at ``hook_in(s)``)."""
        if len(inputs) != self.n_layers:
            raise FeaturesUnavailable(f"expected {self.n_layers} layer inputs, got {len(inputs)}")
        acts = {s: self.encode_layer(x, s) for s, x in enumerate(inputs)}
        return [self.decode_layer(acts, t, inputs[t]) for t in range(self.n_layers)]

    # ------------------------------------------------------------------ checks
    def check_fits(self, model: Any) -> None:
        """Layer count, hook points and widths against ``model``; FeaturesUnavailable naming the file otherwise."""
        n_model = model.cfg.n_layers
        if self.n_layers != n_model:
            raise FeaturesUnavailable(f"{self.source}: the cross-layer transcoder has {self.n_layers} layers, "
                                      f"the model has {n_model}")
        hooks = getattr(model, "hook_dict", {})
        for layer in range(self.n_layers):
            for name, width, label in ((self.hook_in(layer), self.d_in, "d_in"), (self.hook_out(layer), self.d_out, "d_out")):
                if name not in hooks:
                    raise FeaturesUnavailable(f"{self.source}: the model has no hook point {name!r}"
                                              f"{missing_hook_hint(hooks, name)}")
                expected = hook_width(model, name)
                if expected is not None and expected != width:
                    raise FeaturesUnavailable(f"{self.source}: {label} is {width} but {name!r} in this model has width {expected}")

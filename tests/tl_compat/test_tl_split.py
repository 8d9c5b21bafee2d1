"""stop_at_layer / start_at_layer against transformer-lens 4.3.0 and against our own plain forward.

The issue's "off by ~5e-7 on the hooked path" is not the split: it is the attention kernel. With nothing
reading the pattern, attention runs PyTorch's fused kernel; reading it (run_with_cache of everything) needs
the explicit softmax(QK^T)V, and the two round differently (~5e-7 on the bundled model). transformer-lens
always takes the explicit path, so its split equals its cache exactly. Ours: a split run is bit-equal to the
plain forward on the same path, and both paths are within float rounding of transformer-lens."""

from __future__ import annotations

import torch

from tl_pairs import assert_same


@torch.no_grad()
def test_stop_and_start_at_layer(models):
    ours, bridge, tokens = models
    for layer in range(1, ours.cfg.n_layers):
        name = f"blocks.{layer}.hook_resid_pre"
        stopped = ours(tokens, stop_at_layer=layer)
        _, plain = ours.run_with_cache(tokens, names_filter=name)  # a residual hook keeps the fused kernel
        assert torch.equal(stopped, plain[name])
        assert torch.equal(ours(stopped, start_at_layer=layer), ours(tokens))
        _, hooked = ours.run_with_cache(tokens)  # patterns read: the explicit kernel
        hooked_stop, _ = ours.run_with_cache(tokens, stop_at_layer=layer)
        assert torch.equal(hooked_stop, hooked[name])
        theirs = bridge(tokens, stop_at_layer=layer)
        assert_same(stopped, theirs, rel=1e-5)
        assert_same(hooked[name], theirs, rel=1e-5)
        assert_same(ours(stopped, start_at_layer=layer), bridge(theirs, start_at_layer=layer), rel=1e-5)

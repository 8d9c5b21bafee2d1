"""Random dictionaries of each kind on a tiny GPT-2, both graphs of one prompt, and their comparison."""

from __future__ import annotations

import functools
import tempfile

import ct_export
import hf_tiny
import torch

from lens_core.features import (
    CrossLayerTranscoder,
    SkipTranscoder,
    Transcoder,
    TranscoderConfig,
    TranscoderSet,
)
from lens_core.loading import load_from_hf_model

TOKENS = torch.tensor([[0, 5, 9, 17, 3, 11, 2, 8]])  # starts with BOS (<|endoftext|>, a special token)
TARGETS = (4, 7, 9)
REL = 1e-5


@functools.cache
def tokenizer():
    """The tiny tokenizer, saved and reloaded (transformer-lens re-reads it by its path for its BOS copy)."""
    from transformers import AutoTokenizer

    folder = tempfile.mkdtemp(prefix="ct-compat-tok-")
    hf_tiny.tiny_tokenizer().save_pretrained(folder)
    return AutoTokenizer.from_pretrained(folder)


@functools.cache
def tiny_model(folded: bool = True):
    """Our tiny GPT-2 with the weight processing on (LNPre) or off (LN with weights)."""
    flags = {} if folded else dict(fold_ln=False, center_writing_weights=False, center_unembed=False)
    return load_from_hf_model(hf_tiny.gpt2(seed=3), tokenizer(), **flags)


def _randn(gen, *shape, scale=1.0):
    return torch.randn(*shape, generator=gen) * scale


def per_layer(model, hook_in="ln2.hook_normalized", d_sae=24, seed=0, skip=False, activation="relu") -> TranscoderSet:
    """Random per-layer (or skip) transcoders: about half the features active, a nonzero b_in and b_dec."""
    gen = torch.Generator().manual_seed(seed)
    d = model.cfg.d_model
    out = {}
    for l in range(model.cfg.n_layers):
        cfg = TranscoderConfig(d_in=d, d_sae=d_sae, d_out=d, layer=l, hook_in=f"blocks.{l}.{hook_in}",
                               hook_out=f"blocks.{l}.hook_mlp_out", activation=activation)
        tc = (SkipTranscoder if skip else Transcoder)(cfg)
        with torch.no_grad():
            tc.W_enc.copy_(_randn(gen, d, d_sae, scale=d ** -0.5))
            tc.b_enc.copy_(_randn(gen, d_sae, scale=0.3) - 0.2)
            tc.W_dec.copy_(_randn(gen, d_sae, d))
            tc.b_dec.copy_(_randn(gen, d, scale=0.1))
            tc.b_in.copy_(_randn(gen, d, scale=0.1))
            if activation == "jumprelu":
                tc.threshold.copy_(_randn(gen, d_sae, scale=0.1).abs())
            if skip:
                tc.W_skip.copy_(_randn(gen, d, d, scale=d ** -0.5))
        out[l] = tc
    return TranscoderSet(out)


def cross_layer(model, hook_in="ln2.hook_normalized", d_sae=16, seed=0, skip=False, activation="relu",
                scale_bias=0.3, shift=-0.2) -> CrossLayerTranscoder:
    """A random CLT (decoders from each layer into it and every later one)."""
    gen = torch.Generator().manual_seed(seed)
    n, d = model.cfg.n_layers, model.cfg.d_model
    W_enc = [_randn(gen, d, d_sae, scale=d ** -0.5) for _ in range(n)]
    b_enc = [_randn(gen, d_sae, scale=scale_bias) + shift for _ in range(n)]
    W_dec = [_randn(gen, d_sae, n - s, d, scale=(n - s) ** -0.5) for s in range(n)]
    b_dec = _randn(gen, n, d, scale=0.1)
    threshold = [_randn(gen, d_sae, scale=0.1).abs() for _ in range(n)] if activation == "jumprelu" else None
    W_skip = [_randn(gen, d, d, scale=d ** -0.5) for _ in range(n)] if skip else None
    return CrossLayerTranscoder(W_enc, b_enc, W_dec, b_dec, hook_in=hook_in, hook_out="hook_mlp_out",
                                activation=activation, threshold=threshold, W_skip=W_skip, source="random CLT")


def our_graph(model, dictionary, tokens=TOKENS, targets=TARGETS, **kwargs):
    from lens_core.experiments.graphs._replacement import build_graph

    return build_graph(model, dictionary, tokens, list(targets) if targets else None, **kwargs)


def their_graph(model, dictionary, tokens=TOKENS, targets=TARGETS):
    ct = ct_export.ct_model(model, tokenizer(), dictionary)
    return ct_export.ct_graph(ct, tokens, targets)


def features(graph) -> torch.Tensor:
    """Our graph's features as circuit-tracer's ``active_features`` rows (layer, pos, feature)."""
    return torch.stack([graph.feature_layer, graph.feature_pos, graph.feature_index], 1)


def assert_close(ours: torch.Tensor, theirs: torch.Tensor, rel: float = REL) -> float:
    """``||ours - theirs|| / ||theirs|| <= rel`` and elementwise within rtol ``rel`` plus atol 1e-6 x max|theirs|;
    returns the relative difference."""
    ours, theirs = ours.detach().float().cpu(), theirs.detach().float().cpu()
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    diff = ct_export.relative_difference(ours, theirs)
    atol = 1e-6 * float(theirs.abs().max())
    worst = float(((ours - theirs).abs() - rel * theirs.abs()).max())
    assert diff <= rel, f"||ours - theirs|| / ||theirs|| = {diff:.3g} > {rel}"
    assert torch.allclose(ours, theirs, rtol=rel, atol=atol), f"elementwise excess {worst:.3g} > atol {atol:.3g}"
    return diff


def bos_error_nodes(graph_n_features: int, n_layers: int, n_pos: int) -> list[int]:
    return [graph_n_features + l * n_pos for l in range(n_layers)]


def assert_same_off_bos(mine, theirs) -> float:
    """Without zero_bos: equal on every node circuit-tracer has, except the error nodes at BOS (zero on its
    side, the real error on ours); our extra nodes are exactly the features at position 0."""
    keep = ct_export.bos_free(mine)
    assert torch.equal(features(mine)[mine.feature_pos != 0], theirs.active_features.cpu())
    assert int((mine.feature_pos == 0).sum()) > 0, "the test needs features active at BOS to tell the two apart"
    assert torch.equal(mine.logit_tokens, theirs.logit_token_ids.cpu())
    assert_close(mine.logit_probs, theirs.logit_probabilities)
    assert_close(mine.activations[mine.feature_pos != 0], theirs.activation_values)
    ours_adj, their_adj = mine.adjacency[keep][:, keep], theirs.adjacency_matrix.cpu()
    n_kept = int((mine.feature_pos != 0).sum())
    bos_err = bos_error_nodes(n_kept, mine.n_layers, mine.n_pos)
    cols = torch.ones(their_adj.shape[1], dtype=torch.bool)
    cols[bos_err] = False
    diff = assert_close(ours_adj[:, cols], their_adj[:, cols])
    assert float(their_adj[:, bos_err].abs().max()) == 0.0  # circuit-tracer zeroes the BOS error
    assert float(ours_adj[:, bos_err].abs().max()) > 1e-3  # ours keeps it
    return diff


def assert_same(mine, theirs) -> float:
    """With zero_bos: the same nodes and the same matrix."""
    assert torch.equal(features(mine), theirs.active_features.cpu())
    assert torch.equal(mine.logit_tokens, theirs.logit_token_ids.cpu())
    assert_close(mine.logit_probs, theirs.logit_probabilities)
    assert_close(mine.activations, theirs.activation_values)
    return assert_close(mine.adjacency, theirs.adjacency_matrix)

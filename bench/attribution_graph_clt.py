"""The issue-20 case: a GPT-2-small-shaped random model with a 12-layer random cross-layer transcoder (4,096
features per layer) gives an attribution graph on a 16-token prompt; its time against one forward pass.

    .venv/bin/python -m bench.attribution_graph --clt [--threads 2] [--budget 4096] [--threshold 2.4]

``gpt2_with_clt`` and ``clt_case`` are the pieces a side-by-side benchmark reuses (the circuit-tracer venv maps the
same weights into its own classes and times its ``attribute`` beside ``clt_case``'s figures).

The CLT: JumpReLU, ``W_enc`` Gaussian / sqrt(d_model) on ``ln2.hook_normalized`` (unit-variance inputs, so each
pre-activation is about N(0, 1)), zero encoder bias, threshold ``--threshold`` (2.4: about 0.8 % of the features,
~34 a position and layer, are active), decoders into the layer and every later one Gaussian x 0.02, no skip term
unless ``skip=True``.
"""

from __future__ import annotations

import argparse
import time

import torch

from bench.timing import median_time, random_gpt2
from lens_core import HookedTransformer
from lens_core.experiments.graphs._expand import expand_graph
from lens_core.features import CrossLayerTranscoder


def random_clt(model, d_sae: int = 4096, threshold: float = 2.4, skip: bool = False, seed: int = 0) -> CrossLayerTranscoder:
    gen = torch.Generator().manual_seed(seed)
    n, d = model.cfg.n_layers, model.cfg.d_model
    W_enc = [torch.randn(d, d_sae, generator=gen) / d**0.5 for _ in range(n)]
    b_enc = [torch.zeros(d_sae) for _ in range(n)]
    W_dec = [0.02 * torch.randn(d_sae, n - s, d, generator=gen) for s in range(n)]
    b_dec = 0.01 * torch.randn(n, d, generator=gen)
    thresholds = [torch.full((d_sae,), float(threshold)) for _ in range(n)]
    W_skip = [0.02 * torch.randn(d, d, generator=gen) / d**0.5 for _ in range(n)] if skip else None
    return CrossLayerTranscoder(W_enc, b_enc, W_dec, b_dec, hook_in="ln2.hook_normalized", activation="jumprelu",
                                threshold=thresholds, W_skip=W_skip, source="random CLT (bench)")


def gpt2_with_clt(d_sae: int = 4096, threshold: float = 2.4, skip: bool = False, device: str = "cpu"):
    """(model, clt): GPT-2 small's shape (12 layers, 768 wide, 12 heads, its vocabulary), random weights."""
    shape = argparse.Namespace(layers=12, d_model=768, heads=12, vocab=50257)
    model = HookedTransformer.from_hf_model(random_gpt2(shape), tokenizer=None).to(device)
    return model, random_clt(model, d_sae, threshold, skip).to(device)


def prompt(n_tokens: int = 16, device: str = "cpu") -> torch.Tensor:
    return torch.randint(1, 50257, (1, n_tokens), generator=torch.Generator().manual_seed(1)).to(device)


def clt_case(model, clt, ids: torch.Tensor, budget: int = 4096, repeats: int = 1) -> dict:
    """Times (seconds) of one forward pass and of the graph (``expand_graph``), and the graph's sizes."""
    sync = torch.cuda.synchronize if ids.is_cuda else (lambda: None)

    def forward():
        with torch.no_grad():
            model(ids)
        sync()

    forward_s = median_time(forward, max(5, 3 * repeats))
    times, exp = [], None
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        exp = expand_graph(model, clt, ids, max_feature_nodes=budget)
        sync()
        times.append(time.perf_counter() - start)
    graph_s = sorted(times)[len(times) // 2]
    residual = exp.graph.node_input - exp.graph.adjacency.sum(1) - exp.graph.node_bias
    if exp.graph.dropped is not None:  # features left out by the budget
        residual = residual - exp.graph.dropped
    rows = torch.cat([torch.arange(exp.graph.n_features), torch.arange(exp.graph.logit_node(0), exp.graph.n_nodes)])
    return {"forward_s": forward_s, "graph_s": graph_s, "ratio": graph_s / forward_s, "full_features": exp.full_features,
            "kept_features": exp.graph.n_features, "nodes": exp.graph.n_nodes, "edges": exp.computed_edges,
            "completeness_error": float(residual[rows].abs().max()), "first_call_s": times[0]}


CASE = "GPT-2-small-shaped random model, 12-layer random CLT (4096 features a layer)"


def print_case(figures: dict, ids: torch.Tensor, budget: int, name: str = CASE) -> None:
    print(f"== {name}: {ids.shape[1]} tokens, budget {budget} feature nodes, {ids.device}")
    print(f"   {figures['full_features']} active features; kept {figures['kept_features']} features, {figures['nodes']} "
          f"nodes; {figures['edges']} nonzero edges computed; completeness error {figures['completeness_error']:.1e}")
    print(f"   forward pass:          {figures['forward_s'] * 1e3:9.2f} ms")
    print(f"   graph (expand_graph):  {figures['graph_s'] * 1e3:9.1f} ms = {figures['ratio']:8.0f}x forward")


def main(args: argparse.Namespace) -> None:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, clt = gpt2_with_clt(threshold=args.threshold, device=device)
    ids = prompt(16, device)
    print_case(clt_case(model, clt, ids, args.budget, args.repeats), ids, args.budget)

"""Attribution graph of a 32-token prompt on the bundled model, against one forward pass, in one run.

    .venv/bin/python -m bench.attribution_graph [--repeats 5] [--threads 2]   (from the repository root)

The prompt is the bundled model's induction preset, cut or repeated to 32 tokens (BOS included).
Timed: ``build_graph`` (one forward pass with the activations cached, the batched backward walks,
every edge of the full graph), the whole experiment (graph + pruning + the real-model check of the
top 20 features, as the page runs it), and one plain forward pass of the same tokens. Goal (issue
13): the graph in <= 5 s on 2 cores. Uses the bundled transcoders; without them (not trained yet)
it says so and uses random ones of the same shape (d_sae 1024, top-32), which costs the same.

On a machine shared with other heavy jobs, two OpenMP threads can be many times slower than one
(threads spin-wait for each other): compare ``--threads 1`` before reading a slow figure as ours.
"""

from __future__ import annotations

import argparse
import json

import torch

from bench.timing import median_time
from lens_core import HookedTransformer
from lens_core.experiments import AttributionGraphRequest, attribution_graph
from lens_core.experiments.graphs._replacement import build_graph
from lens_core.features import FeaturesUnavailable, Transcoder, TranscoderConfig, TranscoderSet, load_transcoders
from lens_core.features import mlp_in_hook, mlp_out_hook




def random_set(model, d_sae: int = 1024, k: int = 32) -> TranscoderSet:
    gen = torch.Generator().manual_seed(0)
    d = model.cfg.d_model
    out = {}
    for layer in range(model.cfg.n_layers):
        tc = Transcoder(TranscoderConfig(d_in=d, d_sae=d_sae, d_out=d, layer=layer, hook_in=mlp_in_hook(layer),
                                         hook_out=mlp_out_hook(layer), activation="topk", k=k))
        with torch.no_grad():
            tc.W_enc.copy_(torch.randn(d, d_sae, generator=gen) / d**0.5)
            tc.W_dec.copy_(torch.randn(d_sae, d, generator=gen) / d**0.5)
        out[layer] = tc
    return TranscoderSet(out)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = HookedTransformer.from_pretrained("default")
    try:
        tset, which = load_transcoders(model), "bundled transcoders"
    except FeaturesUnavailable as exc:
        tset, which = random_set(model), f"RANDOM transcoders (d_sae 1024, top-32): {exc}"
    presets = json.loads((__import__("pathlib").Path(__file__).resolve().parent.parent / "lens_core" / "default_model"
                          / "presets.json").read_text())
    ids = model.to_tokens(presets[0]["prompt"])[0]
    ids = torch.cat([ids[:1], ids[1:].repeat(args.tokens)])[: args.tokens][None]
    request = AttributionGraphRequest(tokens=tuple(ids[0].tolist()))

    with torch.no_grad():
        forward = median_time(lambda: model(ids), max(20, args.repeats * 4))
    graph_s = median_time(lambda: build_graph(model, tset, ids), args.repeats)
    whole = median_time(lambda: attribution_graph(model, request, transcoders=tset), args.repeats)
    graph = build_graph(model, tset, ids)
    result = attribution_graph(model, request, transcoders=tset)
    print(f"transcoders: {which}")
    print(f"prompt: {ids.shape[1]} tokens, {args.threads} threads; full graph {graph.n_nodes} nodes "
          f"({graph.n_features} features), {int((graph.adjacency != 0).sum())} nonzero edges; "
          f"pruned to {len(result.node_kind)} nodes, {int((result.adjacency != 0).sum())} edges")
    print(f"forward pass:                      {forward * 1e3:8.2f} ms")
    print(f"graph (build_graph):               {graph_s * 1e3:8.1f} ms  = {graph_s / forward:7.0f}x forward   goal <= 5000 ms")
    print(f"experiment (graph + prune + check): {whole * 1e3:8.1f} ms  = {whole / forward:7.0f}x forward")
    print(f"completeness error {result.completeness_error:.2e}; check over the top {len(result.check_nodes)} features: "
          f"r = {result.check_correlation:.3f} in the real model, {result.check_correlation_frozen:.3f} with attention "
          "patterns and norm scales frozen")


if __name__ == "__main__":
    main()

"""Attribution graphs at length (issue 21), each against one forward pass of the same tokens in the same run.

    .venv/bin/python -m bench.attribution_graph [--repeats 3] [--threads 2]   (from the repository root)
    .venv/bin/python -m bench.attribution_graph --clt   (issue 20's cross-layer transcoder case only:
                                                        bench/attribution_graph_clt.py)
    .venv-ct/bin/python -m bench.attribution_graph --circuit-tracer [--plt]   (the same CLT case beside
        circuit-tracer 0.5's attribute() on the same weights, in its own venv: bench/attribution_graph_ct.py)

1. The bundled model, a 128-token prompt (its induction preset repeated), the default feature-node budget
   (``max_feature_nodes=4096``, influence-ordered expansion, graphs._expand). Goal: the graph <= 2 s.
   Uses the bundled transcoders; without them (not trained yet) it says so and uses random ones of the
   same shape (d_sae 1024, top-32), which costs the same.
2. A GPT-2-small-shaped random model (12 layers, 768 wide, 12 heads, GPT-2's vocabulary) with 12 random
   8192-feature top-k transcoders (``--k`` active features per position), a 64-token prompt, the budget
   ``--budget`` (default 4096). Goal: <= 10 s and <= 4 GB peak on 2 cores.

Printed for each: the graph build (``expand_graph``: forward pass with the cache, batched backward rows,
influence re-estimated per batch), the whole experiment (+ pruning, scores, the real-model check), the
forward pass, their ratio, the graph's size, the stated memory bound, and the peak resident memory of the
process (``ru_maxrss``, model weights included; a high-water mark, so case 2 includes case 1's).
On a machine shared with other heavy jobs, two OpenMP threads can be many times slower than one
(threads spin-wait for each other): compare ``--threads 1`` before reading a slow figure as ours.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import pathlib
import resource
import statistics
import sys
import time

import torch

from bench.timing import median_time, random_gpt2
from lens_core import HookedTransformer
from lens_core.experiments import AttributionGraphRequest, attribution_graph
from lens_core.experiments.graphs._expand import expand_graph
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


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def timed(fn, repeats: int):
    """(last value, median seconds) of ``repeats`` calls."""
    times, value = [], None
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - start)
    return value, statistics.median(times)


def case(name, model, tset, ids, budget, repeats, goal_s):
    request = AttributionGraphRequest(tokens=tuple(ids[0].tolist()), max_feature_nodes=budget)
    with torch.no_grad():
        forward = median_time(lambda: model(ids), max(5, repeats * 3))
    build = lambda: expand_graph(model, tset, ids, max_feature_nodes=budget)  # noqa: E731
    build()  # warm-up
    exp, graph_s = timed(build, repeats)
    result, whole = timed(lambda: attribution_graph(model, request, transcoders=tset), 1)
    print(f"== {name}: {ids.shape[1]} tokens, budget {budget} feature nodes")
    print(f"   full graph {exp.full_nodes} nodes ({exp.full_features} active features); kept {exp.graph.n_features} "
          f"features, {exp.graph.n_nodes} nodes; {exp.computed_edges} nonzero edges computed; stated memory bound "
          f"{exp.memory_bound_bytes / 2**30:.2f} GiB (dense full graph would be {4 * exp.full_nodes**2 / 2**30:.2f} GiB)")
    print(f"   forward pass:                        {forward * 1e3:9.2f} ms")
    print(f"   graph (expand_graph):                {graph_s * 1e3:9.1f} ms = {graph_s / forward:8.0f}x forward   "
          f"goal <= {goal_s * 1e3:.0f} ms")
    print(f"   experiment (graph+prune+scores+check): {whole * 1e3:7.1f} ms = {whole / forward:8.0f}x forward")
    print(f"   replacement score {result.replacement_score:.3f}, completeness score {result.completeness_score:.3f}; "
          f"completeness error {result.completeness_error:.1e}; peak RSS so far {peak_gib():.2f} GiB")
    print(f"   notice: {result.notice}")


def main() -> None:
    if "--circuit-tracer" in sys.argv:  # its own venv and flags: everything after is bench/attribution_graph_ct's
        sys.argv.remove("--circuit-tracer")
        if importlib.util.find_spec("circuit_tracer") is None:
            sys.exit("--circuit-tracer runs in the circuit-tracer venv: .venv-ct/bin/python -m bench.attribution_graph "
                     "--circuit-tracer (.ci/run builds it from requirements-circuit-tracer.txt)")
        from bench.attribution_graph_ct import main as ct_main

        ct_main()
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--budget", type=int, default=4096, help="feature nodes, GPT-2-shaped case")
    parser.add_argument("--k", type=int, default=32, help="active features per position, GPT-2-shaped case")
    parser.add_argument("--skip-bundled", action="store_true")
    parser.add_argument("--clt", action="store_true", help="only the issue-20 case: GPT-2-small-shaped model, 12-layer "
                                                           "random CLT, 16 tokens (bench/attribution_graph_clt.py)")
    parser.add_argument("--threshold", type=float, default=2.4, help="the random CLT's JumpReLU threshold")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{args.threads} threads")
    if args.clt:
        from bench.attribution_graph_clt import main as clt_main

        clt_main(args)
        return
    if not args.skip_bundled:
        model = HookedTransformer.from_pretrained("default")
        try:
            tset, which = load_transcoders(model), "bundled transcoders"
        except FeaturesUnavailable as exc:
            tset, which = random_set(model), f"RANDOM transcoders (d_sae 1024, top-32): {exc}"
        presets = json.loads((pathlib.Path(__file__).resolve().parent.parent / "lens_core" / "default_model"
                              / "presets.json").read_text())
        ids = model.to_tokens(presets[0]["prompt"])[0]
        ids = torch.cat([ids[:1], ids[1:].repeat(128)])[:128][None]
        case(f"bundled model, {which}", model, tset, ids, 4096, args.repeats, 2.0)
    shape = argparse.Namespace(layers=12, d_model=768, heads=12, vocab=50257)
    gpt2 = HookedTransformer.from_hf_model(random_gpt2(shape), tokenizer=None)
    tset = random_set(gpt2, d_sae=8192, k=args.k)
    ids = torch.randint(1, 50257, (1, 64), generator=torch.Generator().manual_seed(1))
    case(f"GPT-2-small-shaped random model, 12 x 8192-feature random top-{args.k} transcoders", gpt2, tset, ids,
         args.budget, 1, 10.0)


if __name__ == "__main__":
    main()

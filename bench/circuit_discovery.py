"""Circuit discovery costs, as multiples of one forward pass, in one run.

    PYTHONPATH=. .venv/bin/python -m bench.circuit_discovery          (from the repository root)

GPT-2-small shape (12 layers, d_model 768, 12 heads, vocab 50257), random weights, one
clean/corrupted pair of 16 tokens, metric = logit difference at the last position. Reported
against the median time of one plain forward pass of the clean prompt, measured here:

- EAP over every edge (2 forward passes, 1 backward; goal <= 5x);
- EAP-IG with 5 steps (goal <= 25x);
- the exact 10-point faithfulness curve (10 circuits in one batch; goal <= 15x);
- exact per-edge patching (one patched run per edge), estimated from a timed batch of single-edge
  removals, for scale.

Times are the process's CPU time (``time.process_time``, all threads), so other jobs on a shared
machine do not count. Each computation is timed right after its own reference (the median of 3
forward passes), and the ratio is the median over ``--repeats`` such pairs, after a warm-up run.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from bench.timing import add_model_args, median_time, random_gpt2, set_threads
from lens_core import HookedTransformer
from lens_core.experiments.edge_circuits.circuit_graph import rank_edges, top_circuit
from lens_core.experiments.edge_circuits.edges import EdgeAttributionRequest, build_graph, edge_attribution, sender_outputs, task_from_request
from lens_core.experiments.edge_circuits.faithfulness import curve_sizes, patched_metric


def main() -> None:
    parser = argparse.ArgumentParser()
    add_model_args(parser)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    set_threads(args.threads)
    hf = random_gpt2(args, n_positions=max(64, args.tokens))
    model = HookedTransformer.from_hf_model(hf)
    gen = torch.Generator().manual_seed(1)
    clean = torch.randint(1, args.vocab, (args.tokens,), generator=gen)
    corrupted = clean.clone()
    corrupted[args.tokens // 2] = (clean[args.tokens // 2] + 1) % args.vocab
    pair = dict(clean_tokens=tuple(clean.tolist()), corrupted_tokens=tuple(corrupted.tolist()), answer=5, wrong_answer=6)
    graph = build_graph(model.cfg)
    n_edges = int(graph.allowed.sum())
    print(f"model: {args.layers} layers, d_model {args.d_model}, {args.heads} heads, vocab {args.vocab}; "
          f"{args.tokens} tokens; graph: {len(graph.senders)} senders, {len(graph.receivers)} receivers, {n_edges} edges; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    tokens = clean[None]
    eap_request = EdgeAttributionRequest(**pair, method="eap")
    ig_request = EdgeAttributionRequest(**pair, method="eap_ig", ig_steps=5)
    scores = edge_attribution(model, eap_request)
    task = task_from_request(model, eap_request)
    order = rank_edges(scores.scores, scores.allowed)
    sizes = curve_sizes(n_edges, 10)
    masks = torch.stack([top_circuit(scores.scores, scores.allowed, scores.receiver_owners, k, order)[0] for k in sizes])
    corrupt_out = sender_outputs(model, graph, task.corrupted)[0]
    # Exact per-edge patching: every edge removed alone; timed on a batch of 16 single-edge circuits.
    singles = graph.allowed[None].repeat(16, 1, 1)
    for row, flat in enumerate(order[:16].tolist()):
        singles[row].view(-1)[flat] = False

    def forward():
        with torch.no_grad():
            model(tokens)

    work = {
        "EAP, all edges": (lambda: edge_attribution(model, eap_request), 5),
        "EAP-IG, 5 steps": (lambda: edge_attribution(model, ig_request), 25),
        f"faithfulness curve, {len(sizes)} points": (lambda: patched_metric(model, graph, task, masks, corrupt_out), 15),
        "16 single-edge removals": (lambda: patched_metric(model, graph, task, singles, corrupt_out), None),
    }
    # The machine may be shared: each repeat times a forward pass right before each computation, and the
    # ratio is taken per pair, so a slow spell affects both sides of a ratio alike.
    ratios: dict[str, list] = {name: [] for name in work}
    seconds: dict[str, list] = {name: [] for name in work}
    forward()
    for fn, _ in work.values():
        fn()  # warm-up
    for _ in range(args.repeats):
        for name, (fn, _) in work.items():
            reference = statistics.median(timed_once(forward) for _ in range(3))
            took = timed_once(fn)
            ratios[name].append(took / reference)
            seconds[name].append(took)
    forward_s = median_time(forward, 5)
    print(f"one forward pass (median of 5, wall clock): {forward_s * 1e3:.1f} ms; the figures below are CPU time")
    for name, (_, goal) in work.items():
        ratio, took = statistics.median(ratios[name]), statistics.median(seconds[name])
        target = f" (goal <= {goal}x)" if goal else ""
        print(f"{name:34s} {took * 1e3:9.1f} ms = {ratio:6.1f}x forward{target}   [ratios: {', '.join(f'{r:.1f}' for r in ratios[name])}]")
    per_edge = statistics.median(ratios["16 single-edge removals"]) / 16
    print(f"exact per-edge patching, all {n_edges} edges (estimated): {per_edge * n_edges:,.0f}x forward "
          f"({per_edge:.2f}x per edge, batched 16 at a time)")


def timed_once(fn) -> float:
    """CPU seconds of this process (all its threads): on a shared machine, the work done, not the wait."""
    start = time.process_time()
    fn()
    return time.process_time() - start


if __name__ == "__main__":
    main()

"""Attribution graph: ours beside circuit-tracer 0.5.0's on the same weights (issue 20). Run in the circuit-tracer venv:

    .venv-ct/bin/python -m bench.attribution_graph_ct [--threads 2] [--active 24] [--plt] [--repeats 1]

A GPT-2-small-shaped random model (12 layers, 768 wide, 12 heads, GPT-2's vocabulary; bench.timing.random_gpt2,
our weight processing on) with a random 12-layer cross-layer transcoder (4,096 features per layer, ReLU, the
encoder bias set so that about ``--active`` features fire per layer and position) on a 16-token prompt that
starts with BOS. Our graph (``graphs._replacement.build_graph``, no feature budget) and circuit-tracer's
(``attribute``, its transformer-lens backend, no feature budget) are built on the same weights: our processed
weights exported into its replacement model and our CLT mapped into its CrossLayerTranscoder
(tests/ct_compat/ct_export.py). ``--plt`` adds the same case with 12 per-layer transcoders of 4,096 features.

Printed: each side's graph time (median of ``--repeats``, alternated; ours after one untimed call,
circuit-tracer's first call counted: it runs for minutes), their ratio (circuit-tracer / ours), the graph's
size, and how far the two agree (ours with ``zero_bos=True``, circuit-tracer's BOS convention, so the node
sets are the same): ``||ours - theirs|| / ||theirs||`` and the largest elementwise difference over max |theirs|.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys
import time

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests" / "support"), str(ROOT / "tests" / "ct_compat")]

import ct_export

from bench.timing import random_gpt2
from lens_core import HookedTransformer
from lens_core.experiments.graphs._replacement import build_graph
from lens_core.features import (
    CrossLayerTranscoder,
    FeaturesUnavailable,
    Transcoder,
    TranscoderConfig,
    TranscoderSet,
)

D_SAE = 4096


def _shift(active: int, d_sae: int) -> float:
    """The encoder bias that leaves about ``active`` of ``d_sae`` standard-normal pre-activations above 0."""
    return -float(torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(1.0 - active / d_sae)))


def random_clt(model, d_sae: int = D_SAE, active: int = 24, seed: int = 0) -> CrossLayerTranscoder:
    gen = torch.Generator().manual_seed(seed)
    n, d = model.cfg.n_layers, model.cfg.d_model
    shift = _shift(active, d_sae)
    W_enc = [torch.randn(d, d_sae, generator=gen) / d**0.5 for _ in range(n)]  # ln2's output has unit RMS
    b_enc = [torch.full((d_sae,), shift) for _ in range(n)]
    W_dec = [torch.randn(d_sae, n - s, d, generator=gen) / (d * (n - s)) ** 0.5 for s in range(n)]
    b_dec = torch.zeros(n, d)
    return CrossLayerTranscoder(W_enc, b_enc, W_dec, b_dec, hook_in="ln2.hook_normalized", hook_out="hook_mlp_out",
                                activation="relu", source=f"random CLT ({n} x {d_sae})")


def random_plt(model, d_sae: int = D_SAE, active: int = 24, seed: int = 0) -> TranscoderSet:
    gen = torch.Generator().manual_seed(seed)
    d, shift, out = model.cfg.d_model, _shift(active, d_sae), {}
    for l in range(model.cfg.n_layers):
        tc = Transcoder(TranscoderConfig(d_in=d, d_sae=d_sae, d_out=d, layer=l, hook_in=f"blocks.{l}.ln2.hook_normalized",
                                         hook_out=f"blocks.{l}.hook_mlp_out", activation="relu"))
        with torch.no_grad():
            tc.W_enc.copy_(torch.randn(d, d_sae, generator=gen) / d**0.5)
            tc.b_enc.fill_(shift)
            tc.W_dec.copy_(torch.randn(d_sae, d, generator=gen) / d**0.5)
        out[l] = tc
    return TranscoderSet(out)


def agreement(mine, theirs, zero_bos: bool) -> tuple[float, float]:
    """(||ours - theirs|| / ||theirs||, max |ours - theirs| / max |theirs|) on the nodes both have."""
    keep = ct_export.bos_free(mine)
    ours_adj, their_adj = mine.adjacency[keep][:, keep], theirs.adjacency_matrix.cpu()
    if ours_adj.shape != their_adj.shape:
        raise AssertionError(f"node sets differ: ours {tuple(ours_adj.shape)}, circuit-tracer {tuple(their_adj.shape)}")
    if not zero_bos:  # circuit-tracer's BOS error columns are zero; ours are the real error
        n_feat = int((mine.feature_pos != 0).sum())
        cols = torch.ones(their_adj.shape[1], dtype=torch.bool)
        cols[[n_feat + l * mine.n_pos for l in range(mine.n_layers)]] = False
        ours_adj, their_adj = ours_adj[:, cols], their_adj[:, cols]
    rel = ct_export.relative_difference(ours_adj, their_adj)
    return rel, float((ours_adj - their_adj).abs().max() / their_adj.abs().max())


def case(name, model, tokenizer, dictionary, ids, batch, repeats) -> None:
    print(f"== {name}: {ids.shape[1]} tokens, no feature budget, batch {batch}")
    start = time.perf_counter()
    ct = ct_export.ct_model(model, tokenizer, dictionary)
    print(f"   circuit-tracer model built from our weights in {time.perf_counter() - start:.1f} s")
    ours = lambda: build_graph(model, dictionary, ids, max_nodes=10**6, batch_size=batch, zero_bos=True)
    theirs = lambda: ct_export.ct_graph(ct, ids, batch_size=batch)
    contenders = {"circuit-tracer": theirs, "ours": ours}
    try:
        ours()
    except FeaturesUnavailable as exc:
        print(f"   ours: refused by the graph core on this branch ({exc}); circuit-tracer's time alone")
        contenders.pop("ours")
    times, graphs = {k: [] for k in contenders}, {}
    for _ in range(max(1, repeats)):
        for k, fn in contenders.items():
            t0 = time.perf_counter()
            graphs[k] = fn()
            times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    g = graphs["circuit-tracer"]
    print(f"   circuit-tracer graph: {g.adjacency_matrix.shape[0]} nodes ({g.active_features.shape[0]} features, "
          f"{len(g.logit_targets)} logits)")
    print(f"   circuit-tracer attribute():  {med['circuit-tracer']:8.2f} s")
    if "ours" in med:
        mine = graphs["ours"]
        print(f"   ours build_graph():           {med['ours']:8.2f} s   ({mine.n_nodes} nodes, {mine.n_features} features, zero_bos)")
        print(f"   ratio circuit-tracer / ours:  {med['circuit-tracer'] / med['ours']:8.1f}x")
        rel, worst = agreement(mine, g, zero_bos=True)
        print(f"   agreement: ||ours - theirs|| / ||theirs|| = {rel:.2e}; max |diff| / max |theirs| = {worst:.2e}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--active", type=int, default=24, help="features active per layer and position (about)")
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--batch", type=int, default=256, help="rows per backward pass, both sides")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--plt", action="store_true", help="also 12 per-layer transcoders of 4,096 features")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{args.threads} threads, torch {torch.__version__}")
    import ct_pairs

    tokenizer = ct_pairs.tokenizer()  # special token 0 (BOS); the prompt's other ids are random
    shape = argparse.Namespace(layers=12, d_model=768, heads=12, vocab=50257)
    model = HookedTransformer.from_hf_model(random_gpt2(shape), tokenizer=None)
    ids = torch.randint(1, 50257, (1, args.tokens), generator=torch.Generator().manual_seed(1))
    ids[0, 0] = 0
    case(f"GPT-2-small-shaped random model, random 12-layer CLT x {D_SAE} features (~{args.active} active per "
         "layer and position)", model, tokenizer, random_clt(model, active=args.active), ids, args.batch, args.repeats)
    if args.plt:
        case(f"GPT-2-small-shaped random model, 12 random per-layer transcoders x {D_SAE} (~{args.active} active)",
             model, tokenizer, random_plt(model, active=args.active), ids, args.batch, args.repeats)


if __name__ == "__main__":
    main()

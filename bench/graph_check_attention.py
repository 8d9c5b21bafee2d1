"""The attribution graph's real-model check on every bundled preset and a 32-token induction prompt: the graph's
frozen-attention prediction beside predictions through every path of the real model (attention moving).

    .venv/bin/python -m bench.graph_check_attention      (from the repository root)

For each prompt: the top 20 features by influence are zeroed one at a time in the real model
(``attribution_graph``'s check) and the change of the first target's demeaned logit is correlated (Pearson r)
with: the graph's prediction (attention and norms frozen); the same zeroing in the real model with attention
frozen (what the graph assumes); the real model's gradient at the clean run x -activation; the gradient at the
midpoint of the path (one backward pass, ``full_path_check.gradient_predictions(steps=1)``); and 4 steps.
An accuracy report, not a timing.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from lens_core import HookedTransformer
from lens_core.experiments import AttributionGraphRequest, attribution_graph
from lens_core.experiments.graphs.attribution_graph import _pearson
from lens_core.experiments.graphs.full_path_check import gradient_predictions
from lens_core.features import load_transcoders


def clean_gradient(model, tset, tokens, feats, target):
    """The gradient at the clean run (the path's start), from a tiny step's midpoint: the plain attribution."""
    tiny = [(l, p, f, 1e-3) for l, p, f, _ in feats]
    g = gradient_predictions(model, tset, tokens, tiny, target, steps=1) / -1e-3
    return g * -torch.tensor([a for *_, a in feats])


def main() -> None:
    model = HookedTransformer.from_pretrained("default")
    tset = load_transcoders(model)
    presets = json.loads((Path(__file__).resolve().parent.parent / "lens_core" / "default_model" / "presets.json").read_text())
    ids = model.to_tokens(presets[0]["prompt"])[0]
    long = torch.cat([ids[:1], ids[1:].repeat(4)])[:32]
    cases = [(p["name"], dict(prompt=p["prompt"])) for p in presets] + [("Induction, 32 tokens", dict(tokens=tuple(long.tolist())))]
    print("Pearson r against the real zeroing (top 20 features). graph: the graph's prediction; graph|frozen: the same\n"
          "against the zeroing with attention and norm scales frozen; grad@0, mid, 4 steps: the real model's gradient\n"
          "through every path (at the clean run, at the path's midpoint, 4-step integral)")
    print(f"{'prompt':48s} {'graph':>7s} {'g|frozen':>8s} {'grad@0':>7s} {'mid':>7s} {'4 steps':>7s}")
    for name, kw in cases:
        r = attribution_graph(model, AttributionGraphRequest(**kw), transcoders=tset)
        feats = [(r.node_layer[i], r.node_pos[i], r.node_feature[i], float(r.node_activation[i])) for i in r.check_nodes]
        tokens = torch.tensor([r.token_ids])
        target = r.logit_ids[0]
        cols = [r.check_correlation, _pearson(r.check_predicted, r.check_actual_frozen),
                _pearson(clean_gradient(model, tset, tokens, feats, target), r.check_actual)]
        cols += [_pearson(gradient_predictions(model, tset, tokens, feats, target, steps=s), r.check_actual) for s in (1, 4)]
        print(f"{name[:48]:48s} " + " ".join(f"{c:7.3f}" if c is not None else "    n/a" for c in cols[:1])
              + f" {cols[1]:8.3f} " + " ".join(f"{c:7.3f}" for c in cols[2:]))


if __name__ == "__main__":
    main()

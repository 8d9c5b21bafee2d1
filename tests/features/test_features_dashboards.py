"""Dashboard numbers recomputed from scratch, one position at a time, with the model and the transcoder."""

from __future__ import annotations

import collections

import pytest
import torch
from features_support import default_model, random_set

from lens_core.features import FeaturesUnavailable
from lens_core.features.dashboards import Dashboards, build_dashboards, save_dashboards

TEXTS = ["def copy(self, other):\n    return self.data[other]\n", "import os\nimport sys\n\nclass Path(object):\n    pass\n",
         "for i in range(10):\n    print(i, end='')\n", "x = {'a': 1, 'b': [2, 3]}\nif x:\n    y = x['a']\n"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    model = default_model()
    tset = random_set(model, seed=5)
    tokens = model.to_tokens(TEXTS)  # right-padded with id 0
    lengths = torch.tensor([len(model.to_tokens(t)[0]) for t in TEXTS])
    tensors = build_dashboards(model, tset, tokens, lengths, n_top=5, before=3, after=2, n_bins=4, n_logits=3,
                               n_inputs=3)
    directory = tmp_path_factory.mktemp("dash")
    save_dashboards(tensors, directory, {"before": 3, "after": 2})
    return model, tset, tokens, lengths, Dashboards(directory)


def _per_position(model, tset, tokens, lengths, layer, kind, index):
    """(activation, window, pos, token) at every real non-BOS position, from a plain loop."""
    rows = []
    for w in range(len(tokens)):
        row = tokens[w:w + 1, :int(lengths[w])]
        _, cache = model.run_with_cache(row)
        if kind == "feature":
            acts = tset[layer].encode(cache[f"blocks.{layer}.ln2.hook_normalized"])[0, :, index]
        else:
            acts = cache[f"blocks.{layer}.mlp.hook_post"][0, :, index]
        rows += [(acts[p].item(), w, p, int(row[0, p])) for p in range(1, row.shape[1])]
    return rows


@pytest.mark.parametrize("kind,layer,index", [("feature", 0, 3), ("feature", 2, 100), ("neuron", 1, 7)])
def test_dashboard_recomputed_from_scratch(built, kind, layer, index):
    model, tset, tokens, lengths, dash = built
    n_units = dash.n_units(kind, layer)  # pick a unit that fires somewhere, so the check is not vacuous
    index = next(i for i in range(index, n_units) if dash.unit(kind, layer, i)["density"] > 0)
    unit = dash.unit(kind, layer, index)
    rows = _per_position(model, tset, tokens, lengths, layer, kind, index)
    acts = [a for a, *_ in rows]
    positive = [a for a in acts if a > 0]
    assert unit["density"] == pytest.approx(len(positive) / len(acts))
    ranked = sorted(rows, key=lambda r: -r[0])[:5]
    if kind == "feature":
        ranked = [r for r in ranked if r[0] > 0]
    assert [t["value"] for t in unit["top"]] == pytest.approx([r[0] for r in ranked], rel=1e-4, abs=1e-5)
    best = unit["top"][0]
    assert (best["window"], best["pos"]) == (ranked[0][1], ranked[0][2])
    w, p = best["window"], best["pos"]
    expected_tokens = [int(tokens[w, q]) if 0 <= q < lengths[w] else -1 for q in range(p - 3, p + 3)]
    assert best["tokens"] == expected_tokens
    context = {(r[1], r[2]): r[0] for r in rows}
    expected_acts = [context.get((w, q), None) for q in range(p - 3, p + 3)]
    for got, want in zip(best["acts"], expected_acts):
        if want is not None:  # BOS and outside-window positions are not part of the corpus statistics
            assert got == pytest.approx(want, rel=2e-3, abs=2e-3)  # stored as float16
    hi = max(acts)
    assert unit["hist_hi"] == pytest.approx(hi, rel=1e-5)
    hist = [0, 0, 0, 0]
    for a in positive:
        hist[min(3, max(0, int(-(-a * 4 // hi)) - 1))] += 1
    assert sum(unit["hist"]) == len(positive)
    assert unit["hist"] == hist
    direction = tset[layer].W_dec[index] if kind == "feature" else model.blocks[layer].mlp.W_out[index]
    effects = direction @ model.W_U
    assert [i for i, _ in unit["logits_up"]] == effects.argsort(descending=True)[:3].tolist()
    assert [i for i, _ in unit["logits_down"]] == effects.argsort()[:3].tolist()
    if kind == "feature":
        sums = collections.Counter()
        for a, _, _, tok in rows:
            sums[tok] += max(a, 0.0)
        top_inputs = [tok for tok, s in sums.most_common() if s > 0][:3]
        assert [i["token"] for i in unit["inputs"]] == top_inputs
        assert unit["inputs"][0]["count"] == sum(1 for a, _, _, tok in rows if tok == top_inputs[0] and a > 0)


def test_bad_unit_requests_are_clear(built, tmp_path):
    dash = built[-1]
    with pytest.raises(FeaturesUnavailable, match="feature 256 is out of range: layer 0 has features 0..255"):
        dash.unit("feature", 0, 256)
    with pytest.raises(FeaturesUnavailable, match="no neuron dashboards for layer 5"):
        dash.unit("neuron", 5, 0)
    with pytest.raises(FeaturesUnavailable, match="missing dashboard file"):
        Dashboards(tmp_path)

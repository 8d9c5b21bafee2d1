"""Every registered experiment returns a result that survives the pickle-free disk format."""

import dataclasses
import json

import pytest
import torch

from lens_core.experiments import REGISTRY, REQUEST_TYPES
from lens_core.results import ExperimentResult

from exp_tiny import tiny
from graph_support import random_transcoders

TOKS, OTHER = (3, 8, 1, 20, 7), (3, 9, 1, 21, 7)
REQUESTS = {
    "predictions": dict(tokens=TOKS),
    "attention_patterns": dict(tokens=TOKS),
    "logit_lens": dict(tokens=TOKS, targets=(4, 5)),
    "dla": dict(tokens=TOKS, answer=4, wrong_answer=5),
    "activation_patching": dict(clean_tokens=TOKS, corrupted_tokens=OTHER, answer=4, wrong_answer=5, sweep="head_out_by_pos"),
    "path_patching": dict(clean_tokens=TOKS, corrupted_tokens=OTHER, answer=4, receivers=((2, 1, "q"),)),
    "attribution_patching": dict(clean_tokens=TOKS, corrupted_tokens=OTHER, answer=4, wrong_answer=5, sweep="head_out_by_pos"),
    "edge_attribution": dict(clean_tokens=TOKS, corrupted_tokens=OTHER, answer=4, wrong_answer=5, method="eap_ig", ig_steps=2),
    "circuit_faithfulness": dict(clean_tokens=TOKS, corrupted_tokens=OTHER, answer=4, wrong_answer=5, n_edges=5, curve_points=3),
    "ablation": dict(tokens=TOKS, components=(("head", 0, 1), ("mlp", 2))),
    "ablation_sweep": dict(tokens=TOKS, answer=4),
    "head_detectors": dict(seq_len=6, batch=2),
    "head_circuits": dict(layer=1, head=0),
    "composition": dict(),
    "browse": dict(component=("head", 1, 2), method="resample", corpus_tokens=tuple(range(1, 40)), window_len=8, top_k=5),
    "browse_example": dict(component=("head", 1, 2), method="mean", corpus_tokens=tuple(range(1, 40)), window_len=8,
                           window=2, position=3),
    "attribution_graph": dict(tokens=TOKS, targets=(4, 5), check_top=4),
    "graph_intervention": dict(tokens=TOKS, clamps=((1, 2, 0, 0.0),), targets=(4,)),
    "feature_activations": dict(tokens=TOKS, top_per_token=3),
    "unit_activation": dict(tokens=TOKS, kind="feature", layer=1, index=2),
    "feature_steering": dict(tokens=TOKS, edits=((1, 2, 3.0),)),
    "qk_attribution": dict(tokens=TOKS, layer=2, head=1),
}
# Experiments that need more than the model (tiny models have no bundled transcoders).
EXTRA = {"attribution_graph": lambda m: {"transcoders": random_transcoders(m)},
         "graph_intervention": lambda m: {"transcoders": random_transcoders(m)},
         **{name: (lambda m: {"transcoders": random_transcoders(m)})
            for name in ("feature_activations", "unit_activation", "feature_steering", "qk_attribution")}}


def _same(a, b):
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a.isnan(), b.isnan()) and torch.equal(
            a.nan_to_num(), b.nan_to_num())
    return a == b


def test_every_experiment_is_requested_here():
    assert set(REGISTRY) == set(REQUESTS) == set(REQUEST_TYPES)


@pytest.mark.parametrize("name", sorted(REQUESTS))
def test_result_round_trips_through_json_and_tensors(name):
    model = tiny("gpt2")
    request = REQUEST_TYPES[name](**REQUESTS[name])
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(request, dataclasses.fields(request)[0].name, None)
    result = REGISTRY[name](model, request, **EXTRA.get(name, lambda m: {})(model))
    assert isinstance(result, ExperimentResult)
    tensors, meta = result.to_parts()
    meta = json.loads(json.dumps(meta))  # JSON-able, and what a reader gets back
    back = ExperimentResult.from_parts(tensors, meta)
    assert type(back) is type(result)
    for field in dataclasses.fields(result):
        assert _same(getattr(back, field.name), getattr(result, field.name)), field.name

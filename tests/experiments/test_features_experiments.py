"""The Features page's experiments against the library calls they wrap, on the bundled model."""

from __future__ import annotations

import pytest
import torch
from features_support import default_model, random_set

from lens_core.experiments.views.features import (FeatureActivationsRequest, SteeringRequest, UnitActivationRequest,
                                            feature_activations_on_prompt, feature_steering, unit_activation)
from lens_core.features import FeaturesUnavailable, feature_activations, steer

PROMPT = "import os\nfor name in os.listdir(path):\n    print(name)"


@pytest.fixture(scope="module")
def setup():
    model = default_model()
    tset = random_set(model, seed=2)
    ids = tuple(model.to_tokens(PROMPT)[0].tolist())
    return model, tset, ids


def test_top_features_per_token(setup):
    model, tset, ids = setup
    result = feature_activations_on_prompt(model, FeatureActivationsRequest(tokens=ids, top_per_token=4), transcoders=tset)
    acts = feature_activations(model, tset, torch.tensor([ids]))
    assert result.layers == [0, 1, 2] and len(result.str_tokens) == len(ids)
    for i, layer in enumerate(result.layers):
        a = acts[layer][0]
        for pos in range(len(ids)):
            expected = sorted(((v, f) for f, v in enumerate(a[pos].tolist()) if v > 0), reverse=True)[:4]
            got = [(v, f) for v, f in zip(result.top_acts[i, pos].tolist(), result.top_features[i, pos].tolist()) if f >= 0]
            assert [f for _, f in got] == [f for _, f in expected]
            assert int(result.n_active[i, pos]) == int((a[pos] != 0).sum())
        peak = a.max(0).values
        expected_rows = [f for f in peak.argsort(descending=True)[:12].tolist() if peak[f] > 0]
        assert [f for f in result.peak_features[i].tolist() if f >= 0] == expected_rows
        torch.testing.assert_close(result.peak_acts[i, 0], a[:, expected_rows[0]])


def test_unit_activation_feature_and_neuron(setup):
    model, tset, ids = setup
    feature = unit_activation(model, UnitActivationRequest(tokens=ids, kind="feature", layer=2, index=5), transcoders=tset)
    torch.testing.assert_close(feature.acts, feature_activations(model, tset, torch.tensor([ids]))[2][0, :, 5])
    neuron = unit_activation(model, UnitActivationRequest(tokens=ids, kind="neuron", layer=2, index=300))
    _, cache = model.run_with_cache(torch.tensor([ids]))
    torch.testing.assert_close(neuron.acts, cache["blocks.2.mlp.hook_post"][0, :, 300])
    with pytest.raises(FeaturesUnavailable, match="neuron 512 is out of range: layer 0 has neurons 0..511"):
        unit_activation(model, UnitActivationRequest(tokens=ids, kind="neuron", layer=0, index=512))
    with pytest.raises(FeaturesUnavailable, match="feature 300 is out of range"):
        unit_activation(model, UnitActivationRequest(tokens=ids, kind="feature", layer=0, index=300), transcoders=tset)


def test_steering_result_matches_library_steer(setup):
    model, tset, ids = setup
    request = SteeringRequest(tokens=ids, edits=((1, 3, 8.0), (2, 4, 0.0)), positions=(len(ids) - 1,), top_k=5)
    result = feature_steering(model, request, transcoders=tset)
    original, steered = steer(model, tset, torch.tensor([ids]), {1: {3: 8.0}, 2: {4: 0.0}}, positions=[len(ids) - 1])
    probs = steered[0].softmax(-1)
    assert result.steered_ids[-1].tolist() == probs[-1].topk(5).indices.tolist()
    assert result.original_ids[-1].tolist() == original[0, -1].softmax(-1).topk(5).indices.tolist()
    assert torch.allclose(result.kl[:-1], torch.zeros(len(ids) - 1), atol=1e-5)  # only the last position was edited
    assert result.kl[-1] > 0
    with pytest.raises(ValueError, match="position 99 is outside the prompt"):
        feature_steering(model, SteeringRequest(tokens=ids, edits=((0, 1, 1.0),), positions=(99,)), transcoders=tset)

"""Attribution graphs refuse dictionary kinds they cannot yet take (skip and cross-layer transcoders),
with a message in words, instead of a type error or a silently folded skip term."""

from __future__ import annotations

import pytest
import torch
from features_support import default_model, random_transcoder

from lens_core.experiments import AttributionGraphRequest, attribution_graph
from lens_core.features import FeaturesUnavailable
from lens_core.features.clt import CrossLayerTranscoder
from lens_core.features.skip import SkipTranscoder

PROMPT = " own thread sequences own thread"


def test_a_skip_transcoder_is_refused_with_its_layers():
    model = default_model()
    d = model.cfg.d_model
    tcs = {l: random_transcoder(l, d_in=d, d_out=d) for l in range(model.cfg.n_layers)}
    skip = SkipTranscoder(tcs[1].cfg)
    skip.load_state_dict(tcs[1].state_dict(), strict=False)
    tcs[1] = skip
    with pytest.raises(FeaturesUnavailable, match=r"skip transcoders are not supported yet \(layers \[1\]"):
        attribution_graph(model, AttributionGraphRequest(prompt=PROMPT), transcoders=tcs)


def test_a_cross_layer_transcoder_is_refused_in_words():
    model = default_model()
    n, d, f = model.cfg.n_layers, model.cfg.d_model, 8
    clt = CrossLayerTranscoder([torch.zeros(d, f)] * n, [torch.zeros(f)] * n,
                               [torch.zeros(f, n - s, d) for s in range(n)], torch.zeros(n, d))
    with pytest.raises(FeaturesUnavailable, match="cross-layer transcoders are not supported yet"):
        attribution_graph(model, AttributionGraphRequest(prompt=PROMPT), transcoders=clt)

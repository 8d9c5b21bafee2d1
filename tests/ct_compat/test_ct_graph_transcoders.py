"""Attribution graphs with per-layer transcoders: ours beside circuit-tracer 0.5.0's on the same weights.

Our processed weights are exported into circuit-tracer's transformer-lens replacement model and our random
transcoders into its SingleLayerTranscoder / TranscoderSet (ct_export); both graphs are built without a
feature budget on one prompt that starts with BOS. circuit-tracer zeroes every feature and the error at BOS:
without ``zero_bos`` ours differs from it exactly there (test_*_off_bos), with ``zero_bos=True`` the two are
the same graph.
"""

import ct_export
import ct_pairs
import pytest
import torch

# (model processing, where the transcoders read): our default (LNPre) at ln2.hook_normalized; an unfolded LN
# model at hook_resid_mid (the norm's weights then on the path) and at ln2.hook_normalized.
CASES = [(True, "ln2.hook_normalized"), (False, "hook_resid_mid"), (False, "ln2.hook_normalized")]
IDS = ["folded-ln2", "unfolded-resid_mid", "unfolded-ln2"]


def _pair(folded, hook, activation="relu", targets=ct_pairs.TARGETS, **ours_kwargs):
    model = ct_pairs.tiny_model(folded)
    tset = ct_pairs.per_layer(model, hook_in=hook, activation=activation)
    return ct_pairs.our_graph(model, tset, targets=targets, **ours_kwargs), ct_pairs.their_graph(model, tset, targets=targets)


def test_exported_model_has_our_logits():
    """The export itself: circuit-tracer's model gives our logits (both processings)."""
    for folded in (True, False):
        model = ct_pairs.tiny_model(folded)
        ct = ct_export.ct_model(model, ct_pairs.tokenizer(), ct_pairs.per_layer(model))
        with torch.no_grad():
            ct_pairs.assert_close(ct(ct_pairs.TOKENS), model(ct_pairs.TOKENS))


@pytest.mark.parametrize("folded,hook", CASES, ids=IDS)
def test_per_layer_graph_equal_off_bos(folded, hook):
    mine, theirs = _pair(folded, hook)
    ct_pairs.assert_same_off_bos(mine, theirs)


def test_jumprelu_per_layer_graph_equal_off_bos():
    mine, theirs = _pair(True, "ln2.hook_normalized", activation="jumprelu")
    ct_pairs.assert_same_off_bos(mine, theirs)


def test_salient_logits_chosen_alike():
    """No targets given: both pick the most probable logits up to 95% of the mass (at most 10)."""
    mine, theirs = _pair(True, "ln2.hook_normalized", targets=None)
    assert mine.n_logits > 1
    ct_pairs.assert_same_off_bos(mine, theirs)


@pytest.mark.parametrize("folded,hook", CASES, ids=IDS)
def test_per_layer_graph_equal_with_zero_bos(folded, hook):
    mine, theirs = _pair(folded, hook, zero_bos=True)
    ct_pairs.assert_same(mine, theirs)

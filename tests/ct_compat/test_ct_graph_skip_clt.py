"""Attribution graphs with skip transcoders and cross-layer transcoders beside circuit-tracer 0.5.0's.

circuit-tracer keeps a skip term as a linear path (the gradient flows from the MLP output through
``W_skip`` back to the transcoder's input; the error node is the MLP output minus the reconstruction,
skip included) and a CLT feature of layer s writes into every layer t >= s. The mapping of our
dictionaries into its classes is checked first (encode, decode, skip: the same numbers), then the graphs,
as in test_ct_graph_transcoders: off BOS without ``zero_bos``, everything with it.
"""

import ct_export
import ct_pairs
import pytest
import torch

X = torch.randn(5, 32, generator=torch.Generator().manual_seed(7))


def _graphs(dictionary, model, **kwargs):
    return ct_pairs.our_graph(model, dictionary, **kwargs), ct_pairs.their_graph(model, dictionary)


def test_skip_transcoders_map_exactly():
    model = ct_pairs.tiny_model(True)
    ours = ct_pairs.per_layer(model, skip=True)
    theirs = ct_export.ct_dictionary(ours)
    assert theirs.skip_connection
    for layer in range(model.cfg.n_layers):
        with torch.no_grad():
            ct_pairs.assert_close(theirs[layer].forward(X), ours[layer].reconstruct(X))
            ct_pairs.assert_close(theirs.compute_skip(layer, X), ours[layer].skip(X))


@pytest.mark.parametrize("activation", ["relu", "jumprelu"])
@pytest.mark.parametrize("skip", [False, True], ids=["no-skip", "skip"])
def test_clt_maps_exactly(activation, skip):
    model = ct_pairs.tiny_model(True)
    ours = ct_pairs.cross_layer(model, activation=activation, skip=skip)
    theirs = ct_export.ct_dictionary(ours)
    n = model.cfg.n_layers
    inputs = [X + l for l in range(n)]
    with torch.no_grad():
        acts = {l: ours.encode_layer(inputs[l], l) for l in range(n)}
        for l in range(n):
            ct_pairs.assert_close(theirs.encode_layer(inputs[l], l), acts[l])
        ct_pairs.assert_close(theirs.decode(torch.stack([acts[l] for l in range(n)]), torch.stack(inputs)),
                              torch.stack(ours(inputs)))


@pytest.mark.parametrize("folded,hook", [(True, "ln2.hook_normalized"), (False, "hook_resid_mid")],
                         ids=["folded-ln2", "unfolded-resid_mid"])
def test_skip_transcoder_graph_equal_off_bos(folded, hook):
    model = ct_pairs.tiny_model(folded)
    tset = ct_pairs.per_layer(model, hook_in=hook, skip=True)
    ct_pairs.assert_same_off_bos(*_graphs(tset, model))


@pytest.mark.parametrize("folded,hook,activation,skip", [
    (True, "ln2.hook_normalized", "relu", False),
    (False, "hook_resid_mid", "jumprelu", False),
    (True, "ln2.hook_normalized", "relu", True),
], ids=["folded-ln2-relu", "unfolded-resid_mid-jumprelu", "folded-ln2-skip"])
def test_clt_graph_equal_off_bos(folded, hook, activation, skip):
    model = ct_pairs.tiny_model(folded)
    clt = ct_pairs.cross_layer(model, hook_in=hook, activation=activation, skip=skip)
    ct_pairs.assert_same_off_bos(*_graphs(clt, model))


@pytest.mark.parametrize("kind", ["skip", "clt", "clt-skip"])
def test_skip_and_clt_graph_equal_with_zero_bos(kind):
    model = ct_pairs.tiny_model(True)
    dictionary = (ct_pairs.per_layer(model, skip=True) if kind == "skip"
                  else ct_pairs.cross_layer(model, skip=kind == "clt-skip"))
    ct_pairs.assert_same(*_graphs(dictionary, model, zero_bos=True))

"""Publishers' dictionary layouts (circuit-tracer sets and CLTs, Gemma Scope 1 and 2, skip transcoders) written
to disk and loaded; every output checked against a plain-torch computation of the layout's own maths."""

from __future__ import annotations

import torch
from dictionary_writers import jumprelu, write_ct_clt, write_ct_set, write_gemma_scope_2, write_gemma_scope_npz
from features_support import default_model

from lens_core.features import (CrossLayerTranscoder, SkipTranscoder, Transcoder, TranscoderSet, dictionary_kind,
                                load_dictionary)


def _x(seed=0, shape=(2, 5, 128)):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_circuit_tracer_relu_set_from_layer_files(tmp_path):
    layers = write_ct_set(tmp_path / "set")
    tset = load_dictionary(tmp_path / "set", model=default_model())
    assert isinstance(tset, TranscoderSet) and tset.layers == [0, 1, 2] and dictionary_kind(tset) == "transcoder"
    x = _x()
    for i, t in enumerate(layers):
        tc = tset[i]
        assert (tc.cfg.hook_in, tc.cfg.hook_out) == (f"blocks.{i}.ln2.hook_normalized", f"blocks.{i}.hook_mlp_out")
        acts = torch.relu(x @ t["W_enc"].T + t["b_enc"])
        torch.testing.assert_close(tc.encode(x), acts)
        torch.testing.assert_close(tc(x), acts @ t["W_dec"] + t["b_dec"])


def test_circuit_tracer_listed_jumprelu_skip_transcoders(tmp_path):
    layers = write_ct_set(tmp_path / "skip", listed=True, jumprelu=True, skip=True, seed=1)
    tset = load_dictionary(tmp_path / "skip" / "config.yaml", model=default_model())
    assert dictionary_kind(tset) == "skip transcoder"
    x = _x(1)
    for i, t in enumerate(layers):
        tc = tset[i]
        assert isinstance(tc, SkipTranscoder) and tc.cfg.activation == "jumprelu"
        acts = jumprelu(x @ t["W_enc"].T + t["b_enc"], t["activation_function.threshold"])
        assert 0 < (acts > 0).float().mean() < 1
        torch.testing.assert_close(tc.encode(x), acts)
        torch.testing.assert_close(tc(x), acts @ t["W_dec"] + t["b_dec"] + x @ t["W_skip"].T)


def test_topk_and_batchtopk_from_config(tmp_path):
    x = _x(2, (3, 4, 128))
    for activation, k in (("topk", 5), ("batchtopk", 3)):
        layers = write_ct_set(tmp_path / activation, n_layers=1, config_extra={"activation": activation, "k": k})
        tc = load_dictionary(tmp_path / activation)[0]
        t = layers[0]
        pre = x @ t["W_enc"].T + t["b_enc"]
        if activation == "topk":
            top = pre.topk(k, dim=-1)
            expected = torch.zeros_like(pre).scatter(-1, top.indices, top.values.relu())
        else:  # the k * rows largest over the whole call (rows = 3 * 4 positions)
            flat = pre.flatten()
            keep = flat >= flat.sort(descending=True).values[k * 12 - 1]
            expected = (flat * keep).relu().reshape(pre.shape)
            assert int(keep.sum()) == k * 12
        torch.testing.assert_close(tc.encode(x), expected)
        assert tc.cfg.activation == activation and tc.cfg.k == k


def test_gemma_scope_npz_layer_from_path(tmp_path):
    path = tmp_path / "layer_2" / "width_16k" / "average_l0_14" / "params.npz"
    t = write_gemma_scope_npz(path)
    tc = load_dictionary(path, model=default_model())
    assert isinstance(tc, Transcoder) and tc.cfg.layer == 2 and tc.cfg.activation == "jumprelu"
    x = _x(3)
    acts = jumprelu(x @ t["W_enc"] + t["b_enc"], t["threshold"])
    torch.testing.assert_close(tc.encode(x), acts)
    torch.testing.assert_close(tc(x), acts @ t["W_dec"] + t["b_dec"])
    assert load_dictionary(path.parent).cfg.layer == 2  # the folder holding params.npz


def test_gemma_scope_2_skip_transcoder(tmp_path):
    path = tmp_path / "layer_1.safetensors"
    t = write_gemma_scope_2(path)
    tc = load_dictionary(path, model=default_model())
    assert isinstance(tc, SkipTranscoder) and tc.cfg.layer == 1
    x = _x(4)
    acts = jumprelu(x @ t["w_enc"] + t["b_enc"], t["threshold"])
    torch.testing.assert_close(tc(x), acts @ t["w_dec"] + t["b_dec"] + x @ t["affine_skip_connection"])


def test_cross_layer_transcoder_against_hand_loop(tmp_path):
    w = write_ct_clt(tmp_path / "clt")
    clt = load_dictionary(tmp_path / "clt", model=default_model())
    assert isinstance(clt, CrossLayerTranscoder) and dictionary_kind(clt) == "cross-layer transcoder"
    assert (clt.n_layers, clt.d_in, clt.d_sae, clt.activation) == (3, 128, 64, "jumprelu")
    inputs = [_x(10 + i) for i in range(3)]
    acts = [jumprelu(inputs[s] @ w["W_enc"][s].T + w["b_enc"][s], w["threshold"][s]) for s in range(3)]
    outputs = clt(inputs)
    for t in range(3):
        expected = w["b_dec"][t].clone()
        for s in range(t + 1):
            expected = expected + acts[s] @ w["W_dec"][s][:, t - s, :]
        torch.testing.assert_close(clt.encode_layer(inputs[t], t), acts[t])
        torch.testing.assert_close(outputs[t], expected)
    # without a config: circuit-tracer's file layout alone, hooks given here
    bare = write_ct_clt(tmp_path / "bare", config=False, jumprelu=False, seed=3)
    clt = load_dictionary(tmp_path / "bare", hook_in="hook_resid_mid")
    assert clt.activation == "relu" and clt.hook_in(1) == "blocks.1.hook_resid_mid"
    torch.testing.assert_close(clt.encode_layer(inputs[0], 0), torch.relu(inputs[0] @ bare["W_enc"][0].T + bare["b_enc"][0]))


def test_splice_and_steer_a_skip_transcoder_include_the_skip_term(tmp_path):
    from lens_core.features import splice_hooks

    layers = write_ct_set(tmp_path / "skip", n_layers=1, skip=True, seed=5)
    tset = load_dictionary(tmp_path / "skip")
    t = layers[0]
    x, y = _x(6), _x(7)
    hand_acts = torch.relu(x @ t["W_enc"].T + t["b_enc"])
    skip = x @ t["W_skip"].T
    for error_term, edits, expected in (
            (False, None, hand_acts @ t["W_dec"] + t["b_dec"] + skip),
            (True, {0: {3: 2.0}}, y + (2.0 - hand_acts[..., 3:4]) * t["W_dec"][3])):
        (_, keep), (_, replace) = splice_hooks(tset, error_term=error_term, edits=edits)
        keep(x, None)
        torch.testing.assert_close(replace(y, None), expected)

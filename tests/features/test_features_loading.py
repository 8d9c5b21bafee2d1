"""Loading transcoders (project format) and SAEs (SAELens format); bad files and misfits give clear messages."""

from __future__ import annotations

import json

import pytest
import torch
from features_support import default_model, random_set, random_transcoder
from safetensors.torch import save_file

from lens_core import HookedTransformer
from lens_core.features import FeaturesUnavailable, TranscoderSet, load_transcoders, save_transcoders
from lens_core.features.saelens import load_saelens, save_saelens


def test_project_format_round_trip(tmp_path):
    model = default_model()
    tset = random_set(model, activation="jumprelu")
    save_transcoders(tset, tmp_path)
    loaded = load_transcoders(tmp_path)
    loaded.check_fits(model)
    x = torch.randn(3, 7, 128)
    for layer in tset.layers:
        torch.testing.assert_close(loaded[layer](x), tset[layer](x), atol=0, rtol=0)
        assert loaded[layer].cfg == tset[layer].cfg
    assert loaded.fingerprint() == tset.fingerprint()


def test_saelens_round_trip_sae_with_decoder_bias_on_input(tmp_path):
    sae = random_transcoder(1, activation="topk", hook_in="blocks.1.hook_resid_pre", hook_out="blocks.1.hook_resid_pre")
    sae.b_in.copy_(sae.b_dec)
    save_saelens(sae, tmp_path / "sae", model_name="default")
    raw = json.loads((tmp_path / "sae" / "cfg.json").read_text())
    assert raw["architecture"] == "topk" and raw["apply_b_dec_to_input"] is True and raw["k"] == 8
    loaded = load_saelens(tmp_path / "sae", model=default_model())
    x = torch.randn(4, 128)
    torch.testing.assert_close(loaded.encode(x), sae.encode(x), atol=0, rtol=0)
    torch.testing.assert_close(loaded(x), sae(x), atol=0, rtol=0)


def test_saelens_older_config_against_hand_computation(tmp_path):
    """Flat keys of older SAELens files: hook_point, activation_fn_str, scaling_factor (applied before W_dec)."""
    g = torch.Generator().manual_seed(3)
    d_in, d_sae = 128, 64
    w = {"W_enc": torch.randn(d_in, d_sae, generator=g) * 0.1, "b_enc": torch.randn(d_sae, generator=g) * 0.1,
         "W_dec": torch.randn(d_sae, d_in, generator=g), "b_dec": torch.randn(d_in, generator=g),
         "scaling_factor": torch.rand(d_sae, generator=g) + 0.5}
    (tmp_path / "cfg.json").write_text(json.dumps({"d_in": d_in, "d_sae": d_sae, "hook_point": "blocks.0.hook_resid_post",
                                                   "hook_point_layer": 0, "activation_fn_str": "relu",
                                                   "apply_b_dec_to_input": True, "model_name": "default"}))
    save_file(w, str(tmp_path / "sae_weights.safetensors"))
    sae = load_saelens(str(tmp_path))
    assert sae.cfg.layer == 0 and sae.cfg.hook_in == sae.cfg.hook_out == "blocks.0.hook_resid_post"
    x = torch.randn(5, d_in, generator=g)
    acts = torch.relu((x - w["b_dec"]) @ w["W_enc"] + w["b_enc"])
    torch.testing.assert_close(sae.encode(x), acts)
    torch.testing.assert_close(sae(x), (acts * w["scaling_factor"]) @ w["W_dec"] + w["b_dec"])


def test_saelens_jumprelu_transcoder(tmp_path):
    g = torch.Generator().manual_seed(4)
    w = {"W_enc": torch.randn(128, 32, generator=g), "b_enc": torch.zeros(32), "W_dec": torch.randn(32, 128, generator=g),
         "b_dec": torch.randn(128, generator=g), "threshold": torch.rand(32, generator=g) * 3}
    (tmp_path / "cfg.json").write_text(json.dumps({
        "architecture": "jumprelu_transcoder", "d_in": 128, "d_sae": 32, "d_out": 128, "apply_b_dec_to_input": False,
        "hook_name_out": "blocks.2.hook_mlp_out", "metadata": {"hook_name": "blocks.2.ln2.hook_normalized"}}))
    save_file(w, str(tmp_path / "sae_weights.safetensors"))
    tc = load_saelens(tmp_path, model=default_model())
    assert (tc.cfg.layer, tc.cfg.hook_out, tc.cfg.activation) == (2, "blocks.2.hook_mlp_out", "jumprelu")
    x = torch.randn(6, 128, generator=g)
    pre = x @ w["W_enc"]
    expected = torch.where(pre > w["threshold"], pre, torch.zeros(()))
    torch.testing.assert_close(tc.encode(x), expected)


def _write_sae(directory, d_in=128, hook="blocks.0.hook_resid_pre"):
    sae = random_transcoder(0, d_in=d_in, d_out=d_in, activation="relu", hook_in=hook, hook_out=hook)
    return save_saelens(sae, directory)


def test_misfit_sae_is_refused_clearly(tmp_path):
    model = default_model()
    with pytest.raises(FeaturesUnavailable, match="d_in is 64 but 'blocks.0.hook_resid_pre' in this model has width 128"):
        load_saelens(_write_sae(tmp_path / "narrow", d_in=64), model=model)
    with pytest.raises(FeaturesUnavailable, match="no hook point 'blocks.9.hook_resid_pre'"):
        load_saelens(_write_sae(tmp_path / "deep", hook="blocks.9.hook_resid_pre"), model=model)


def test_missing_and_corrupt_files_are_clear(tmp_path):
    directory = _write_sae(tmp_path / "sae")
    weights = directory / "sae_weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(FeaturesUnavailable, match="corrupt or truncated"):
        load_saelens(directory)
    (directory / "cfg.json").write_text("{not json")
    with pytest.raises(FeaturesUnavailable, match="cannot read .*cfg.json"):
        load_saelens(directory)
    weights.unlink()
    with pytest.raises(FeaturesUnavailable, match="missing SAE file .*sae_weights.safetensors"):
        load_saelens(directory)
    with pytest.raises(FeaturesUnavailable, match="no SAE directory"):
        load_saelens(str(tmp_path / "nowhere"))
    tdir = save_transcoders(random_set(default_model()), tmp_path / "tc")
    (tdir / "transcoders.safetensors").write_bytes(b"garbage")
    with pytest.raises(FeaturesUnavailable, match="corrupt or truncated"):
        load_transcoders(tdir)
    (tdir / "config.json").unlink()
    with pytest.raises(FeaturesUnavailable, match="missing transcoder file .*config.json"):
        load_transcoders(tdir)


def test_wrong_shapes_in_file_are_named(tmp_path):
    directory = _write_sae(tmp_path / "sae")
    raw = json.loads((directory / "cfg.json").read_text())
    raw["d_sae"] = 512
    (directory / "cfg.json").write_text(json.dumps(raw))
    with pytest.raises(FeaturesUnavailable, match="tensor 'W_enc' has shape \\(128, 256\\), expected \\(128, 512\\)"):
        load_saelens(directory)


def test_hub_name_without_network_is_a_clear_error(monkeypatch):
    import huggingface_hub

    asked = []

    def offline(repo, filename, revision=None):
        asked.append((repo, filename))
        raise huggingface_hub.errors.LocalEntryNotFoundError("network is unreachable")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    with pytest.raises(FeaturesUnavailable, match="could not fetch .*'someone/some-saes'"):
        load_saelens("someone/some-saes", sae_id="blocks.0.hook_resid_pre")
    assert asked == [("someone/some-saes", "blocks.0.hook_resid_pre/cfg.json")]


def test_model_without_transcoders_or_with_other_processing(tmp_path):
    from hf_tiny import gpt2

    tiny = HookedTransformer.from_hf_model(gpt2(0))
    with pytest.raises(FeaturesUnavailable, match="no transcoders are bundled for model"):
        load_transcoders(tiny)
    unfolded = HookedTransformer.from_pretrained("default", fold_ln=False, center_writing_weights=False)
    tset = random_set(default_model())
    with pytest.raises(FeaturesUnavailable, match="other weight processing .*fold_ln: trained with True"):
        tset.check_fits(unfolded)
    with pytest.raises(FeaturesUnavailable, match="needs at least one"):
        TranscoderSet({})


def test_topk_fast_path_picks_the_same_features_as_torch_topk():
    tc = random_transcoder(0, d_sae=512, k=32)
    x = torch.randn(4, 9, 128, requires_grad=True)
    with_grad = tc.encode(x)  # torch.topk path (gradients on)
    with torch.no_grad():
        fast = tc.encode(x)  # argpartition path
    torch.testing.assert_close(fast, with_grad.detach(), atol=0, rtol=0)
    assert ((fast != 0).sum(-1) <= 32).all()

"""Loading: sources, loud failures, no remote code, the bundled model."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import hf_tiny
from lens_core import HookedTransformer, ModelLoadError


def _saved(tmp_path: Path, make=hf_tiny.gpt2) -> Path:
    hf = make()
    hf.save_pretrained(tmp_path)
    hf_tiny.tiny_tokenizer().save_pretrained(tmp_path)
    return tmp_path


def test_misshapen_checkpoint_fails_at_load_naming_the_tensor(tmp_path):
    directory = _saved(tmp_path)
    weights = load_file(directory / "model.safetensors")
    weights["transformer.h.1.mlp.c_fc.weight"] = torch.zeros(32, 100)
    save_file(weights, directory / "model.safetensors")
    with pytest.raises(ModelLoadError, match=r"transformer\.h\.1\.mlp\.c_fc\.weight.*\(32, 100\)"):
        HookedTransformer.from_pretrained(str(directory))


def test_missing_tensor_is_named(tmp_path):
    directory = _saved(tmp_path, hf_tiny.llama)
    weights = load_file(directory / "model.safetensors")
    del weights["model.layers.2.self_attn.k_proj.weight"]
    save_file(weights, directory / "model.safetensors")
    with pytest.raises(ModelLoadError, match=r"layers\.2\.self_attn\.k_proj\.weight"):
        HookedTransformer.from_pretrained(str(directory))


def test_unknown_architecture_and_missing_directory_have_clear_messages(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 8}))
    save_file({"x": torch.zeros(1)}, tmp_path / "model.safetensors")
    with pytest.raises(ModelLoadError, match="'bert' is not supported"):
        HookedTransformer.from_pretrained(str(tmp_path))
    with pytest.raises(ModelLoadError, match="no model directory"):
        HookedTransformer.from_pretrained(str(tmp_path / "nowhere"))


def test_hub_name_without_network_fails_with_a_message(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="could not fetch 'gpt2' from the Hugging Face Hub"):
        HookedTransformer.from_pretrained("gpt2-small")  # alias resolved to the Hub name


def test_remote_code_is_never_run_by_default(tmp_path):
    marker = tmp_path / "ran"
    (tmp_path / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    (tmp_path / "config.json").write_text(json.dumps(
        {"model_type": "evil", "auto_map": {"AutoConfig": "evil.EvilConfig"}}))
    with pytest.raises(ModelLoadError):
        HookedTransformer.from_pretrained(str(tmp_path))
    assert not marker.exists()


def test_processing_flags_are_recorded_and_weights_hash_tracks_weights(tmp_path):
    directory = _saved(tmp_path)
    plain = HookedTransformer.from_pretrained(str(directory), fold_ln=False, center_writing_weights=False,
                                              center_unembed=False, fold_value_biases=False)
    processed = HookedTransformer.from_pretrained(str(directory))
    assert plain.processing == dict.fromkeys(plain.processing, False)
    assert all(processed.processing.values())
    assert plain.weights_hash() != processed.weights_hash()
    again = HookedTransformer.from_pretrained(str(directory))
    assert again.weights_hash() == processed.weights_hash()


def test_weight_views_have_transformerlens_shapes():
    model = HookedTransformer.from_hf_model(hf_tiny.gpt2())
    cfg = model.cfg
    assert model.W_Q.shape == (cfg.n_layers, cfg.n_heads, cfg.d_model, cfg.d_head)
    assert model.W_O.shape == (cfg.n_layers, cfg.n_heads, cfg.d_head, cfg.d_model)
    assert model.W_in.shape == (cfg.n_layers, cfg.d_model, cfg.d_mlp)
    assert model.W_U.shape == (cfg.d_model, cfg.d_vocab) and model.W_pos.shape == (cfg.n_ctx, cfg.d_model)
    # The per-head view is the same numbers the forward pass uses: q from hook_q equals x @ W_Q[h] + b_Q[h].
    tokens = torch.randint(0, 64, (1, 5))
    _, cache = model.run_with_cache(tokens)
    x = cache["blocks.1.ln1.hook_normalized"]
    q = torch.einsum("bpd,hde->bphe", x, model.W_Q[1]) + model.b_Q[1]
    assert torch.allclose(q, cache["q", 1], atol=1e-5)


DEFAULT = Path(__file__).resolve().parents[2] / "lens_core" / "default_model" / "model.safetensors"


@pytest.mark.skipif(not DEFAULT.exists(), reason="bundled model not committed yet")
def test_bundled_model_loads_offline_and_matches_transformers(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM

    model = HookedTransformer.from_pretrained("default", fold_ln=False, center_writing_weights=False,
                                              center_unembed=False, fold_value_biases=False)
    hf = AutoModelForCausalLM.from_pretrained(DEFAULT.parent).eval()
    tokens = model.to_tokens("def add(a, b):\n    return a + b\n")
    with torch.no_grad():
        assert torch.allclose(model(tokens), hf(tokens).logits, atol=1e-4, rtol=0)

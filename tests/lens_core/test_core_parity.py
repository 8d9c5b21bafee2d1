"""Forward-pass parity with Hugging Face transformers on tiny random models, every family."""

import pytest
import torch

import hf_tiny
from lens_core import HookedTransformer

PROCESSING_OFF = dict(fold_ln=False, center_writing_weights=False, center_unembed=False, fold_value_biases=False)


@pytest.fixture(params=sorted(hf_tiny.FAMILIES))
def family(request):
    return request.param


def _tokens(seed=1, batch=2, n_pos=12):
    return torch.randint(0, hf_tiny.VOCAB, (batch, n_pos), generator=torch.Generator().manual_seed(seed))


def test_logits_match_transformers_without_processing(family):
    hf = hf_tiny.FAMILIES[family]()
    tokens = _tokens()
    ours = HookedTransformer.from_hf_model(hf, **PROCESSING_OFF)(tokens)
    with torch.no_grad():
        ref = hf(tokens).logits
    assert torch.allclose(ours, ref, atol=1e-4, rtol=0), (ours - ref).abs().max()


def test_log_probs_match_transformers_with_processing(family):
    hf = hf_tiny.FAMILIES[family]()
    tokens = _tokens()
    model = HookedTransformer.from_hf_model(hf)  # every processing step on (the default)
    assert model.processing["fold_ln"] and model.processing["center_unembed"] and model.processing["fold_value_biases"]
    assert model.cfg.normalization_type in ("LNPre", "RMSPre")
    with torch.no_grad():
        ref = hf(tokens).logits.log_softmax(-1)
    assert torch.allclose(model(tokens).log_softmax(-1), ref, atol=1e-4, rtol=0)


def test_each_residual_stream_matches_transformers_hidden_states(family):
    hf = hf_tiny.FAMILIES[family]()
    tokens = _tokens(batch=1)
    model = HookedTransformer.from_hf_model(hf, **PROCESSING_OFF)
    _, cache = model.run_with_cache(tokens)
    with torch.no_grad():
        hidden = hf(tokens, output_hidden_states=True).hidden_states
    for layer in range(model.cfg.n_layers):  # the last HF hidden state is after the final norm
        assert torch.allclose(cache["resid_pre", layer], hidden[layer], atol=1e-4, rtol=0), layer


def test_from_pretrained_directory_matches_in_memory(family, tmp_path):
    hf = hf_tiny.FAMILIES[family]()
    from_dir = HookedTransformer.from_pretrained(hf_tiny.save_as_directory(hf, tmp_path), **PROCESSING_OFF)
    assert from_dir.tokenizer is not None
    tokens = _tokens()
    with torch.no_grad():
        assert torch.allclose(from_dir(tokens), hf(tokens).logits, atol=1e-4, rtol=0)


def test_gqa_and_partial_rotary_are_really_exercised():
    llama = HookedTransformer.from_hf_model(hf_tiny.llama())
    assert llama.cfg.n_key_value_heads == 2 and llama.cfg.n_heads == 4
    assert llama.blocks[0].attn.W_K.shape == (2, 32, 8) and llama.W_K.shape == (3, 4, 32, 8)
    neox = HookedTransformer.from_hf_model(hf_tiny.neox())
    assert neox.cfg.rotary_dim == neox.cfg.d_head // 2 and neox.cfg.parallel_attn_mlp
    qwen = hf_tiny.qwen2()
    assert qwen.model.layers[0].self_attn.q_proj.bias is not None  # attention biases present in the reference
    ours = HookedTransformer.from_hf_model(qwen, **PROCESSING_OFF)
    assert torch.equal(ours.blocks[0].attn.b_Q.reshape(-1), qwen.model.layers[0].self_attn.q_proj.bias)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_loads_and_stays_close(dtype):
    hf = hf_tiny.gpt2()
    tokens = _tokens()
    model = HookedTransformer.from_hf_model(hf, dtype=dtype)
    assert model.W_E.dtype == getattr(torch, dtype) and model.cfg.dtype == getattr(torch, dtype)
    with torch.no_grad():
        ref = hf(tokens).logits.log_softmax(-1)
    ours = model(tokens).float().log_softmax(-1)
    assert (ours - ref).abs().max() < 0.25  # half precision: agreement to a couple of decimals
    assert (ours.argmax(-1) == ref.argmax(-1)).float().mean() > 0.9


def test_loss_matches_transformers():
    hf = hf_tiny.gpt2()
    tokens = _tokens()
    model = HookedTransformer.from_hf_model(hf)
    with torch.no_grad():
        ref = hf(tokens, labels=tokens).loss
    assert torch.allclose(model(tokens, return_type="loss"), ref, atol=1e-5)
    per_token = model(tokens, return_type="loss", loss_per_token=True)
    assert per_token.shape == (2, 11) and torch.allclose(per_token.mean(), ref, atol=1e-5)

"""Gemma 2, Gemma 3 (text), Qwen3 and OLMo 2: logits equal to transformers, processing on and off, loading from
saved directories, their hook points, and the processing steps they cannot take (skipped and said)."""

import pytest
import torch

import hf_tiny
import hf_tiny_families
from lens_core import HookedTransformer

OFF = dict(fold_ln=False, center_writing_weights=False, center_unembed=False, fold_value_biases=False)
FAMILIES = sorted(hf_tiny_families.FAMILIES)


def _tokens(batch=2, n_pos=12):
    return torch.randint(0, hf_tiny.VOCAB, (batch, n_pos), generator=torch.Generator().manual_seed(1))


@pytest.fixture(params=FAMILIES)
def family(request):
    return request.param


def test_logits_match_transformers_without_processing(family):
    hf = hf_tiny_families.FAMILIES[family]()
    tokens = _tokens()
    ours = HookedTransformer.from_hf_model(hf, **OFF)(tokens)
    with torch.no_grad():
        ref = hf(tokens).logits
    assert (ours - ref).abs().max() < 1e-4


def test_processed_model_matches_transformers(family):
    hf = hf_tiny_families.FAMILIES[family]()
    tokens = _tokens()
    model = HookedTransformer.from_hf_model(hf)
    assert model.processing["fold_ln"] and model.cfg.normalization_type == "RMSPre"
    with torch.no_grad():
        ref = hf(tokens).logits
    ours = model(tokens)
    assert (ours.log_softmax(-1) - ref.log_softmax(-1)).abs().max() < 1e-4
    if not model.processing["center_unembed"]:  # nothing shifted the logits: they match as they are
        assert (ours - ref).abs().max() < 1e-4


def test_directory_load_matches_and_keeps_tokenizer(family, tmp_path):
    hf = hf_tiny_families.FAMILIES[family]()
    model = HookedTransformer.from_pretrained(hf_tiny.save_as_directory(hf, tmp_path), **OFF)
    assert model.tokenizer is not None
    tokens = _tokens()
    with torch.no_grad():
        assert (model(tokens) - hf(tokens).logits).abs().max() < 1e-4


def test_skipped_processing_is_recorded():
    gemma = HookedTransformer.from_hf_model(hf_tiny_families.gemma2())
    # Soft-capped logits: centring the unembedding would change the probabilities, so it is not done.
    assert not gemma.processing["center_unembed"] and "center_unembed" in gemma.processing_skipped
    assert "ln1_post" in gemma.processing_skipped["fold_ln.post_norms"]
    assert "center_writing_weights" in gemma.processing_skipped
    olmo = HookedTransformer.from_hf_model(hf_tiny_families.olmo2())
    assert "only ln_final" in olmo.processing_skipped["fold_ln.post_norms"]
    assert olmo.blocks[0].ln1 is None and hasattr(olmo.blocks[0].ln1_post, "w")  # post-norms keep their weights
    qwen = HookedTransformer.from_hf_model(hf_tiny_families.qwen3())
    assert "fold_ln.qk_norms" in qwen.processing_skipped and "fold_ln.post_norms" not in qwen.processing_skipped
    assert HookedTransformer.from_hf_model(hf_tiny_families.qwen3(), **OFF).processing_skipped == {}


def test_variants_are_really_exercised():
    """Each variant changes transformers' output on these configs, so parity above covers it."""
    tokens = _tokens()
    base = hf_tiny_families.gemma2()
    with torch.no_grad():
        ref = base(tokens).logits
        for change in (dict(attn_logit_softcapping=None), dict(final_logit_softcapping=None),
                       dict(layer_types=["full_attention", "full_attention"]), dict(query_pre_attn_scalar=8)):
            assert (hf_tiny_families.gemma2(**change)(tokens).logits - ref).abs().max() > 1e-3, change
    cfg = HookedTransformer.from_hf_model(base).cfg
    assert cfg.attn_types == ["local", "global"] and cfg.window_size == 4 and cfg.attn_scale == 12**0.5
    assert cfg.attn_scores_soft_cap == 5.0 and cfg.output_logits_soft_cap == 3.0 and cfg.embed_scale == 32**0.5
    g3 = HookedTransformer.from_hf_model(hf_tiny_families.gemma3()).cfg
    assert (g3.rotary_base, g3.rotary_base_local, g3.rope_scaling["rope_type"]) == (1000.0, 10.0, "linear")
    assert g3.output_logits_soft_cap < 0 and g3.qk_norm == "head"


def test_hook_points_in_transformer_lens_style():
    names = set(HookedTransformer.from_hf_model(hf_tiny_families.gemma3()).hook_dict)
    for name in ("blocks.0.ln1.hook_normalized", "blocks.0.ln1_post.hook_scale", "blocks.0.ln2.hook_normalized",
                 "blocks.1.ln2_post.hook_normalized", "blocks.0.attn.q_norm.hook_normalized",
                 "blocks.0.attn.k_norm.hook_scale", "blocks.0.attn.hook_rot_q", "blocks.0.hook_attn_out"):
        assert name in names, name
    olmo = HookedTransformer.from_hf_model(hf_tiny_families.olmo2(), **OFF)
    names = list(olmo.hook_dict)
    assert "blocks.0.ln1.hook_scale" not in names and "blocks.0.ln1_post.hook_scale" in names
    # hook_attn_out is what the residual receives: after the post-norm, and in forward order.
    assert names.index("blocks.0.attn.hook_z") < names.index("blocks.0.ln1_post.hook_scale") < names.index("blocks.0.hook_attn_out")
    tokens = _tokens(batch=1)
    _, cache = olmo.run_with_cache(tokens)
    assert cache["blocks.0.attn.q_norm.hook_normalized"].shape == (1, 12, 4 * 8)  # over the whole projection
    assert torch.allclose(cache["blocks.0.hook_resid_mid"], cache["blocks.0.hook_resid_pre"] + cache["blocks.0.hook_attn_out"])
    stack, _ = cache.decompose_resid(layer=1, return_labels=True)
    assert torch.equal(cache.apply_ln_to_stack(stack, layer=1), stack)  # no norm before block 1's attention


def test_sliding_window_pattern_and_soft_cap_seen_in_hooks():
    model = HookedTransformer.from_hf_model(hf_tiny_families.gemma2())
    _, cache = model.run_with_cache(_tokens(batch=1))
    local, full = cache["pattern", 0][0], cache["pattern", 1][0]  # [head, q, k]
    q, k = torch.meshgrid(torch.arange(12), torch.arange(12), indexing="ij")
    assert torch.all(local[:, (q - k) >= 4] == 0) and torch.all(local[:, ((q - k) >= 0) & ((q - k) < 4)] > 0)
    assert torch.all(full[:, q >= k] > 0)
    scores = cache["attn_scores", 0][0]
    assert scores[torch.isfinite(scores)].abs().max() <= 5.0


def test_hub_names_resolve_and_load_through_the_hub_client(monkeypatch, tmp_path):
    """By hub name: the alias becomes the repository asked of huggingface_hub (stubbed here: no network),
    weights and tokenizer files only, and the snapshot it returns loads like a local directory."""
    import huggingface_hub

    hf = hf_tiny_families.gemma2()
    hf.save_pretrained(tmp_path)
    asked = {}

    def snapshot(repo, revision=None, allow_patterns=None):
        asked.update(repo=repo, patterns=allow_patterns)
        return str(tmp_path)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot)
    model = HookedTransformer.from_pretrained("gemma-2-2b", **OFF)
    assert asked["repo"] == "google/gemma-2-2b" and "*.safetensors" in asked["patterns"] and "*.py" not in asked["patterns"]
    tokens = _tokens()
    with torch.no_grad():
        assert (model(tokens) - hf(tokens).logits).abs().max() < 1e-4


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_is_as_close_as_transformers_own(dtype):
    hf = hf_tiny_families.gemma2()
    tokens = _tokens()
    model = HookedTransformer.from_hf_model(hf, dtype=dtype)
    assert model.W_E.dtype == getattr(torch, dtype)
    with torch.no_grad():
        ref = hf(tokens).logits.log_softmax(-1)
        own = hf_tiny_families.gemma2().to(getattr(torch, dtype))(tokens).logits.float().log_softmax(-1)
    ours = model(tokens).float().log_softmax(-1)
    # As close to float32 as transformers' own run in that dtype (bfloat16 keeps only 8 bits of mantissa).
    assert (ours - ref).abs().max() <= 1.5 * (own - ref).abs().max() + 0.02
    agree = lambda x: (x.argmax(-1) == ref.argmax(-1)).float().mean()  # noqa: E731
    assert agree(ours) >= agree(own) - 0.1

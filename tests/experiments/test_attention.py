"""Attention patterns for the attention page, against transformers' own attention weights."""

import torch

from exp_tiny import hf_gpt2, random_tokens
from lens_core import HookedTransformer
from lens_core.experiments.views.attention import AttentionRequest, attention_patterns


def test_patterns_equal_transformers_attentions():
    hf = hf_gpt2()
    hf.config._attn_implementation = "eager"  # sdpa returns no attention weights
    model = HookedTransformer.from_hf_model(hf)
    tokens = random_tokens(9, seed=2)
    result = attention_patterns(model, AttentionRequest(tokens=tuple(tokens[0].tolist())))
    with torch.no_grad():
        reference = torch.stack(hf(tokens, output_attentions=True).attentions)[:, 0]  # [layer, head, query, key]
    assert result.patterns.shape == reference.shape
    assert torch.allclose(result.patterns, reference, atol=1e-5)
    assert result.str_tokens == [f"<{i}>" for i in tokens[0].tolist()]  # no tokenizer: ids as labels

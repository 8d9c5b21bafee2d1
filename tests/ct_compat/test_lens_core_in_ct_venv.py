"""lens_core runs in the circuit-tracer venv (transformers 4.57.3): logits equal transformers' on a tiny GPT-2."""

import hf_tiny
import torch

from lens_core.loading import load_from_hf_model


def test_tiny_gpt2_logits_match_transformers_4_57():
    hf = hf_tiny.gpt2(seed=3)
    tokens = torch.tensor([[0, 5, 9, 17, 3, 11]])
    with torch.no_grad():
        want = hf(tokens).logits
        ours = load_from_hf_model(hf, hf_tiny.tiny_tokenizer(), fold_ln=False, center_writing_weights=False,
                                  center_unembed=False)
        got = ours(tokens)
    assert torch.allclose(got, want, atol=1e-4, rtol=1e-4), (got - want).abs().max()

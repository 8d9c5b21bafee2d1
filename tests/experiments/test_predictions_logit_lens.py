import pytest
import torch
import torch.nn.functional as F

from lens_core.experiments import LogitLensRequest, PredictionsRequest, logit_lens, predictions

from exp_tiny import hf_gpt2, random_tokens, tiny, tiny_with_tokenizer


def test_predictions_match_transformers():
    hf, model = hf_gpt2(0), tiny("gpt2")
    tokens = random_tokens(7, seed=3)
    result = predictions(model, PredictionsRequest(tokens=tuple(tokens[0].tolist()), top_k=3))
    with torch.no_grad():
        ref_logits = hf(tokens).logits[0]
    ref_probs, ref_ids = ref_logits.softmax(-1).topk(3, dim=-1)
    torch.testing.assert_close(result.top_probs, ref_probs, atol=1e-5, rtol=1e-4)
    assert torch.equal(result.top_token_ids, ref_ids)
    ref_loss = F.cross_entropy(ref_logits[:-1], tokens[0, 1:], reduction="none")
    torch.testing.assert_close(result.loss_per_token, ref_loss, atol=1e-5, rtol=1e-4)
    assert result.str_tokens == [f"<{t}>" for t in tokens[0].tolist()]


def _hf_lens(hf, tokens, frozen: bool) -> torch.Tensor:
    """Logit lens computed with the transformers modules: ln_f + lm_head on each hidden state."""
    captured = {}
    handle = hf.transformer.ln_f.register_forward_hook(lambda mod, inp, out: captured.setdefault("final", inp[0]))
    with torch.no_grad():
        out = hf(tokens, output_hidden_states=True)
    handle.remove()
    n = hf.config.n_layer
    # hidden_states[l] enters block l (l < n); the last entry has ln_f applied already, so use the captured input.
    resid = torch.stack([out.hidden_states[l][0] for l in range(n)] + [captured["final"][0]])
    ln = hf.transformer.ln_f
    if not frozen:
        with torch.no_grad():
            return hf.lm_head(ln(resid))
    final = captured["final"][0]
    scale = ((final - final.mean(-1, keepdim=True)).pow(2).mean(-1, keepdim=True) + ln.eps).sqrt()
    with torch.no_grad():
        return hf.lm_head((resid - resid.mean(-1, keepdim=True)) / scale * ln.weight + ln.bias)


@pytest.mark.parametrize("fold", [True, False])
@pytest.mark.parametrize("ln_mode", ["recomputed", "frozen"])
def test_logit_lens_matches_transformers_modules(fold, ln_mode):
    hf, model = hf_gpt2(0), tiny("gpt2", fold)
    tokens = random_tokens(6, seed=4)
    targets = (5, 17, 42)
    result = logit_lens(model, LogitLensRequest(tokens=tuple(tokens[0].tolist()), targets=targets, top_k=4, ln_mode=ln_mode))
    ref = _hf_lens(hf, tokens, frozen=ln_mode == "frozen")  # [layer, pos, vocab]
    assert result.layer_labels == ["L0", "L1", "L2", "final"]
    ref_probs = ref.softmax(-1)
    # Folding centres the unembedding: logits move by a constant per row, probabilities do not.
    torch.testing.assert_close(result.target_probs, ref_probs[..., list(targets)], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(result.top_probs, ref_probs.topk(4, dim=-1).values, atol=1e-5, rtol=1e-4)
    if not fold:
        torch.testing.assert_close(result.target_logits, ref[..., list(targets)], atol=1e-4, rtol=1e-4)
    # The last row is the model's own output, whatever the mode.
    with torch.no_grad():
        final_probs = hf(tokens).logits[0].softmax(-1)
    torch.testing.assert_close(result.target_probs[-1], final_probs[:, list(targets)], atol=1e-5, rtol=1e-4)


def test_modes_differ_before_the_last_layer():
    model = tiny("gpt2")
    req = dict(tokens=tuple(random_tokens(6, seed=4)[0].tolist()), targets=(3,))
    a = logit_lens(model, LogitLensRequest(**req, ln_mode="recomputed"))
    b = logit_lens(model, LogitLensRequest(**req, ln_mode="frozen"))
    assert not torch.allclose(a.target_logits[0], b.target_logits[0], atol=1e-3)


def test_logit_lens_validation():
    model = tiny_with_tokenizer()
    with pytest.raises(ValueError, match="not a single token"):
        logit_lens(model, LogitLensRequest(prompt="the cat sat", targets=("cat dog",)))
    with pytest.raises(ValueError, match="ln_mode"):
        logit_lens(model, LogitLensRequest(prompt="the cat sat", ln_mode="sideways"))
    result = logit_lens(model, LogitLensRequest(prompt="the cat sat", targets=("mat",)))
    assert result.str_tokens == ["<|endoftext|>", "the", "cat", "sat"]
    assert result.target_labels == ["mat"]

"""Tokenization helpers with TransformerLens conventions."""

import pytest
import torch

import hf_tiny
from lens_core import HookedTransformer


@pytest.fixture(scope="module")
def model():
    return HookedTransformer.from_hf_model(hf_tiny.gpt2(), tokenizer=hf_tiny.tiny_tokenizer())


def test_to_tokens_prepends_bos_and_pads(model):
    tok = hf_tiny.tiny_tokenizer()
    ids = tok.encode("the cat sat", add_special_tokens=False)
    assert model.to_tokens("the cat sat").tolist() == [[tok.bos_token_id] + ids]
    assert model.to_tokens("the cat sat", prepend_bos=False).tolist() == [ids]
    batch = model.to_tokens(["the cat", "the cat sat on"])
    assert batch.shape == (2, 5) and batch[0, 3:].tolist() == [model.pad_token_id] * 2
    left = model.to_tokens(["the cat", "the cat sat on"], padding_side="left")
    assert left[0, :2].tolist() == [model.pad_token_id] * 2 and left[0, 2:].tolist() == [tok.bos_token_id] + tok.encode("the cat")


def test_str_tokens_single_token_and_string(model):
    assert model.to_str_tokens("the cat sat") == ["<|endoftext|>", "the", "cat", "sat"]
    assert model.to_str_tokens(torch.tensor([[1, 2]])) == ["the", "cat"]
    assert model.to_single_token("cat") == 2
    with pytest.raises(ValueError, match=r"'cat sat' is not a single token: it is 2 tokens \['cat', 'sat'\]"):
        model.to_single_token("cat sat")
    assert model.to_string(model.to_tokens("the cat", prepend_bos=False)[0]) == "the cat"


def test_greedy_generation_matches_an_argmax_loop_with_transformers(model):
    hf = hf_tiny.gpt2()
    tokens = model.to_tokens("the cat sat")
    ours = model.generate(tokens, max_new_tokens=5, stop_at_eos=False)
    expected = tokens.clone()
    with torch.no_grad():
        for _ in range(5):
            nxt = hf(expected).logits[:, -1].argmax(-1, keepdim=True)
            expected = torch.cat([expected, nxt], dim=1)
    assert torch.equal(ours, expected)


def test_sampling_is_reproducible_with_a_seed(model):
    a = model.generate("the cat", max_new_tokens=6, temperature=1.0, seed=3, stop_at_eos=False)
    b = model.generate("the cat", max_new_tokens=6, temperature=1.0, seed=3, stop_at_eos=False)
    assert a == b and isinstance(a, str)


def test_over_long_and_empty_prompts_are_clear_errors(model):
    with pytest.raises(ValueError, match="at most 32"):
        model(torch.zeros(1, 40, dtype=torch.long))
    with pytest.raises(ValueError, match="no tokens"):
        model(torch.zeros(1, 0, dtype=torch.long))


def test_text_longer_than_the_context_is_an_error_unless_truncation_is_asked_for(model):
    from lens_core import PromptTooLongError

    text = " ".join(["the cat sat on a mat"] * 6)  # 36 words + BOS = 37 tokens, n_ctx is 32
    full = [model.bos_token_id] + hf_tiny.tiny_tokenizer().encode(text, add_special_tokens=False)
    assert len(full) == 37 and model.cfg.n_ctx == 32
    with pytest.raises(PromptTooLongError, match="37 tokens long, longer than the model's context of 32") as raised:
        model.to_tokens(text)
    assert (raised.value.n_tokens, raised.value.n_ctx) == (37, 32) and isinstance(raised.value, ValueError)
    with pytest.raises(PromptTooLongError):  # one long prompt in a batch is enough
        model.to_tokens(["the cat", text])
    assert model.to_tokens(text, truncate=True).tolist() == [full[:32]]
    exactly = " ".join(text.split()[:31])  # BOS + 31 = n_ctx: allowed
    assert model.to_tokens(exactly).shape == (1, 32)
    for call in (model, model.to_str_tokens, model.generate):  # every text entry point goes through to_tokens
        with pytest.raises(PromptTooLongError):
            call(text)

"""Tiny random-weight models for the experiment tests, built in-process (no downloads)."""

from __future__ import annotations

import functools

import torch
from transformers import GPT2Config, GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM, LlamaConfig, LlamaForCausalLM

from lens_core import HookedTransformer

VOCAB = 50


def _randomize(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random weights everywhere, norm weights and biases included, so nothing is trivially exact."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name or "ln" in name:
                param.copy_(1 + 0.2 * torch.randn(param.shape, generator=gen))
            else:
                param.copy_(0.3 * torch.randn(param.shape, generator=gen))
    return model.eval()


def hf_gpt2(seed: int = 0, **overrides) -> GPT2LMHeadModel:
    cfg = dict(n_layer=3, n_embd=32, n_head=4, vocab_size=VOCAB, n_positions=32, bos_token_id=0, eos_token_id=0)
    cfg.update(overrides)
    return _randomize(GPT2LMHeadModel(GPT2Config(**cfg)), seed)


def hf_neox(seed: int = 0) -> GPTNeoXForCausalLM:
    config = GPTNeoXConfig(num_hidden_layers=3, hidden_size=32, num_attention_heads=4, intermediate_size=64,
                           vocab_size=VOCAB, max_position_embeddings=32, rotary_pct=0.5, use_parallel_residual=True,
                           hidden_act="gelu", bos_token_id=0, eos_token_id=0, tie_word_embeddings=False)
    config.rope_parameters = {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5}
    return _randomize(GPTNeoXForCausalLM(config), seed)


def hf_llama(seed: int = 0) -> LlamaForCausalLM:
    config = LlamaConfig(num_hidden_layers=3, hidden_size=32, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                         intermediate_size=48, vocab_size=VOCAB, max_position_embeddings=32, bos_token_id=0,
                         eos_token_id=0, tie_word_embeddings=False)
    return _randomize(LlamaForCausalLM(config), seed)


HF = {"gpt2": hf_gpt2, "neox": hf_neox, "llama": hf_llama}


@functools.lru_cache(maxsize=None)
def tiny(family: str = "gpt2", fold: bool = True, seed: int = 0) -> HookedTransformer:
    """A HookedTransformer on a tiny random model; ``fold=False`` keeps the norm weights unfolded."""
    hf = HF[family](seed)
    options = dict(fold_ln=fold, center_writing_weights=fold, center_unembed=fold, fold_value_biases=fold)
    return HookedTransformer.from_hf_model(hf, tokenizer=None, **options)


def random_tokens(n_pos: int, seed: int, batch: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(1, VOCAB, (batch, n_pos), generator=gen)


WORDS = ["<|endoftext|>"] + "the cat sat on a mat and dog ran to park when john mary went store gave bottle".split()


def tiny_tokenizer():
    """A word-level tokenizer over a small vocabulary; unknown words map to <unk>."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(WORDS)}
    vocab["<unk>"] = len(vocab)
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                   unk_token="<unk>", pad_token="<|endoftext|>")


@functools.lru_cache(maxsize=None)
def tiny_with_tokenizer(seed: int = 0) -> HookedTransformer:
    return HookedTransformer.from_hf_model(hf_gpt2(seed), tokenizer=tiny_tokenizer())

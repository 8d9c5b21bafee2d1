"""Tiny random-weight Hugging Face models and a tokenizer, built in-process (no downloads)."""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (GPT2Config, GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM, LlamaConfig,
                          LlamaForCausalLM, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM)

VOCAB = 64
WORDS = ["<|endoftext|>"] + [w for w in "the cat sat on a mat and dog ran to park when john mary went store gave bottle".split()]


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer over a small vocabulary; unknown words map to <unk>."""
    vocab = {w: i for i, w in enumerate(WORDS)}
    vocab["<unk>"] = len(vocab)
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                   unk_token="<unk>", pad_token="<|endoftext|>")


def _randomize(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random weights everywhere, norms and biases included, so no processing step is trivially exact."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name or "ln" in name:
                param.copy_(1 + 0.2 * torch.randn(param.shape, generator=gen))
            else:
                param.copy_(0.3 * torch.randn(param.shape, generator=gen))
    return model.eval()


def gpt2(seed: int = 0, **overrides) -> GPT2LMHeadModel:
    cfg = dict(n_layer=3, n_embd=32, n_head=4, vocab_size=VOCAB, n_positions=32, bos_token_id=0, eos_token_id=0,
               activation_function="gelu_new")
    cfg.update(overrides)
    torch.manual_seed(seed)
    return _randomize(GPT2LMHeadModel(GPT2Config(**cfg)), seed)


def neox(seed: int = 0, **overrides) -> GPTNeoXForCausalLM:
    cfg = dict(num_hidden_layers=3, hidden_size=32, num_attention_heads=4, intermediate_size=64, vocab_size=VOCAB,
               max_position_embeddings=32, rotary_pct=0.5, use_parallel_residual=True, hidden_act="gelu",
               bos_token_id=0, eos_token_id=0, tie_word_embeddings=False)
    cfg.update(overrides)
    config = GPTNeoXConfig(**cfg)
    config.rope_parameters = {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": cfg["rotary_pct"]}
    torch.manual_seed(seed)
    return _randomize(GPTNeoXForCausalLM(config), seed)


def llama(seed: int = 0, **overrides) -> LlamaForCausalLM:
    cfg = dict(num_hidden_layers=3, hidden_size=32, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
               intermediate_size=48, vocab_size=VOCAB, max_position_embeddings=32, bos_token_id=0, eos_token_id=0,
               tie_word_embeddings=False)
    cfg.update(overrides)
    torch.manual_seed(seed)
    return _randomize(LlamaForCausalLM(LlamaConfig(**cfg)), seed)


def qwen2(seed: int = 0, **overrides) -> Qwen2ForCausalLM:
    cfg = dict(num_hidden_layers=2, hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
               intermediate_size=48, vocab_size=VOCAB, max_position_embeddings=32, bos_token_id=0, eos_token_id=0,
               tie_word_embeddings=True)
    cfg.update(overrides)
    torch.manual_seed(seed)
    return _randomize(Qwen2ForCausalLM(Qwen2Config(**cfg)), seed)


FAMILIES = {"gpt2": gpt2, "neox": neox, "llama": llama, "qwen2": qwen2}


def save_as_directory(hf, path) -> str:
    """Save a tiny model and the tiny tokenizer as a Hugging Face directory; returns its path."""
    hf.save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return str(path)

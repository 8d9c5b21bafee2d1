"""A tiny random-weight GPT-2 with an in-process byte-level BPE tokenizer, saved like a hub checkpoint.

No download: the tokenizer is trained here on a few sentences, so any text
(HTML included) tokenizes, with real multi-character pieces and a BOS token.
"""

from __future__ import annotations

from pathlib import Path

import torch

CORPUS = [
    "When Mary and John went to the store, John gave a drink to Mary.",
    "The Eiffel Tower is in the city of Paris.",
    "The cat sat on the mat. The dog sat on the log.",
    "one two three four five six seven eight nine ten",
    "<img src=x onerror=alert(1)> & \"quotes\" 'single' <b>bold</b>",
] * 4


def build_tiny_gpt2(directory: Path, seed: int = 0, n_layer: int = 2, n_head: int = 4, n_embd: int = 32,
                    n_positions: int = 64) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                   unk_token="<|endoftext|>")
    fast.save_pretrained(directory)

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=len(fast), n_positions=n_positions, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
                        bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id)
    model = GPT2LMHeadModel(config).eval()
    model.save_pretrained(directory, safe_serialization=True)
    return directory


def write_settings(path: Path, model_dir: Path, cache_dir: Path, max_prompt_tokens: int = 40,
                   allow_arbitrary: bool = False, demo_mode: bool = True) -> Path:
    path.write_text(
        f"""
[models]
allowlist = [{str(model_dir)!r}]
allow_arbitrary_models = {str(allow_arbitrary).lower()}
dtypes = ["float32"]
devices = ["cpu"]
max_loaded = 2

[limits]
max_prompt_tokens = {max_prompt_tokens}
max_concurrent_runs_per_device = 2

[cache]
directory = {str(cache_dir)!r}
size_limit_mb = 64

[app]
demo_mode = {str(demo_mode).lower()}
""",
        encoding="utf-8",
    )
    return path

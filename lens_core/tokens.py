"""Tokenization helpers with TransformerLens's names and conventions.

Mixed into ``HookedTransformer``. BOS is prepended by default (as TransformerLens
does), and the tokenizer's own special tokens are never added behind our back,
so ``to_tokens`` means the same thing for every tokenizer.

A prompt longer than the model's context is an error (:class:`PromptTooLongError`),
never cut without a word; ``to_tokens(..., truncate=True)`` keeps the first
``n_ctx`` tokens when that is what the caller wants.
"""

from __future__ import annotations

from typing import Optional, Union

import torch


class PromptTooLongError(ValueError):
    """A prompt has more tokens than the model's context; ``n_tokens`` and ``n_ctx`` say by how much."""

    def __init__(self, n_tokens: int, n_ctx: int):
        self.n_tokens, self.n_ctx = int(n_tokens), int(n_ctx)
        super().__init__(
            f"The prompt is {self.n_tokens} tokens long, longer than the model's context of {self.n_ctx} tokens. "
            f"Shorten it (or call to_tokens(..., truncate=True) to keep the first {self.n_ctx} tokens)."
        )


class TokenizerMixin:
    tokenizer: object
    cfg: object

    def _require_tokenizer(self):
        if self.tokenizer is None:
            raise ValueError("this model has no tokenizer: pass token ids, or load it with a tokenizer")
        return self.tokenizer

    @property
    def bos_token_id(self) -> Optional[int]:
        tok = self.tokenizer
        if tok is None:
            return None
        return tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id

    @property
    def pad_token_id(self) -> int:
        tok = self.tokenizer
        for candidate in (tok.pad_token_id, tok.eos_token_id, tok.bos_token_id):
            if candidate is not None:
                return candidate
        return 0

    def to_tokens(
        self,
        input: Union[str, list[str]],
        prepend_bos: Optional[bool] = None,
        padding_side: Optional[str] = None,
        move_to_device: bool = True,
        truncate: bool = False,
    ) -> torch.Tensor:
        """Text to token ids [batch, pos]; a list of prompts is padded on ``padding_side`` (default: the
        tokenizer's ``padding_side``, as in TransformerLens).

        A prompt longer than ``cfg.n_ctx`` tokens (BOS included) raises :class:`PromptTooLongError`
        unless ``truncate=True``, which keeps its first ``n_ctx`` tokens. (TransformerLens truncates
        by default; here cutting a prompt is only ever asked for.)
        """
        tok = self._require_tokenizer()
        texts = [input] if isinstance(input, str) else list(input)
        prepend_bos = self.cfg.default_prepend_bos if prepend_bos is None else prepend_bos
        rows = [tok.encode(text, add_special_tokens=False) for text in texts]
        if prepend_bos:
            if self.bos_token_id is None:
                raise ValueError("this tokenizer has no BOS token: use prepend_bos=False")
            rows = [[self.bos_token_id] + row for row in rows]
        n_ctx = int(self.cfg.n_ctx)
        if truncate:
            rows = [row[:n_ctx] for row in rows]
        else:
            longest = max(len(row) for row in rows)
            if longest > n_ctx:
                raise PromptTooLongError(longest, n_ctx)
        width = max(len(row) for row in rows)
        pad = [self.pad_token_id]
        if padding_side is None:
            padding_side = getattr(tok, "padding_side", None) or "right"
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        rows = [row + pad * (width - len(row)) if padding_side == "right" else pad * (width - len(row)) + row for row in rows]
        tokens = torch.tensor(rows, dtype=torch.long)
        return tokens.to(self.cfg.device) if move_to_device else tokens

    def _decode_each(self, ids: list[int]) -> list[str]:
        tok = self._require_tokenizer()
        return [tok.decode([i], clean_up_tokenization_spaces=False) for i in ids]

    def to_str_tokens(
        self, input: Union[str, list, torch.Tensor], prepend_bos: Optional[bool] = None
    ) -> Union[list[str], list[list[str]]]:
        """Each token as a string. A batch gives a list per prompt."""
        if isinstance(input, str):
            return self._decode_each(self.to_tokens(input, prepend_bos=prepend_bos)[0].tolist())
        if isinstance(input, list) and input and isinstance(input[0], str):
            return [self.to_str_tokens(text, prepend_bos) for text in input]
        ids = torch.as_tensor(input)
        if ids.dim() == 2 and ids.shape[0] == 1:
            ids = ids[0]
        if ids.dim() == 2:
            return [self._decode_each(row.tolist()) for row in ids]
        return self._decode_each(ids.reshape(-1).tolist())

    def to_single_token(self, string: str) -> int:
        """The id of a string that is exactly one token; a clear error naming the pieces otherwise."""
        tok = self._require_tokenizer()
        ids = tok.encode(string, add_special_tokens=False)
        if len(ids) != 1:
            pieces = self._decode_each(ids)
            raise ValueError(f"{string!r} is not a single token: it is {len(ids)} tokens {pieces}")
        return ids[0]

    def to_string(self, tokens: Union[torch.Tensor, list[int]]) -> Union[str, list[str]]:
        tok = self._require_tokenizer()
        ids = torch.as_tensor(tokens)
        if ids.dim() == 2:
            return [tok.decode(row.tolist(), clean_up_tokenization_spaces=False) for row in ids]
        return tok.decode(ids.tolist(), clean_up_tokenization_spaces=False)

    @torch.inference_mode()
    def generate(
        self,
        input: Union[str, torch.Tensor],
        max_new_tokens: int = 10,
        temperature: float = 0.0,
        top_k: Optional[int] = None,
        seed: Optional[int] = None,
        stop_at_eos: bool = True,
        prepend_bos: Optional[bool] = None,
    ) -> Union[str, torch.Tensor]:
        """Greedy (temperature 0) or sampled continuation. Returns text for text input, else tokens."""
        as_text = isinstance(input, str)
        tokens = self.to_tokens(input, prepend_bos=prepend_bos) if as_text else torch.as_tensor(input).to(self.cfg.device)
        if tokens.dim() == 1:
            tokens = tokens[None]
        generator = torch.Generator(device="cpu")
        if seed is not None:
            generator.manual_seed(seed)
        eos = None if self.tokenizer is None else self.tokenizer.eos_token_id
        finished = torch.zeros(tokens.shape[0], dtype=torch.bool)
        for _ in range(max_new_tokens):
            if tokens.shape[1] >= self.cfg.n_ctx:
                break
            logits = self(tokens)[:, -1, :].float().cpu()  # [batch, d_vocab]
            if temperature <= 0:
                next_tokens = logits.argmax(-1)
            else:
                logits = logits / temperature
                if top_k is not None:
                    kth = logits.topk(top_k, dim=-1).values[:, -1:]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                next_tokens = torch.multinomial(logits.softmax(-1), 1, generator=generator)[:, 0]
            if eos is not None and stop_at_eos:
                next_tokens = torch.where(finished, torch.full_like(next_tokens, eos), next_tokens)
                finished |= next_tokens == eos
            tokens = torch.cat([tokens, next_tokens[:, None].to(tokens.device)], dim=1)
            if eos is not None and stop_at_eos and finished.all():
                break
        if as_text:
            return self.to_string(tokens[0])
        return tokens

"""``utils.tokenize_and_concatenate``: a corpus as fixed-length rows of tokens, TransformerLens's way.

Documents are tokenized without special tokens, joined with one EOS between consecutive documents,
cut into rows of ``max_length - 1`` tokens (the remainder is dropped) and given a BOS each; a batch
of text shorter than one row becomes one row padded with the pad id (EOS when the tokenizer has
none). A Hugging Face ``datasets.Dataset`` is mapped batch by batch (``batched=True``, as in
TransformerLens, so documents join within a map batch); a list of strings or ``{"text": [...]}``
is one batch and gives ``{"tokens": LongTensor [rows, max_length]}``. ``datasets`` is optional.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch


def _rows(texts: list[str], tokenizer: Any, max_length: int, add_bos_token: bool, pad_id: int) -> np.ndarray:
    row_len = max_length - 1 if add_bos_token else max_length
    stream: list[int] = []
    for i, doc in enumerate(texts):
        if i:
            stream.append(tokenizer.eos_token_id)
        stream.extend(tokenizer(doc, add_special_tokens=False)["input_ids"])
    if not texts:
        return np.zeros((0, max_length), dtype=np.int64)
    if len(stream) < row_len:
        grid = np.array([stream + [pad_id] * (row_len - len(stream))], dtype=np.int64)
    else:
        n_rows = len(stream) // row_len
        grid = np.array(stream[: n_rows * row_len], dtype=np.int64).reshape(n_rows, row_len)
    if add_bos_token:
        grid = np.concatenate([np.full((grid.shape[0], 1), tokenizer.bos_token_id, dtype=np.int64), grid], axis=1)
    return grid


def tokenize_and_concatenate(dataset: Any, tokenizer: Any, streaming: bool = False, max_length: int = 1024,
                             column_name: str = "text", add_bos_token: bool = True, num_proc: Optional[int] = None,
                             set_format: bool = True) -> Any:
    """Rows of ``max_length`` tokens from a corpus (see the module docstring).

    Unlike TransformerLens, the tokenizer is not changed (it adds a ``<PAD>`` token when there is
    none; here the pad id falls back to EOS), and ``num_proc`` defaults to None (in-process):
    worker pools split the corpus into shards, which changes where documents join."""
    if tokenizer.eos_token_id is None:
        raise ValueError("tokenize_and_concatenate needs a tokenizer with an EOS token")
    if add_bos_token and tokenizer.bos_token_id is None:
        raise ValueError("this tokenizer has no BOS token: use add_bos_token=False")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if isinstance(dataset, (list, tuple, dict)):
        texts = list(dataset[column_name] if isinstance(dataset, dict) else dataset)
        return {"tokens": torch.from_numpy(_rows(texts, tokenizer, max_length, add_bos_token, pad_id))}
    extra_columns = [c for c in (dataset.column_names or []) if c != column_name]
    if extra_columns:
        dataset = dataset.remove_columns(extra_columns)
    mapped = dataset.map(lambda batch: {"tokens": _rows(batch[column_name], tokenizer, max_length, add_bos_token, pad_id)},
                         batched=True, remove_columns=[column_name], **({} if streaming else {"num_proc": num_proc}))
    if set_format and not streaming:
        mapped.set_format(type="torch", columns=["tokens"])
    return mapped

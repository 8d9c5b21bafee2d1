"""What every benchmark here shares: median timings and the GPT-2-shaped random model they run on."""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def median_time(fn, repeats: int, warm_up: bool = True) -> float:
    """Median wall seconds of ``repeats`` calls of ``fn`` (after one untimed call when ``warm_up``)."""
    if warm_up:
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved(fns: dict, repeats: int) -> dict:
    """Median seconds per call of each contender, alternated so drifting machine load hits them alike."""
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def add_model_args(parser: argparse.ArgumentParser, tokens_flag: str = "--tokens", tokens: int = 16) -> None:
    """The GPT-2-small shape by default (12 layers, 768 wide, 12 heads, GPT-2's vocabulary), and threads."""
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--d-model", type=int, default=768)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--vocab", type=int, default=50257)
    parser.add_argument(tokens_flag, type=int, default=tokens)


def set_threads(threads: int) -> None:
    if threads:
        torch.set_num_threads(threads)


def random_gpt2(args: argparse.Namespace, n_positions: int = 1024, seed: int = 0):
    """A random-weight ``transformers`` GPT-2 of the shape in ``args`` (see :func:`add_model_args`)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(n_layer=args.layers, n_embd=args.d_model, n_head=args.heads, vocab_size=args.vocab,
                        n_positions=n_positions)
    return GPT2LMHeadModel(config).eval()

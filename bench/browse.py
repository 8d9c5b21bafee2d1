"""Benchmark: one head's ablation over the whole default corpus against the plain forward passes over it,
and the time of a cached re-visit (the app's path: the corpus in pieces through the result store).

The bundled model, its held-out corpus (1160 windows of 128 tokens, 147,194 predicted tokens), the
head L1H3. The reference is ``model(tokens)`` (logits) over every window in the batches ``browse``
uses. Each browse run is compared with the plain passes measured just before it, in wall time and
in this process's CPU time (the steadier of the two on a shared machine); the median over repeats.
Goal (issue 14): browse ≤ 2.5x the plain forward passes.

    .venv/bin/python -m bench.browse [--repeats N] [--windows N] [--methods zero,mean,resample]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from lens_core import HookedTransformer
from lens_core.corpus import load_default_corpus
from lens_core.experiments.corpus.browse import (BrowseRequest, _batch_size, browse, chunk_requests, clear_memo, combine,
                                          request_corpus)


class Clock:
    """Wall time and this process's CPU time (all threads): on a shared machine the CPU time is the steadier."""

    def __enter__(self) -> "Clock":
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def plain_passes(model, tokens: torch.Tensor, batch: int) -> Clock:
    with Clock() as clock, torch.inference_mode():
        for first in range(0, tokens.shape[0], batch):
            model(tokens[first:first + batch])
    return clock


def page_visit(model, store, request: BrowseRequest, n_windows: int) -> float:
    """What the Browse page does: every cached piece through the store, then the join."""
    corpus = request_corpus(model, request)
    start = time.perf_counter()
    parts = [store.run_experiment(model, "browse", browse, piece) for piece in chunk_requests(request, n_windows, 128)]
    combine(request, parts, corpus)
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--windows", type=int, default=None, help="first N windows only (default: all)")
    parser.add_argument("--methods", default="zero,mean")
    args = parser.parse_args(argv)

    model = HookedTransformer.from_pretrained("default")
    corpus = load_default_corpus()
    n = corpus.n_windows if args.windows is None else min(args.windows, corpus.n_windows)
    batch = _batch_size(model, corpus.window_len, BrowseRequest().memory_budget_mb)
    print(f"bundled model, {n} windows x {corpus.window_len} tokens, batch {batch}, torch threads {torch.get_num_threads()}")
    plain_passes(model, corpus.tokens[:batch], batch)  # warm-up

    for method in args.methods.split(","):
        request = BrowseRequest(component=("head", 1, 3), method=method, window_stop=n)
        other = BrowseRequest(component=("head", 1, 2), method=method, window_stop=n)
        rows = []
        for _ in range(args.repeats):
            plain = plain_passes(model, corpus.tokens[:n], batch)
            clear_memo()  # cold: no remembered plain loss, no corpus mean
            with Clock() as cold:
                browse(model, request)
            with Clock() as warm:
                browse(model, other)  # the plain loss (and for mean, the corpus pass) remembered in-process
            rows.append((cold.cpu / plain.cpu, plain, cold, warm))
        # Each run against the plain passes measured just before it; the median over the repeats.
        _, plain, cold, warm = sorted(rows, key=lambda r: r[0])[(len(rows) - 1) // 2]
        print(f"{method:>8}: plain forward passes {plain.wall:.2f} s wall / {plain.cpu:.2f} s CPU | browse L1H3 "
              f"{cold.wall:.2f} s / {cold.cpu:.2f} s = {cold.wall / plain.wall:.2f}x wall, {cold.cpu / plain.cpu:.2f}x CPU "
              f"(first head on this corpus) | another head after it {warm.cpu / plain.cpu:.2f}x CPU")

    from cache_store import ResultStore

    with tempfile.TemporaryDirectory() as directory:
        store = ResultStore(directory)
        request = BrowseRequest(component=("head", 1, 3), method="zero", window_stop=n)
        clear_memo()
        first = page_visit(model, store, request, n)
        revisits = [page_visit(model, store, request, n) for _ in range(3)]
        store.close()
    print(f"page visit, zero ablation of L1H3 over {n} windows: first {first:.2f} s, cached re-visit "
          f"{min(revisits) * 1000:.0f} ms ({first / min(revisits):.0f}x faster)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

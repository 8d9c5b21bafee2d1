"""Benchmark: a cache hit against computing, for an experiment result and a full activation cache.

A GPT-2-small-shaped random model (12 layers, d_model 768, 12 heads, vocab 50257),
one 64-token prompt: an activation-patching result (resid_pre sweep, clean vs a
one-token corruption) and the prompt's full activation cache (every hook point).
Prints the median of several runs of each and the ratios.
Goal (issue 5): a hit on an experiment result in at most 20 ms.

    .venv/bin/python -m bench.cache [--dir DIR] [--repeats N] [--fp16]     (from the repository root)
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from cache_store import ResultStore, make_key, model_fingerprint


def timed(fn, repeats: int) -> tuple[float, object]:
    times, value = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), value


def build_model():
    from transformers import GPT2Config, GPT2LMHeadModel

    from lens_core import HookedTransformer

    torch.manual_seed(0)
    config = GPT2Config(n_layer=12, n_embd=768, n_head=12, vocab_size=50257, n_positions=1024)
    return HookedTransformer.from_hf_model(GPT2LMHeadModel(config).eval(), model_name="gpt2-shaped-random")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=None, help="cache directory (default: a fresh temporary one)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--fp16", action="store_true", help="store activations as float16")
    args = parser.parse_args()

    from lens_core.experiments.interventions.patching import PatchingRequest, activation_patching

    model = build_model()
    tokens = torch.randint(0, 50257, (1, 64), generator=torch.Generator().manual_seed(1))
    corrupted = tokens.clone()
    corrupted[0, 20] = (corrupted[0, 20] + 1) % 50257  # a one-token corruption, as in a name swap
    request = PatchingRequest(clean_tokens=tuple(tokens[0].tolist()), corrupted_tokens=tuple(corrupted[0].tolist()),
                              answer=11, wrong_answer=12, sweep="resid_pre")
    with torch.inference_mode():
        model(tokens)  # warm-up

    directory = args.dir or Path(tempfile.mkdtemp(prefix="cache-bench-"))
    store = ResultStore(directory, size_limit_bytes=2 * 2**30, activations_fp16=args.fp16)
    print(f"cache directory: {directory}  (activations stored as {'float16' if args.fp16 else 'float32'})")

    # Experiment result: an activation-patching sweep (resid_pre: every layer x position).
    t_key, _ = timed(lambda: make_key("result", model_fingerprint(model), request.clean_tokens, "activation_patching",
                                      {"request": request}), args.repeats)
    t_compute, _ = timed(lambda: activation_patching(model, request), max(1, args.repeats // 3))
    store.run_experiment(model, "activation_patching", activation_patching, request)  # store it
    t_hit, _ = timed(lambda: store.run_experiment(model, "activation_patching", activation_patching, request), args.repeats)

    # Full activation cache (every hook run_with_cache keeps by default).
    def run_all():
        with torch.inference_mode():
            _, cache = model.run_with_cache(tokens)
        return dict(cache.cache_dict)

    t_acts, acts = timed(run_all, args.repeats)
    n_bytes = sum(t.numel() * t.element_size() for t in acts.values())
    store.get_or_compute_activations(model, tokens, None, lambda: acts)
    t_acts_hit, _ = timed(lambda: store.get_or_compute_activations(model, tokens, None, run_all), args.repeats)

    stats = store.stats()
    store.close()
    if args.dir is None:
        shutil.rmtree(directory, ignore_errors=True)
    print(f"experiment result (activation patching, resid_pre sweep, 64 tokens, 12 layers): key {t_key * 1e3:.2f} ms")
    print(f"  compute {t_compute * 1e3:8.1f} ms   hit {t_hit * 1e3:8.1f} ms   compute/hit {t_compute / t_hit:6.1f}x"
          f"   goal hit <= 20 ms: {'met' if t_hit <= 0.020 else 'NOT met'}")
    print(f"activation cache ({len(acts)} hooks, {n_bytes / 2**20:.1f} MiB in memory):")
    print(f"  compute {t_acts * 1e3:8.1f} ms   hit {t_acts_hit * 1e3:8.1f} ms   compute/hit {t_acts / t_acts_hit:6.1f}x")
    print(f"store: {stats.entries} entries, {stats.bytes / 2**20:.1f} MiB on disk, hits {stats.hits}, misses {stats.misses}")


if __name__ == "__main__":
    main()

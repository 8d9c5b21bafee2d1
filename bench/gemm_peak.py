"""How close the patching sweeps run to this machine's matrix-multiply peak.

    .venv/bin/python -m bench.gemm_peak        (from the repository root)

Prints the float32 GEMM rate at the shapes a GPT-2-small MLP sees, and the share of a
head-output patching sweep's time (GPT-2-small shape, 16 tokens, as bench/patching.py)
spent inside matrix-multiply calls, measured with cProfile.
"""

from __future__ import annotations

import cProfile
import pstats
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from lens_core import HookedTransformer
from lens_core.experiments import PatchingRequest, activation_patching

MATMULS = ("addmm", "linear", "matmul", "baddbmm", "scaled_dot_product_attention")


def gemm_rate(rows: int, repeats: int = 20) -> float:
    a, b = torch.randn(rows, 768), torch.randn(768, 3072)
    for _ in range(3):
        a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * rows * 768 * 3072 * repeats / (time.perf_counter() - start) / 1e9


def main() -> None:
    for rows in (144, 576, 1728):
        print(f"GEMM [{rows} x 768] @ [768 x 3072]: {gemm_rate(rows):.0f} GFLOP/s")
    torch.manual_seed(0)
    model = HookedTransformer.from_hf_model(GPT2LMHeadModel(GPT2Config(n_positions=1024)).eval())
    gen = torch.Generator().manual_seed(1)
    clean = torch.randint(1, 50257, (1, 16), generator=gen)
    corrupted = clean.clone()
    corrupted[0, 4] = (clean[0, 4] + 1) % 50257
    corrupted[0, 8] = (clean[0, 8] + 7) % 50257
    request = PatchingRequest(clean_tokens=tuple(clean[0].tolist()), corrupted_tokens=tuple(corrupted[0].tolist()),
                              answer=5, wrong_answer=6, sweep="head_out_all_pos", with_answer_prob=False)
    activation_patching(model, request)  # warm-up
    profile = cProfile.Profile()
    profile.enable()
    activation_patching(model, request)
    profile.disable()
    stats = pstats.Stats(profile).stats
    total = max(t for (_, _, name), (_, _, _, t, _) in stats.items() if "activation_patching" in name)
    in_matmul = sum(tt for (_, _, name), (_, _, tt, _, _) in stats.items() if any(m in name for m in MATMULS))
    print(f"head-output sweep: {total:.3f} s, {100 * in_matmul / total:.0f}% of it in matrix-multiply calls")


if __name__ == "__main__":
    main()

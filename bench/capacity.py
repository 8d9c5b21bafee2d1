"""What one page view costs, per page, for the capacity estimates in docs/scaling.md.

    .venv/bin/python -m bench.capacity [--tokens 32] [--threads 1] [--device cpu]   (from the repository root)

For the bundled model and a GPT-2-small-shaped model (random weights, 12 layers,
d_model 768, vocab 50257), in this process:

* memory per loaded model: RSS growth over the load, and the parameter bytes;
* per page, the experiments that page runs on a first visit (its default request,
  ``--tokens`` prompt tokens), timed as a cache miss (compute + encode, median of 3)
  and as a hit from the disk store and, when ``redis-server`` is installed, from a
  Redis on a free 127.0.0.1 port (read + decode);
* the reference in the same run: one plain forward pass of the same model and
  prompt, so each page is also printed as a multiple of a forward pass.

With ``--threads 1`` the times are CPU-seconds on one core, which is what the
capacity arithmetic in docs/scaling.md divides into.
"""

from __future__ import annotations

import argparse
import gc
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psutil
import torch

from cache_store import ResultStore
from cache_store.codec import encode_result
from lens_core import HookedTransformer
from lens_core.experiments import (
    AblationRequest,
    AblationSweepRequest,
    AttentionRequest,
    CompositionRequest,
    DetectorRequest,
    DLARequest,
    HeadCircuitsRequest,
    LogitLensRequest,
    PatchingRequest,
    PredictionsRequest,
    REGISTRY,
)


def page_requests(ids: tuple[int, ...], corrupted: tuple[int, ...]) -> dict[str, list[tuple[str, object]]]:
    """The experiments each page runs on a first visit with its default inputs."""
    answer, wrong = ids[-1], ids[-2]
    guess = ("predictions", PredictionsRequest(tokens=ids, top_k=32))  # answer defaults (next_token_guesses)
    return {
        "Prompt & predictions": [("predictions", PredictionsRequest(tokens=ids, top_k=5))],
        "Attention": [("attention_patterns", AttentionRequest(tokens=ids))],
        "Logit lens": [guess, ("logit_lens", LogitLensRequest(tokens=ids, targets=(answer,)))],
        "Direct logit attribution": [guess, ("dla", DLARequest(tokens=ids, answer=answer, wrong_answer=wrong))],
        "Activation patching": [guess] + [
            ("activation_patching", PatchingRequest(clean_tokens=ids, corrupted_tokens=corrupted, answer=answer,
                                                    wrong_answer=wrong, sweep=sweep))
            for sweep in ("resid_pre", "head_out_all_pos")],
        "Ablation": [guess, ("ablation", AblationRequest(tokens=ids, components=(("head", 0, 0),), answer=answer,
                                                         wrong_answer=wrong)),
                     ("ablation_sweep", AblationSweepRequest(tokens=ids, target="heads", answer=answer,
                                                             wrong_answer=wrong))],
        "Head detectors": [("head_detectors", DetectorRequest(tokens=ids))],
        "Circuits": [("head_circuits", HeadCircuitsRequest(layer=0, head=0)), ("composition", CompositionRequest())],
    }


CPU_TIMES: list[float] = []  # CPU seconds of the last median_time call's median run


def median_time(fn, repeats: int = 3) -> float:
    """Median wall seconds of ``repeats`` calls; the matching CPU seconds (this process) go to CPU_TIMES.

    CPU time is the figure that survives a busy machine: with other processes on the
    cores, wall time stretches but the work done (CPU seconds, one thread) does not."""
    runs = []
    for _ in range(repeats):
        start, cpu = time.perf_counter(), time.process_time()
        fn()
        runs.append((time.perf_counter() - start, time.process_time() - cpu))
    runs.sort()
    CPU_TIMES.append(runs[len(runs) // 2][1])
    return runs[len(runs) // 2][0]


def start_redis(directory: Path):
    binary = shutil.which("redis-server")
    if binary is None:
        return None, None
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(directory)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    from cache_store.redis_backend import RedisResultStore

    for _ in range(100):
        store = RedisResultStore(f"redis://127.0.0.1:{port}/0", prefix="bench:", retry_after_s=0.05)
        if not store.degraded:
            return proc, store
        store.close()
        time.sleep(0.1)
    proc.terminate()
    return None, None


def load(which: str, device: str):
    gc.collect()
    before = psutil.Process().memory_info().rss
    if which == "bundled":
        model = HookedTransformer.from_pretrained("default", device=device)
    else:
        from transformers import GPT2Config, GPT2LMHeadModel

        torch.manual_seed(0)
        hf = GPT2LMHeadModel(GPT2Config()).eval()
        model = HookedTransformer.from_hf_model(hf).to(device)
        del hf
    gc.collect()
    grown = psutil.Process().memory_info().rss - before
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    return model, grown, params


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", nargs="+", default=["bundled", "gpt2-small-shape"])
    parser.add_argument("--repeats", type=int, default=3, help="runs per miss timing (median)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), device {args.device}, "
          f"{args.tokens}-token prompt; load average {psutil.getloadavg()[0]:.1f} on {psutil.cpu_count()} CPUs")

    with tempfile.TemporaryDirectory(prefix="bench-capacity-") as tmp:
        tmp = Path(tmp)
        redis_proc, redis_store = start_redis(tmp)
        try:
            for which in args.models:
                model, grown, params = load(which, args.device)
                cfg = model.cfg
                print(f"\n{which}: {cfg.n_layers} layers, d_model {cfg.d_model}, vocab {cfg.d_vocab}; "
                      f"parameters {params / 2**20:.0f} MiB, RSS +{grown / 2**20:.0f} MiB after loading")
                generator = torch.Generator().manual_seed(0)
                ids = tuple(int(t) for t in torch.randint(1, cfg.d_vocab, (args.tokens,), generator=generator))
                corrupted = (ids[0], ids[2], ids[2]) + ids[3:]
                tokens = torch.tensor([ids], device=args.device)
                with torch.inference_mode():
                    forward = median_time(lambda: model(tokens), 5)
                forward_cpu = CPU_TIMES[-1]
                print(f"  reference: one forward pass {forward * 1e3:.1f} ms wall, {forward_cpu * 1e3:.1f} ms CPU")
                print(f"  {'page':<26} {'miss ms':>9} {'miss CPU ms':>11} {'x fwd':>6} {'disk hit ms':>11} "
                      f"{'redis hit ms':>12} {'bytes':>9}")
                disk = ResultStore(tmp / f"disk-{which}", size_limit_bytes=2**30)
                for page, runs in page_requests(ids, corrupted).items():
                    miss = miss_cpu = disk_hit = redis_hit = 0.0
                    size = 0
                    for name, request in runs:
                        fn = REGISTRY[name]
                        fresh = lambda: {"r": repr(request), "n": time.perf_counter()}  # a new key: always a miss
                        miss += median_time(lambda: disk.get_or_compute(model, name, ids, fresh(), lambda: fn(model, request)),
                                            args.repeats)
                        miss_cpu += CPU_TIMES[-1]
                        result = fn(model, request)
                        disk.get_or_compute(model, name, ids, {"r": repr(request)}, lambda: result)
                        disk_hit += median_time(lambda: disk.get_or_compute(model, name, ids, {"r": repr(request)},
                                                                            lambda: 1 / 0))
                        if redis_store is not None:
                            redis_store.get_or_compute(model, name, ids, {"r": repr(request)}, lambda: result)
                            redis_hit += median_time(lambda: redis_store.get_or_compute(
                                model, name, ids, {"r": repr(request)}, lambda: 1 / 0))
                        size += len(encode_result(result))
                    redis_text = f"{redis_hit * 1e3:>12.1f}" if redis_store is not None else f"{'n/a':>12}"
                    print(f"  {page:<26} {miss * 1e3:>9.1f} {miss_cpu * 1e3:>11.1f} {miss_cpu / forward_cpu:>6.1f} "
                          f"{disk_hit * 1e3:>11.1f} {redis_text} "
                          f"{size:>9}")
                disk.close()
                del model
                gc.collect()
        finally:
            if redis_store is not None:
                redis_store.close()
            if redis_proc is not None:
                redis_proc.terminate()
                redis_proc.wait(10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

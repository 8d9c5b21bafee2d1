"""Peak memory of one model load, in a fresh process: ours against transformers' ``from_pretrained``.

    .venv/bin/python -m bench.load_memory [DIR]   (from the repository root; bench.forward runs it too)

Without DIR: a GPT-2-small-shaped random model is saved to a temporary directory
(safetensors, no hub). Each loader runs in a fresh process: imports first, then the
kernel's peak-RSS counter is reset (``/proc/self/clear_refs``), then one load. The
figure is (peak RSS during the load - RSS before it) / the loaded model's parameter
bytes. Goal (issue 15): ours <= 1.3x. "ours" is a load without the weight cache (it processes);
``bench.forward`` adds a load that hits the weight cache and one that misses it.

transformers 5 maps the checkpoint and copies nothing: its parameters are pages of
the file, counted in RSS only once something reads them. So its figure is printed
twice: right after ``from_pretrained``, and after reading every parameter once
(what a first forward pass does), which is the memory it holds in use.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

from lens_core.weight_cache import RACY_SECONDS

CHILD = r"""
import re, sys, time
import torch, transformers
from transformers import AutoConfig, AutoTokenizer, GPT2LMHeadModel  # imports are not part of a load
from lens_core import HookedTransformer

def status(field):
    return int(re.search(field + r":\s+(\d+) kB", open("/proc/self/status").read()).group(1)) * 1024

which, directory = sys.argv[1], sys.argv[2]
open("/proc/self/clear_refs", "w").write("5")  # VmHWM := VmRSS
before = status("VmRSS")
start = time.perf_counter()
if which == "hf":
    model = GPT2LMHeadModel.from_pretrained(directory)
else:  # "ours" processes; with the weight cache in sys.argv[3]: a hit maps the entry, a miss makes it
    model = HookedTransformer.from_pretrained(directory, weight_cache=sys.argv[3] if len(sys.argv) > 3 else False)
    assert which == "ours" or model.weight_cache.startswith("loaded" if "hit" in which else "stored"), model.weight_cache
seconds = time.perf_counter() - start
peak = status("VmHWM")
size = sum(p.numel() * p.element_size() for p in model.parameters())
line = f"{which}: peak +{(peak - before) / 2**20:.0f} MiB for {size / 2**20:.0f} MiB of parameters = {(peak - before) / size:.2f}x"
if which != "ours":
    with torch.no_grad():
        for p in model.parameters():
            p.sum()
    line += f"; after reading every parameter once +{(status('VmHWM') - before) / 2**20:.0f} MiB = {(status('VmHWM') - before) / size:.2f}x"
print(line + f" ({seconds * 1e3:.0f} ms)")
"""


def measure(which: str, directory: str, *extra: str) -> str:
    out = subprocess.run([sys.executable, "-c", CHILD, which, directory, *extra], capture_output=True, text=True)
    lines = out.stdout.strip().splitlines() or out.stderr.strip().splitlines() or ["no output"]
    return lines[-1]


def save_gpt2_small(directory: str) -> None:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config()).save_pretrained(directory)


def report(directory: str, weight_cache: str = "") -> None:
    """``weight_cache``: a directory holding this checkpoint's processed weights (lens_core.weight_cache): two
    more rows, a load that maps them (like transformers: counted once read) and one that misses (an empty cache)."""
    print("peak RSS increase during one load, in a fresh process / the loaded parameter bytes (goal: ours <= 1.3x):")
    for which in ("ours", "hf"):
        print("  " + measure(which, directory))
    if weight_cache:
        print("  " + measure("ours, weight cache hit", directory, weight_cache))
        with tempfile.TemporaryDirectory() as empty:
            print("  " + measure("ours, weight cache miss", directory, empty))


def main() -> None:
    if len(sys.argv) > 1:
        report(sys.argv[1])
        return
    with tempfile.TemporaryDirectory() as directory:
        save_gpt2_small(directory)
        cache = os.path.join(directory, "weight-cache")
        # The entry the "hit" row maps, stored by a process of its own; a checkpoint written a moment ago is
        # never cached (lens_core.weight_cache.RACY_SECONDS), so wait that long first.
        time.sleep(RACY_SECONDS)
        subprocess.run([sys.executable, "-c", "import sys; from lens_core import HookedTransformer; "
                        "HookedTransformer.from_pretrained(sys.argv[1], weight_cache=sys.argv[2])", directory, cache],
                       check=True, capture_output=True)
        report(directory, cache)


if __name__ == "__main__":
    main()

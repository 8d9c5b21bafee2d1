"""The guided story page's compute after the model is loaded (issue 23's goal: at most 10 s on 2 cores).

Times, with the bundled model already loaded: (1) every experiment of the story run directly (``ui.story.compute``
with the plain functions, no cache), (2) the whole page through streamlit.testing with an empty result cache (the
experiments, the cache writes and the drawing). The reference, measured in the same process, is one forward pass of
the story's prompt; the ratios are what to compare across machines.

    python -m bench.story_page [--threads 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from lens_core import HookedTransformer
    from ui import story
    from ui.widgets import derive_corrupted_prompt, load_presets

    model = HookedTransformer.from_pretrained("default", dtype="float32", device="cpu")
    preset = next(p for p in load_presets("default") if p["name"].startswith("Induction"))
    s = story.inputs(model, preset["prompt"], preset["answer"], preset["wrong_answer"], derive_corrupted_prompt)
    from lens_core.features import load_transcoders

    tset = load_transcoders(model)  # loaded once, as the app's cache_resource holds it
    fingerprint = tset.fingerprint()
    tokens = torch.tensor([s.ids])

    def forward() -> float:
        start = time.perf_counter()
        with torch.inference_mode():
            model(tokens)
        return time.perf_counter() - start

    def direct() -> float:
        start = time.perf_counter()
        story.compute(lambda name, fn, request: fn(model, request, **({"transcoders": tset} if name in ("attribution_graph", "qk_attribution")
                                                                      else {})), s, fingerprint)
        return time.perf_counter() - start

    from streamlit.testing.v1 import AppTest

    def page_run(tmp: str) -> float:
        text = (ROOT / "settings.toml").read_text(encoding="utf-8")
        text = text.replace('directory = ".cache/results"', f"directory = {str(Path(tmp) / 'cache')!r}")
        (Path(tmp) / "settings.toml").write_text(text, encoding="utf-8")
        os.environ["CIRCUIT_EXPLORER_SETTINGS"] = str(Path(tmp) / "settings.toml")  # a new, empty result cache
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
        at.run()  # loads the model (once per process: the pool is process-wide)
        at.switch_page("app_pages/" + next(p.name for p in (ROOT / "app_pages").glob("[0-9]*_Guided_story.py")))
        start = time.perf_counter()
        at.run()
        elapsed = time.perf_counter() - start
        assert not at.exception and not at.error, [e.value for e in at.exception] + [e.value for e in at.error]
        return elapsed

    forward(), direct()  # warm up (first-call allocations, transcoders loaded)
    fwd = min(forward() for _ in range(10))
    computes, page_times = [], []
    for _ in range(args.repeats):  # interleaved, so both see the same load on a shared machine
        computes.append(direct())
        with tempfile.TemporaryDirectory() as tmp:
            page_times.append(page_run(tmp))
    compute = statistics.median(computes)
    page = statistics.median(page_times)
    print(f"threads={args.threads}  one forward pass: {fwd * 1000:.2f} ms")
    print(f"story experiments, direct, no cache (median of {args.repeats}): {compute:.3f} s  ({compute / fwd:.0f}x a forward pass)")
    print(f"story page, empty cache, model loaded (median): {page:.3f} s  ({page / fwd:.0f}x a forward pass; goal 10 s: "
          f"{page / 10:.1%} of it)")


if __name__ == "__main__":
    main()

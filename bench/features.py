"""Feature activations for a 128-token prompt against one forward pass of the bundled model, in one run.

    .venv/bin/python -m bench.features [--repeats 50] [--threads 1]   (from the repository root)

Goal (issue 12): ``lens_core.features.feature_activations`` (every layer's transcoder features, from one
pass that stops at the last MLP's input) <= 1.2x ``model(tokens)``. The three encoders are 3 x 128 x 1024
multiply-adds per token against the model's ~1.1M, but this small model's forward pass is bound by per-op
overhead, so the encoders' matrix products and top-k weigh more than their share: measured 1.14x-1.49x across
runs on the shared 2-core machine (load average 7-12). Uses the shipped transcoders, or random ones of
the same shape if they are missing (said in the output).
"""

from __future__ import annotations

import argparse

import torch

from bench.timing import interleaved
from lens_core import HookedTransformer
from lens_core.features import FeaturesUnavailable, Transcoder, TranscoderConfig, TranscoderSet, feature_activations
from lens_core.features import load_transcoders, mlp_in_hook, mlp_out_hook




def transcoders(model) -> tuple[TranscoderSet, str]:
    try:
        return load_transcoders(model), "shipped transcoders"
    except FeaturesUnavailable as exc:
        d = model.cfg.d_model
        tset = TranscoderSet({l: Transcoder(TranscoderConfig(d, 8 * d, d, l, mlp_in_hook(l), mlp_out_hook(l), "topk", k=32))
                              for l in range(model.cfg.n_layers)})
        for tc in tset:
            torch.nn.init.normal_(tc.W_enc, std=d**-0.5)
            torch.nn.init.normal_(tc.W_dec, std=d**-0.5)
        return tset, f"random transcoders of the shipped shape ({exc})"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = HookedTransformer.from_pretrained("default")
    tset, which = transcoders(model)
    tokens = torch.randint(1, model.cfg.d_vocab, (1, 128), generator=torch.Generator().manual_seed(0))
    tokens[0, 0] = 0
    with torch.inference_mode():
        t = interleaved({"forward": lambda: model(tokens),
                         "features": lambda: feature_activations(model, tset, tokens)}, args.repeats)
    print(f"bundled model, 128 tokens, {args.threads} thread(s), {which}, {len(tset)} layers x {tset[0].cfg.d_sae} features")
    print(f"forward {t['forward'] * 1e3:.2f} ms, feature activations {t['features'] * 1e3:.2f} ms: "
          f"ratio {t['features'] / t['forward']:.2f}x (goal <= 1.2x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Precompute the feature and neuron dashboards of the bundled model over its held-out split.

    .venv/bin/python -m training.build_feature_dashboards            # a few minutes on one CPU core

Reads the shipped transcoders (``lens_core/default_model/transcoders``) and the held-out corpus
(``lens_core.corpus.load_default_corpus``: the held-out standard-library files that
``training/train_default_model.py`` sets aside, 128-token BOS-first windows), and writes
``dashboards.safetensors`` + ``dashboards.json`` beside the transcoders. What each field means:
``lens_core/features/dashboards.py``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from lens_core.features.transcoder import DEFAULT_TRANSCODERS_DIR  # noqa: E402

DASHBOARD_OPTIONS = dict(n_top=20, before=16, after=7, n_bins=20, n_logits=10, n_inputs=10)


def held_out_windows(model):
    """(tokens [window, 128], lengths [window], corpus description) of the held-out split."""
    from lens_core.corpus import load_default_corpus

    corpus = load_default_corpus(model.cfg.n_ctx)
    return corpus.tokens, corpus.lengths, {"corpus": corpus.name, "corpus_digest": corpus.digest,
                                           "documents": [d.name for d in corpus.documents]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--transcoders", type=Path, default=DEFAULT_TRANSCODERS_DIR)
    p.add_argument("--out", type=Path, default=None, help="default: beside the transcoders")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from lens_core import HookedTransformer
    from lens_core.features import load_transcoders
    from lens_core.features.dashboards import build_dashboards, save_dashboards

    model = HookedTransformer.from_pretrained("default")
    tset = load_transcoders(args.transcoders)
    tset.check_fits(model)
    tokens, lengths, source = held_out_windows(model)
    start = time.time()
    tensors = build_dashboards(model, tset, tokens, lengths, progress=lambda s: print(f"{s} ({time.time() - start:.0f}s)",
                                                                                       flush=True), **DASHBOARD_OPTIONS)
    n_positions = int((lengths - 1).sum())
    meta = {**DASHBOARD_OPTIONS, **source, "n_windows": len(tokens), "n_positions": n_positions,
            "bos_excluded": True, "transcoders_fingerprint": tset.fingerprint(), "model_weights_hash": model.weights_hash(),
            "command": "python -m training.build_feature_dashboards"}
    out = args.out or args.transcoders
    save_dashboards(tensors, out, meta)
    size = (out / "dashboards.safetensors").stat().st_size + (out / "dashboards.json").stat().st_size
    print(f"wrote {out}: {size / 1e6:.1f} MB over {n_positions:,} held-out positions in {time.time() - start:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Re-measure the bundled model's circuits with the project's own detectors (lens_core.experiments).

    .venv/bin/python -m training.measure_circuits

Prints, per layer, the best previous-token, duplicate-token and induction head on
(a) repeated random tokens (BOS + r + r, r of 50 tokens, 4 sequences, seed 0) and
(b) held-out standard-library code (16 windows of 128 tokens, the files the training
script holds out), plus the loss on the first and second copy of a repeat.
The model card's "Measured with lens_core" section is this script's output; it also
prints how long loading the bundled model takes.
"""

from __future__ import annotations

import time

import torch
from tokenizers import Tokenizer

from lens_core import HookedTransformer
from lens_core.experiments.views.detectors import DetectorRequest, head_detectors, repeated_random_tokens
from lens_core.loading import DEFAULT_MODEL_DIR
from training.train_default_model import encode_files, held_out_batches, stdlib_files

DETECTORS = ("previous_token", "duplicate_token", "induction")


def code_windows(n_rows: int = 16) -> torch.Tensor:
    _, _, held_out = stdlib_files()
    stream = encode_files(Tokenizer.from_file(str(DEFAULT_MODEL_DIR / "tokenizer.json")), held_out)
    return held_out_batches(stream, 128, n_rows)  # each row starts with BOS (id 0)


def best_per_layer(scores: dict[str, torch.Tensor]) -> list[str]:
    lines = []
    for layer in range(scores["induction"].shape[0]):
        cells = []
        for name in DETECTORS:
            head = int(scores[name][layer].argmax())
            cells.append(f"L{layer}H{head} {float(scores[name][layer, head]):.3f}")
        lines.append(f"| {layer} | " + " | ".join(cells) + " |")
    return lines


@torch.inference_mode()
def main() -> None:
    start = time.perf_counter()
    model = HookedTransformer.from_pretrained("default")  # the first load also imports transformers' code
    first = time.perf_counter() - start
    start = time.perf_counter()
    HookedTransformer.from_pretrained("default")
    print(f"from_pretrained('default'): {first * 1e3:.0f} ms the first time in this process, "
          f"{(time.perf_counter() - start) * 1e3:.0f} ms again (goal <= 2 s)\n")
    repeated = head_detectors(model, DetectorRequest(seq_len=50, batch=4, seed=0))
    windows = code_windows()
    per_window = [head_detectors(model, DetectorRequest(tokens=tuple(row.tolist()))) for row in windows]
    on_code = {name: torch.stack([getattr(r, name) for r in per_window]).mean(0) for name in DETECTORS}
    header = "| layer | previous-token | duplicate-token | induction |\n|---|---|---|---|"
    print("Repeated random tokens (BOS + r + r, |r| = 50, 4 sequences, seed 0), BOS excluded:")
    print(header)
    print("\n".join(best_per_layer({name: getattr(repeated, name) for name in DETECTORS})))
    print(f"\nHeld-out code ({len(windows)} windows of 128 tokens), BOS excluded:")
    print(header)
    print("\n".join(best_per_layer(on_code)))
    tokens = repeated_random_tokens(model, 50, batch=4, seed=1)
    loss = model(tokens, return_type="loss", loss_per_token=True)  # [batch, pos - 1]; index i predicts i + 1
    first, second = float(loss[:, :50].mean()), float(loss[:, 51:].mean())
    print(f"\nLoss on the first copy {first:.2f} nats, on the second copy {second:.2f} nats "
          f"(difference {first - second:.2f})")


if __name__ == "__main__":
    main()

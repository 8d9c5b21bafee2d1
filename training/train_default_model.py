"""Train the bundled default model: a small GPT-2 on the Python standard library.

Re-run (about 35 minutes on 2 shared CPU cores):

    .venv/bin/python training/train_default_model.py

Steps:
  1. Train a byte-level BPE tokenizer on the standard library's own `.py` files
     (directories named test, tests, idlelib, site-packages are left out; about 1 file
     in 20, chosen by a hash of its path, is held out for evaluation).
  2. Train a 3-layer GPT-2 (`transformers.GPT2LMHeadModel`, gelu_new, tied embeddings).
     Half of the rows are a random token sequence repeated to fill the row: this is what
     trains the induction circuit (the language-modelling objective alone does not, on this
     corpus, in a short run). The other half are windows of code.
  3. Every `--eval-every` steps print the held-out code loss and a circuit check
     (previous-token and induction scores per head, loss on the first vs second copy of a
     repeated random sequence). Checkpoints go to `--work-dir`; `--resume` continues one.
  4. Write config, weights and tokenizer to `--out` plus `training/run_stats.json`,
     which `training/write_model_card.py` turns into the model card and presets.

Every batch is a pure function of (seed, step), so a resumed run sees the same data.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import sysconfig
import time
import zlib
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

REPO = Path(__file__).resolve().parent.parent
EOT = "<|endoftext|>"
EXCLUDED_DIRS = ("test", "tests", "idlelib", "site-packages")


# ----------------------------------------------------------------------------- corpus

def stdlib_files() -> tuple[Path, list[Path], list[Path]]:
    """(stdlib root, train files, held-out files), sorted by relative path."""
    root = Path(sysconfig.get_paths()["stdlib"])
    train, held_out = [], []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if any(part in EXCLUDED_DIRS for part in rel.parts[:-1]):
            continue
        if not path.is_file():
            continue
        (held_out if zlib.crc32(rel.as_posix().encode()) % 20 == 0 else train).append(path)
    return root, train, held_out


def read_text(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


def train_tokenizer(files: list[Path], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOT],  # id 0: BOS, EOS and padding
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
        show_progress=False,
    )
    tok.train_from_iterator((read_text(p) for p in files), trainer=trainer)
    assert tok.token_to_id(EOT) == 0
    return tok


def encode_files(tok, files: list[Path]) -> np.ndarray:
    """All files as one token stream, each file followed by <|endoftext|>."""
    encodings = tok.encode_batch([read_text(p) for p in files])
    ids: list[int] = []
    for enc in encodings:
        ids.extend(enc.ids)
        ids.append(0)
    return np.asarray(ids, dtype=np.int32)


# ----------------------------------------------------------------------------- batches

def make_batch(stream: np.ndarray, args, step: int, vocab_size: int) -> torch.Tensor:
    """Rows start with BOS. A `repeat_frac` share of rows: a random sequence of length
    8..63 repeated until the row is full; the rest: a window of code."""
    rng = np.random.default_rng([args.seed, step])
    rows = np.zeros((args.batch_size, args.n_ctx), dtype=np.int64)
    n_repeat = int(round(args.batch_size * args.repeat_frac))
    for r in range(args.batch_size):
        if r < n_repeat:
            period = int(rng.integers(8, 64))
            seq = rng.integers(1, vocab_size, size=period)
            rows[r, 1:] = np.resize(seq, args.n_ctx - 1)
        else:
            start = int(rng.integers(0, len(stream) - args.n_ctx))
            rows[r, 1:] = stream[start:start + args.n_ctx - 1]
    rows = rows[rng.permutation(args.batch_size)]
    return torch.from_numpy(rows)


def held_out_batches(stream: np.ndarray, n_ctx: int, n_rows: int) -> torch.Tensor:
    """Evenly spaced windows of held-out code, each after BOS."""
    starts = np.linspace(0, len(stream) - n_ctx, n_rows).astype(np.int64)
    rows = np.zeros((n_rows, n_ctx), dtype=np.int64)
    for i, s in enumerate(starts):
        rows[i, 1:] = stream[s:s + n_ctx - 1]
    return torch.from_numpy(rows)


# ----------------------------------------------------------------------------- circuit check

@torch.no_grad()
def circuit_check(model, code_rows: torch.Tensor, vocab_size: int, seq_len: int = 50, n_seqs: int = 16,
                  seed: int = 1234) -> dict:
    """Previous-token and induction scores per head (BOS excluded), repeat losses.

    prev[l][h]: mean attention from position i to i-1 over held-out code, queries i >= 2.
    induction[l][h]: on BOS + r + r (r random, length seq_len), mean attention from each
    position of the second copy to the token after that token's first occurrence.
    """
    was_training = model.training
    model.eval()
    previous_impl = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        out = model(code_rows, output_attentions=True)
        prev = [a.diagonal(offset=-1, dim1=-2, dim2=-1)[..., 1:].mean(dim=(0, 2)).tolist()
                for a in out.attentions]  # a: (batch, head, query, key)

        g = torch.Generator().manual_seed(seed)
        r = torch.randint(1, vocab_size, (n_seqs, seq_len), generator=g)
        tokens = torch.cat([torch.zeros(n_seqs, 1, dtype=torch.long), r, r], dim=1)  # (n, 1 + 2L)
        out = model(tokens, output_attentions=True)
        induction = []
        for a in out.attentions:
            # query 1+L+k (second copy, token r[k]) -> key 2+k (after r[k]'s first occurrence)
            stripe = a.diagonal(offset=-(seq_len - 1), dim1=-2, dim2=-1)  # query index = key + L - 1
            induction.append(stripe[..., -seq_len:].mean(dim=(0, 2)).tolist())
        logprobs = out.logits[:, :-1].log_softmax(-1)
        nll = -logprobs.gather(-1, tokens[:, 1:, None])[..., 0]  # nll[:, j] predicts token j + 1
        first_half = nll[:, :seq_len].mean().item()  # tokens 1..L
        second_half = nll[:, seq_len + 1:].mean().item()  # tokens L+2..2L (copy 2, after its first token)
    finally:
        model.set_attn_implementation(previous_impl)
        model.train(was_training)
    return {"prev_token": prev, "induction": induction,
            "repeat_loss_first_half": first_half, "repeat_loss_second_half": second_half}


def summarize(check: dict) -> str:
    parts = []
    for name in ("prev_token", "induction"):
        per_layer = []
        for layer, scores in enumerate(check[name]):
            h = int(np.argmax(scores))
            per_layer.append(f"L{layer}H{h}={scores[h]:.2f}")
        parts.append(f"{name} " + " ".join(per_layer))
    parts.append(f"repeat loss {check['repeat_loss_first_half']:.2f}->{check['repeat_loss_second_half']:.2f}")
    return " | ".join(parts)


@torch.no_grad()
def held_out_loss(model, rows: torch.Tensor, chunk: int = 32) -> float:
    was_training = model.training
    model.eval()
    losses = [model(rows[i:i + chunk], labels=rows[i:i + chunk]).loss.item() for i in range(0, len(rows), chunk)]
    model.train(was_training)
    return float(np.mean(losses))


def write_special_tokens_map(out: Path) -> None:
    """transformers 5 no longer writes this file; older loaders and readers look for it."""
    special = {name: EOT for name in ("bos_token", "eos_token", "pad_token", "unk_token")}
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")


# ----------------------------------------------------------------------------- main

def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=REPO / "lens_core" / "default_model")
    p.add_argument("--work-dir", type=Path, default=REPO / "training" / "work")
    p.add_argument("--stats", type=Path, default=REPO / "training" / "run_stats.json")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--vocab-size", type=int, default=4096)
    p.add_argument("--n-ctx", type=int, default=128)
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--n-layer", type=int, default=3)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--repeat-frac", type=float, default=0.5)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--ckpt-every", type=int, default=250)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--resume", action="store_true", help="continue from --work-dir/checkpoint.pt")
    p.add_argument("--resume-from", type=Path, default=None, help="checkpoint to resume from (implies --resume)")
    p.add_argument("--restart-schedule", action="store_true",
                   help="on resume, run a fresh warm-up + cosine from the resumed step to --steps")
    args = p.parse_args(argv)

    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    torch.set_num_threads(args.threads)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    t_start = time.time()

    root, train_files, held_files = stdlib_files()
    print(f"stdlib {root}: {len(train_files)} train files, {len(held_files)} held-out files", flush=True)
    tok = train_tokenizer(train_files, args.vocab_size)
    vocab_size = tok.get_vocab_size()
    train_stream = encode_files(tok, train_files)
    held_stream = encode_files(tok, held_files)
    print(f"tokenizer vocab {vocab_size}; {len(train_stream):,} train tokens, {len(held_stream):,} held-out tokens "
          f"({time.time() - t_start:.0f}s)", flush=True)
    held_rows = held_out_batches(held_stream, args.n_ctx, 128)

    config = GPT2Config(
        vocab_size=vocab_size, n_positions=args.n_ctx, n_embd=args.d_model, n_layer=args.n_layer,
        n_head=args.n_head, n_inner=4 * args.d_model, activation_function="gelu_new",
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=True,
        bos_token_id=0, eos_token_id=0, pad_token_id=0,
    )
    model = GPT2LMHeadModel(config)
    n_params = sum(t.numel() for t in model.parameters())
    print(f"model: {n_params:,} parameters", flush=True)

    decay = [t for n, t in model.named_parameters() if t.dim() >= 2]
    no_decay = [t for n, t in model.named_parameters() if t.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95))

    schedule_start = 0

    def lr_at(step: int) -> float:  # linear warm-up, cosine decay to 10%
        step -= schedule_start
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        frac = (step - args.warmup) / max(1, args.steps - schedule_start - args.warmup)
        return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))

    ckpt_path = args.work_dir / "checkpoint.pt"
    resume_path = args.resume_from or ckpt_path
    start_step, history, elapsed_before, legs = 0, [], 0.0, []
    if (args.resume or args.resume_from) and resume_path.exists():
        ckpt = torch.load(resume_path, weights_only=True)  # tensors and numbers only: no pickle of objects
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["opt"])
        start_step = int(ckpt["step"])
        elapsed_before = float(ckpt["elapsed"])
        history = [h for h in json.loads((args.work_dir / "history.json").read_text()) if h["step"] <= start_step]
        if args.restart_schedule:
            schedule_start = start_step
        legs = ckpt.get("legs") or [{"from_step": 0, "to_step": start_step, "repeat_frac": args.repeat_frac,
                                     "note": "legs before this one not recorded"}]
        print(f"resumed at step {start_step}", flush=True)

    legs = [leg for leg in legs if leg["from_step"] < start_step]
    legs.append({"from_step": start_step, "to_step": args.steps, "repeat_frac": args.repeat_frac,
                 "lr": args.lr, "threads": args.threads, "schedule_restarted_at": schedule_start,
                 "command": " ".join(sys.argv[1:])})

    model.train()
    t_train = time.time()
    tokens_per_step = args.batch_size * args.n_ctx
    smooth = None
    bar = tqdm(range(start_step, args.steps), initial=start_step, total=args.steps, mininterval=20,
               file=sys.stdout, dynamic_ncols=False, ncols=100)
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        batch = make_batch(train_stream, args, step, vocab_size)
        loss = model(batch, labels=batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        smooth = loss.item() if smooth is None else 0.98 * smooth + 0.02 * loss.item()
        bar.set_postfix(loss=f"{smooth:.3f}", refresh=False)

        done = step + 1
        if done % args.eval_every == 0 or done == args.steps:
            check = circuit_check(model, held_rows[:32], vocab_size)
            code_loss = held_out_loss(model, held_rows)
            elapsed = elapsed_before + time.time() - t_train
            history.append({"step": done, "train_loss_smoothed": smooth, "held_out_code_loss": code_loss,
                            "elapsed_s": elapsed, **check})
            tqdm.write(f"step {done}: train {smooth:.3f} held-out code {code_loss:.3f} "
                       f"({(done - start_step) * tokens_per_step / (time.time() - t_train):,.0f} tok/s) | "
                       f"{summarize(check)}", file=sys.stdout)
            sys.stdout.flush()
        if done % args.ckpt_every == 0 or done == args.steps:
            legs[-1]["to_step"] = done
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": done, "legs": legs,
                        "elapsed": elapsed_before + time.time() - t_train}, ckpt_path)
            (args.work_dir / "history.json").write_text(json.dumps(history))
    bar.close()
    train_seconds = elapsed_before + time.time() - t_train

    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out, safe_serialization=True)
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOT, eos_token=EOT, pad_token=EOT,
                                     unk_token=EOT, model_max_length=args.n_ctx)
    hf_tok.save_pretrained(args.out)
    write_special_tokens_map(args.out)

    final = history[-1]
    stats = {
        "stdlib_root": str(root), "python": sys.version.split()[0],
        "excluded_dirs": list(EXCLUDED_DIRS),
        "train_files": [p.relative_to(root).as_posix() for p in train_files],
        "held_out_files": [p.relative_to(root).as_posix() for p in held_files],
        "train_tokens_in_corpus": int(len(train_stream)), "held_out_tokens": int(len(held_stream)),
        "vocab_size": vocab_size, "n_params": n_params, "args": {k: str(v) for k, v in vars(args).items()},
        "steps": args.steps, "tokens_seen": args.steps * tokens_per_step,
        "repeat_frac": sum(leg["repeat_frac"] * (leg["to_step"] - leg["from_step"]) for leg in legs) / args.steps,
        "legs": legs, "train_seconds": train_seconds,
        "final": final, "history": history,
    }
    args.stats.write_text(json.dumps(stats, indent=1))
    print(f"done: {args.steps} steps, {stats['tokens_seen']:,} tokens, {train_seconds / 60:.1f} min; "
          f"held-out code loss {final['held_out_code_loss']:.3f}; {summarize(final)}", flush=True)
    print(f"wrote {args.out} and {args.stats}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Train one TopK transcoder per MLP of the bundled model.

Re-run (legs; see lens_core/default_model/transcoders/README.md for the ones actually run):

    .venv/bin/python training/train_transcoders.py --steps N              # a first leg (stop it any time)
    .venv/bin/python training/train_transcoders.py --steps N --resume     # continue from the last checkpoint

Each transcoder reads ``blocks.{l}.ln2.hook_normalized`` (the MLP's input after its LayerNorm, in
the model as lens_core loads it: LayerNorm folded) and predicts ``blocks.{l}.hook_mlp_out``.

Why TopK (Gao et al. 2024): the number of active features per position is fixed by construction
(L0 = k), so there is no sparsity coefficient or threshold to tune, and a run on a slow shared CPU
cannot end with the wrong sparsity. JumpReLU needs a tuned L0 penalty and straight-through threshold
gradients: more runs than this budget allows.

- Decoder rows (one per feature, ``W_dec[f]``) are kept at unit norm after every step; the
  gradient component along each row is removed first, so Adam does not fight the projection.
- Dead features (no activation in the last ``--dead-tokens`` tokens) get the AuxK loss: the
  ``--aux-k`` dead features with the largest pre-activations reconstruct the main residual error,
  weighted ``--aux-coef``.
- Loss: squared error divided by the target's variance (an estimate of FVU), summed over layers.
- Data: windows of the training split only (``stdlib_files()`` of ``train_default_model``; the
  held-out files are used only for evaluation), BOS first, plus a ``--repeat-frac`` share of
  random token sequences repeated (as the model was trained on). Activations are streamed from the
  model in buffers of ``--buffer-rows`` rows, shuffled across rows, each used ``--buffer-reuse`` times
  (a new order each pass: the model's forward pass costs about as much as a training step); every buffer and every
  initialisation is a function of (seed, step), so resumed legs see the same data.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from tqdm import tqdm

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from lens_core.features.evaluate import evaluate_transcoders  # noqa: E402
from lens_core.features.transcoder import (Transcoder, TranscoderConfig, TranscoderSet, mlp_in_hook,  # noqa: E402
                                           mlp_out_hook, save_transcoders)


# ----------------------------------------------------------------------------- data

def token_streams(tokenizer_file: Path) -> tuple[np.ndarray, np.ndarray]:
    """(training stream, held-out stream), each file followed by BOS/EOS id 0."""
    from tokenizers import Tokenizer

    from training.train_default_model import encode_files, stdlib_files

    tok = Tokenizer.from_file(str(tokenizer_file))
    _, train, held_out = stdlib_files()
    return encode_files(tok, train), encode_files(tok, held_out)


def held_out_rows(stream: np.ndarray, n_ctx: int, n_rows: int) -> torch.Tensor:
    from training.train_default_model import held_out_batches

    return held_out_batches(stream, n_ctx, n_rows)


def buffer_rows(stream: np.ndarray, seed: int, index: int, n_rows: int, n_ctx: int, vocab: int,
                repeat_frac: float) -> torch.Tensor:
    """Token rows of buffer ``index``: BOS, then code from a random offset (or a repeated random sequence)."""
    rng = np.random.default_rng([seed, 1, index])
    rows = np.zeros((n_rows, n_ctx), dtype=np.int64)
    n_repeat = int(round(n_rows * repeat_frac))
    for r in range(n_rows):
        if r < n_repeat:
            period = int(rng.integers(8, 64))
            rows[r, 1:] = np.resize(rng.integers(1, vocab, size=period), n_ctx - 1)
        else:
            start = int(rng.integers(0, len(stream) - n_ctx))
            rows[r, 1:] = stream[start:start + n_ctx - 1]
    return torch.from_numpy(rows)


@torch.no_grad()
def activations(model, rows: torch.Tensor, layers: list[int], chunk: int = 32) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """{layer: (inputs [n, d_in], targets [n, d_out])} for every position of ``rows``."""
    names = [n for l in layers for n in (mlp_in_hook(l), mlp_out_hook(l))]
    xs = {l: [] for l in layers}
    ys = {l: [] for l in layers}
    for start in range(0, len(rows), chunk):
        _, cache = model.run_with_cache(rows[start:start + chunk], names_filter=names, return_type=None)
        for l in layers:
            xs[l].append(cache[mlp_in_hook(l)].reshape(-1, model.cfg.d_model))
            ys[l].append(cache[mlp_out_hook(l)].reshape(-1, model.cfg.d_model))
    return {l: (torch.cat(xs[l]), torch.cat(ys[l])) for l in layers}


# ----------------------------------------------------------------------------- model

def init_transcoders(model, args, first: dict) -> tuple[TranscoderSet, dict[int, float]]:
    """Unit-norm random decoder rows, encoder = their transpose scaled to unit pre-activation variance,
    b_dec = the target mean; also the target variance used to normalise the loss."""
    g = torch.Generator().manual_seed(args.seed)
    transcoders, variances = {}, {}
    for l in range(model.cfg.n_layers):
        d = model.cfg.d_model
        cfg = TranscoderConfig(d_in=d, d_sae=args.d_sae, d_out=d, layer=l, hook_in=mlp_in_hook(l),
                               hook_out=mlp_out_hook(l), activation="topk", k=args.k)
        tc = Transcoder(cfg)
        x, y = first[l]
        with torch.no_grad():
            w = torch.randn(args.d_sae, d, generator=g)
            tc.W_dec.copy_(w / w.norm(dim=1, keepdim=True))
            tc.W_enc.copy_(tc.W_dec.T / x.norm(dim=1).mean())
            tc.b_dec.copy_(y.mean(0))
        transcoders[l] = tc
        variances[l] = (y - y.mean(0)).pow(2).sum(1).mean().item()
    return TranscoderSet(transcoders, model_name=model.cfg.model_name, processing=model.processing), variances


def project_decoder_grad(tc: Transcoder) -> None:
    """Remove the gradient component along each (unit) decoder row."""
    if tc.W_dec.grad is not None:
        w = tc.W_dec.data
        tc.W_dec.grad -= (tc.W_dec.grad * w).sum(1, keepdim=True) * w


def normalize_decoder(tc: Transcoder) -> None:
    with torch.no_grad():
        tc.W_dec.data /= tc.W_dec.data.norm(dim=1, keepdim=True).clamp_min(1e-8)


def step_losses(tc: Transcoder, x: torch.Tensor, y: torch.Tensor, variance: float, dead: torch.Tensor,
                aux_k: int, aux_coef: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(main loss ~ FVU, aux loss, fired mask [d_sae]).

    Dense matrix products throughout: on a CPU with d_sae = 1024 they measured 5x faster than gathering
    only the k chosen encoder columns and decoder rows (PyTorch's CPU index backward is slow)."""
    pre = tc.pre_acts(x)
    acts = tc.activate(pre)
    recon = tc.decode(acts)
    main = (recon - y).pow(2).sum(1).mean() / variance
    aux = torch.zeros((), dtype=x.dtype)
    n_dead = int(dead.sum())
    if n_dead and aux_coef > 0:
        error = (y - recon).detach()
        dead_pre = pre.masked_fill(~dead, float("-inf"))
        values, indices = dead_pre.topk(min(aux_k, n_dead), dim=-1)
        aux_acts = torch.zeros_like(pre).scatter(-1, indices, values.relu())
        aux_recon = aux_acts @ tc.W_dec
        aux = aux_coef * (aux_recon - error).pow(2).sum(1).mean() / error.pow(2).sum(1).mean().clamp_min(1e-8)
    return main, aux, (acts > 0).any(0)


def lr_at(step: int, args) -> float:
    """Linear warm-up, flat, then linear decay to 10% over the last ``--decay-frac`` of the steps."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    decay_start = int(args.steps * (1 - args.decay_frac))
    if step < decay_start:
        return args.lr
    frac = (step - decay_start) / max(1, args.steps - decay_start)
    return args.lr * (1 - 0.9 * frac)


# ----------------------------------------------------------------------------- training

def train(model, stream: np.ndarray, args, eval_rows: Optional[torch.Tensor] = None, log=print) -> TranscoderSet:
    """Train to ``args.steps`` (or stop after ``args.stop_at``), checkpointing into ``args.work_dir``."""
    torch.manual_seed(args.seed)
    layers = list(range(model.cfg.n_layers))
    steps_per_pass = max(1, args.buffer_rows * model.cfg.n_ctx // args.batch_tokens)
    steps_per_buffer = steps_per_pass * args.buffer_reuse
    ckpt_path = Path(args.work_dir) / "checkpoint.pt"
    first_rows = buffer_rows(stream, args.seed, 0, args.buffer_rows, model.cfg.n_ctx, model.cfg.d_vocab, args.repeat_frac)
    tset, variances = init_transcoders(model, args, activations(model, first_rows, layers))
    params = [p for tc in tset for p in tc.parameters()]
    opt = torch.optim.Adam(params, lr=args.lr, betas=(0.9, 0.999))
    since_fired = {l: torch.zeros(args.d_sae, dtype=torch.long) for l in layers}
    step, history = 0, []
    if args.resume and ckpt_path.exists():
        state = torch.load(ckpt_path, weights_only=False)
        for l in layers:
            tset[l].load_state_dict(state["transcoders"][l])
            since_fired[l] = state["since_fired"][l]
        opt.load_state_dict(state["opt"])
        variances, step, history = state["variances"], state["step"], state["history"]
        log(f"resumed at step {step}")
    stop = min(args.steps, args.stop_at or args.steps)
    bar = tqdm(total=stop, initial=step, desc="transcoders", disable=args.quiet, mininterval=10)
    buf_index, buf = None, None
    smooth: dict[int, float] = {}
    t0 = time.time()
    while step < stop:
        if step // steps_per_buffer != buf_index:
            buf_index = step // steps_per_buffer
            rows = buffer_rows(stream, args.seed, buf_index, args.buffer_rows, model.cfg.n_ctx, model.cfg.d_vocab,
                               args.repeat_frac)
            acts = activations(model, rows, layers)
            gen = torch.Generator().manual_seed(args.seed * 1_000_003 + buf_index)
            order = torch.cat([torch.randperm(len(rows) * model.cfg.n_ctx, generator=gen)[:steps_per_pass * args.batch_tokens]
                               for _ in range(args.buffer_reuse)])
            buf = {l: (x[order], y[order]) for l, (x, y) in acts.items()}
        lo = (step % steps_per_buffer) * args.batch_tokens
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args)
        opt.zero_grad(set_to_none=True)
        total = torch.zeros(())
        for l in layers:
            x, y = buf[l][0][lo:lo + args.batch_tokens], buf[l][1][lo:lo + args.batch_tokens]
            dead = since_fired[l] >= args.dead_tokens
            main, aux, fired = step_losses(tset[l], x, y, variances[l], dead, args.aux_k, args.aux_coef)
            total = total + main + aux
            since_fired[l] += len(x)
            since_fired[l][fired] = 0
            smooth[l] = main.item() if l not in smooth else 0.98 * smooth[l] + 0.02 * main.item()
        total.backward()
        for tc in tset:
            project_decoder_grad(tc)
        opt.step()
        for tc in tset:
            normalize_decoder(tc)
        step += 1
        bar.update(1)
        if step % args.log_every == 0 or step == stop:
            dead_frac = {l: (since_fired[l] >= args.dead_tokens).float().mean().item() for l in layers}
            log(f"step {step} lr {lr_at(step - 1, args):.2e} fvu~ " + " ".join(f"L{l}={smooth[l]:.3f}" for l in layers)
                + " dead " + " ".join(f"{dead_frac[l]:.3f}" for l in layers) + f" ({time.time() - t0:.0f}s)")
        if eval_rows is not None and (step % args.eval_every == 0 or step == stop):
            result = evaluate_transcoders(model, tset, eval_rows)
            history.append({"step": step, **result})
            log(f"eval step {step}: " + json.dumps({l: {k: round(v, 4) for k, v in r.items()} for l, r in result["layers"].items()})
                + f" loss {result['clean_loss']:.3f} -> spliced {result['spliced_loss']:.3f} (+{result['loss_increase']:.3f})")
        if step % args.ckpt_every == 0 or step == stop:
            ckpt_path.parent.mkdir(parents=True, exist_ok=True)
            state = {"step": step, "transcoders": {l: tset[l].state_dict() for l in layers}, "opt": opt.state_dict(),
                     "since_fired": since_fired, "variances": variances, "history": history, "args": vars(args)}
            torch.save(state, str(ckpt_path) + ".tmp")
            Path(str(ckpt_path) + ".tmp").replace(ckpt_path)
    bar.close()
    tset.history = history
    return tset


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="default")
    p.add_argument("--out", type=Path, default=REPO / "lens_core" / "default_model" / "transcoders")
    p.add_argument("--work-dir", type=Path, default=REPO / "train_runs" / "transcoders")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--d-sae", type=int, default=1024)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--stop-at", type=int, default=None, help="end this leg at this step (the schedule still uses --steps)")
    p.add_argument("--batch-tokens", type=int, default=4096)
    p.add_argument("--buffer-rows", type=int, default=256)
    p.add_argument("--buffer-reuse", type=int, default=1, help="passes over each activation buffer (new order each)")
    p.add_argument("--repeat-frac", type=float, default=0.1)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--decay-frac", type=float, default=0.3)
    p.add_argument("--dead-tokens", type=int, default=200_000)
    p.add_argument("--aux-k", type=int, default=64)
    p.add_argument("--aux-coef", type=float, default=1 / 32)
    p.add_argument("--eval-rows", type=int, default=64)
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--ckpt-every", type=int, default=100)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--quiet", action="store_true")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    from lens_core import HookedTransformer
    from lens_core.loading import resolve_source

    model = HookedTransformer.from_pretrained(args.model)
    model.requires_grad_(False)
    train_stream, held_stream = token_streams(resolve_source(args.model) / "tokenizer.json")
    print(f"training stream {len(train_stream):,} tokens, held-out {len(held_stream):,}", flush=True)
    eval_rows = held_out_rows(held_stream, model.cfg.n_ctx, args.eval_rows)
    tset = train(model, train_stream, args, eval_rows=eval_rows, log=lambda s: print(s, flush=True))
    if tset.history and tset.history[-1]["step"] == args.steps:
        save_transcoders(tset, args.out, extra={"training": {k: (str(v) if isinstance(v, Path) else v)
                                                             for k, v in vars(args).items()}})
        (Path(args.work_dir) / "history.json").write_text(json.dumps(tset.history, indent=1))
        print(f"wrote {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

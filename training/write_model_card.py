"""Write `presets.json` and the model card `README.md` for the bundled default model.

Run after `training/train_default_model.py`:

    .venv/bin/python training/write_model_card.py

Reads the saved model and tokenizer (plain `transformers`, offline) and
`training/run_stats.json`; measures every preset's logit difference (answer - wrong answer at
the last position, BOS prepended) and its rank, and refuses to write a preset the model gets wrong
(the distractor preferred, or the answer not the model's top prediction).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from train_default_model import EOT, REPO, write_special_tokens_map  # noqa: E402

MAX_PROMPT_TOKENS = 40
MIN_LOGIT_DIFF = 0.5  # a preset must show the behaviour clearly, not by a hair
MAX_ANSWER_RANK = 0  # ... and the model must predict the answer (a preset at P ~ 0 shows nothing on the pages)


def induction_prompt(tokenizer, seed: int = 7, length: int = 10, shown_again: int = 5) -> tuple[str, str, str]:
    """Random whole-word tokens repeated; the answer continues the repeat.

    Words are drawn from the vocabulary (a leading space, letters only, 3+ letters) so the
    prompt reads as random words and re-tokenizes to exactly the drawn tokens."""
    vocab = tokenizer.get_vocab()
    words = sorted(t for t in vocab if t.startswith("Ġ") and t[1:].isalpha() and t[1:].islower() and len(t) >= 4)
    rng = np.random.default_rng(seed)
    picked = [words[i][1:] for i in rng.choice(len(words), size=length, replace=False)]
    prompt = " " + " ".join(picked) + " " + " ".join(picked[:shown_again])
    answer = " " + picked[shown_again]
    wrong = " " + picked[shown_again + 2]
    return prompt, answer, wrong


def candidate_presets(tokenizer) -> list[dict]:
    """The induction preset (drawn from the tokenizer's words) and the fixed code prompts of preset_candidates.json."""
    prompt, answer, wrong = induction_prompt(tokenizer)
    induction = {"name": "Induction: a random word sequence, repeated", "prompt": prompt, "answer": answer,
                 "wrong_answer": wrong, "kind": "induction", "page": "all"}
    fixed = json.loads((Path(__file__).with_name("preset_candidates.json")).read_text(encoding="utf-8"))
    return [induction, *fixed]


def look_at(kind: str, final: dict, cand: dict | None = None, m: dict | None = None) -> str:
    def best(name: str, layer: int) -> str:
        scores = final[name][layer]
        h = int(np.argmax(scores))
        return f"L{layer}H{h} ({name.replace('_', '-')} score {scores[h]:.2f})"

    n_layers = len(final["induction"])
    ind_layer = int(np.argmax([max(s) for s in final["induction"]]))
    prev_layer = int(np.argmax([max(s) for s in final["prev_token"][:max(1, ind_layer)]]))
    ind, prev = best("induction", ind_layer), best("prev_token", prev_layer)
    if kind == "induction":
        return (f"Attention of the induction head {ind} from the last token: it attends to the token after "
                f"the earlier copy of the current word; the previous-token head {prev} supplies the key.")
    if kind == "repeated_name":
        return (f"Which heads write the answer's logit: the induction head {ind} copies a name seen earlier "
                f"in the prompt; compare with the MLPs of layers 0..{n_layers - 1}.")
    return (f"The model's top choice is {cand['answer']!r} (P {m['answer_prob']:.2f}, against {m['wrong_prob']:.3f} "
            f"for {cand['wrong_answer']!r}): {cand['hint']}")


@torch.no_grad()
def measure(model, tokenizer, preset: dict) -> dict:
    ids = tokenizer(preset["prompt"], add_special_tokens=False).input_ids
    tokens = torch.tensor([[tokenizer.bos_token_id] + ids])
    answer = tokenizer(preset["answer"], add_special_tokens=False).input_ids
    wrong = tokenizer(preset["wrong_answer"], add_special_tokens=False).input_ids
    if len(answer) != 1 or len(wrong) != 1:
        raise ValueError(f"{preset['name']}: answer {answer} / wrong {wrong} must be single tokens")
    logits = model(tokens).logits[0, -1]
    top = int(logits.argmax())
    probs = logits.softmax(-1)
    return {"n_tokens": tokens.shape[1], "logit_diff": float(logits[answer[0]] - logits[wrong[0]]),
            "answer_rank": int((logits > logits[answer[0]]).sum()), "top_token": tokenizer.decode([top]),
            "answer_prob": float(probs[answer[0]]), "wrong_prob": float(probs[wrong[0]])}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-dir", type=Path, default=REPO / "lens_core" / "default_model")
    p.add_argument("--stats", type=Path, default=REPO / "training" / "run_stats.json")
    args = p.parse_args(argv)

    from transformers import AutoModelForCausalLM, AutoTokenizer

    stats = json.loads(args.stats.read_text())
    final = stats["final"]
    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    model = AutoModelForCausalLM.from_pretrained(args.model_dir).eval()
    write_special_tokens_map(args.model_dir)

    presets, rows, rejected = [], [], []
    for cand in candidate_presets(tokenizer):
        m = measure(model, tokenizer, cand)
        print(f"{cand['name']}: logit diff {m['logit_diff']:+.2f}, answer rank {m['answer_rank']}, "
              f"top {m['top_token']!r}, {m['n_tokens']} tokens")
        assert m["n_tokens"] <= MAX_PROMPT_TOKENS + 1, cand["name"]
        if m["logit_diff"] < MIN_LOGIT_DIFF or m["answer_rank"] > MAX_ANSWER_RANK:
            rejected.append((cand, m))
            continue
        presets.append({"name": cand["name"], "prompt": cand["prompt"], "answer": cand["answer"],
                        "wrong_answer": cand["wrong_answer"], "look_at": look_at(cand["kind"], final, cand, m),
                        "page": cand["page"]})
        rows.append((cand, m))
    (args.model_dir / "presets.json").write_text(json.dumps(presets, indent=2) + "\n")
    (args.model_dir / "README.md").write_text(model_card(stats, model, args.model_dir, rows, rejected))
    print(f"wrote {len(presets)} presets ({len(rejected)} rejected) and the model card to {args.model_dir}")
    return 0


def model_card(stats: dict, model, model_dir: Path, rows, rejected) -> str:
    cfg = model.config
    final = stats["final"]
    run_args = stats["args"]
    size = sum(f.stat().st_size for f in model_dir.iterdir() if f.is_file() and f.name != "README.md")
    pct = round(100 * stats["repeat_frac"])

    def score_table() -> str:
        lines = ["| layer | best previous-token head | best induction head | all heads, previous-token | "
                 "all heads, induction |", "|---|---|---|---|---|"]
        for layer, (prev, ind) in enumerate(zip(final["prev_token"], final["induction"])):
            hp, hi = int(np.argmax(prev)), int(np.argmax(ind))
            lines.append(f"| {layer} | L{layer}H{hp}: {prev[hp]:.3f} | L{layer}H{hi}: {ind[hi]:.3f} | "
                         f"{', '.join(f'{s:.2f}' for s in prev)} | {', '.join(f'{s:.2f}' for s in ind)} |")
        return "\n".join(lines)

    def preset_table() -> str:
        lines = ["| preset | answer | wrong answer | logit diff (answer - wrong) | answer rank | page |",
                 "|---|---|---|---|---|---|"]
        for cand, m in rows:
            lines.append(f"| {cand['name']} | `{cand['answer']!r}` | `{cand['wrong_answer']!r}` | "
                         f"{m['logit_diff']:+.2f} | {m['answer_rank']} | {cand['page']} |")
        return "\n".join(lines)

    history = "\n".join(
        f"| {h['step']} | {h['train_loss_smoothed']:.3f} | {h['held_out_code_loss']:.3f} | "
        f"{max(max(s) for s in h['prev_token']):.2f} | {max(max(s) for s in h['induction']):.2f} | "
        f"{h['repeat_loss_first_half']:.2f} / {h['repeat_loss_second_half']:.2f} |"
        for h in stats["history"])
    default_cmd = (f"`.venv/bin/python training/train_default_model.py --steps {stats['steps']}` then "
                   "`.venv/bin/python training/write_model_card.py`")
    legs = stats.get("legs") or []
    if len(legs) > 1:
        legs_text = ("This model was trained in legs, each resuming the previous checkpoint (every batch is a "
                     "function of seed and step, so the data is the same whatever the legs):\n\n" + "\n".join(
                         f"- steps {leg['from_step']} to {leg['to_step']}: repeat share {leg['repeat_frac']:.0%}, "
                         f"{leg.get('threads', '?')} thread(s): `train_default_model.py {leg.get('command', '')}`"
                         for leg in legs)
                     + f"\n\nTo reproduce exactly, run the legs in order (stopping the first at its last step), "
                       f"then `.venv/bin/python training/write_model_card.py`.")
    else:
        legs_text = f"Re-run: {default_cmd}."
    rejected_text = ("None." if not rejected else "; ".join(
        f"\"{c['name']}\" (logit diff {m['logit_diff']:+.2f}, answer rank {m['answer_rank']})" for c, m in rejected))

    return f"""# Circuit Explorer default model (`lens_core/default_model`)

A small GPT-2-architecture language model of Python code, bundled so that the app opens on a
real model with no network, and so that tests have trained weights with real circuits.

**Its induction behaviour is trained on purpose, not emergent.** {pct}% of the training rows
are a random token sequence (length 8 to 63, uniform over the vocabulary) repeated until the
row is full; the other {100 - pct}% are windows of Python code. On this small corpus the
language-modelling objective alone did not produce an induction head in a short run (see
`/work/shared/notes/default-model-prototypes.md` in the project's planning notes), so the
circuit was planted through the data. Its previous-token and induction heads are real
mechanisms the model uses, but do not read them as what code alone teaches a model this size.

## Architecture
`transformers.GPT2LMHeadModel` (`model_type` "gpt2"): {cfg.n_layer} layers, d_model {cfg.n_embd},
{cfg.n_head} heads (d_head {cfg.n_embd // cfg.n_head}), MLP width {cfg.n_inner}, activation `gelu_new`,
learned positions, context {cfg.n_positions} tokens, vocabulary {cfg.vocab_size}, tied input/output
embeddings, no dropout. {stats['n_params']:,} parameters, float32; {size / 1e6:.1f} MB on disk
(all files here).

## Tokenizer
Byte-level BPE trained with `tokenizers` on the training files below (vocabulary
{stats['vocab_size']}, no prefix space added). One special token, `{EOT}` (id 0), serves as
BOS, EOS, padding and unknown. The tokenizer does **not** add BOS itself: prepend id 0 (as
`lens_core`'s `to_tokens` does by default and as every measurement here does). Load with
`AutoTokenizer.from_pretrained(this_dir)`; works offline.

## Training data
The `.py` files of the Python {stats['python']} standard library
(`sysconfig.get_paths()["stdlib"]`), leaving out every file under a directory named
{', '.join(f'`{d}`' for d in stats['excluded_dirs'])} (so also `lib2to3/tests`, `unittest/test`, ...).
Files are sorted by path; a file is held out when `crc32(relative path) % 20 == 0`:
{len(stats['train_files'])} training files ({stats['train_tokens_in_corpus']:,} tokens) and
{len(stats['held_out_files'])} held-out files ({stats['held_out_tokens']:,} tokens). Each file is
followed by `{EOT}`. A code row is `{EOT}` then {cfg.n_positions - 1} tokens from a random
offset of the training stream.

Held-out files: {', '.join(f'`{f}`' for f in stats['held_out_files'])}.

## Training
AdamW (betas 0.9/0.95, weight decay 0.05 on matrices), linear warm-up then cosine decay to 10%
of the peak learning rate, gradient clipping 1.0, batch {run_args['batch_size']} x {cfg.n_positions} tokens,
seed {run_args['seed']}, CPU (peak learning rate, warm-up and threads per leg below; last leg: peak
{run_args['lr']}, warm-up {run_args['warmup']}, {run_args['threads']} thread(s)). {stats['steps']:,} steps,
{stats['tokens_seen']:,} tokens seen (half of them planted repeats), {stats['train_seconds'] / 60:.1f} minutes
of training wall time on 2 CPU cores shared with other work.

{legs_text}
Logs of the legs: `training/logs/leg1.log` .. `leg4.log` (the last also `training/last_run.log`); every evaluation is in the
history table below and in `training/run_stats.json`.

## Results
Held-out code loss (128 windows of {cfg.n_positions} tokens from the held-out files, BOS first):
**{final['held_out_code_loss']:.3f} nats/token** (uniform: {np.log(cfg.vocab_size):.2f}).

Circuit scores at the end of training, measured in the training script with
`transformers` (`output_attentions=True`, eager attention):
- previous-token score: mean attention from position i to i-1 on held-out code, queries
  from position 2 on (BOS excluded);
- induction score: on `BOS + r + r` with r 50 uniform random tokens (16 sequences), mean
  attention from each position of the second copy to the token after that token's first
  occurrence;
- repeat loss: mean loss predicting the first copy vs the second copy (its first token
  excluded): **{final['repeat_loss_first_half']:.2f} vs {final['repeat_loss_second_half']:.2f} nats**
  (difference {final['repeat_loss_first_half'] - final['repeat_loss_second_half']:.2f}).

{score_table()}

Heads are named `L<layer>H<head>`, counting from 0. `lens_core.experiments` re-measures these
with its own detectors.

Training history (held-out code loss; best scores over all heads; repeat loss first / second copy):

| step | train loss (smoothed) | held-out code loss | best prev-token | best induction | repeat loss |
|---|---|---|---|---|---|
{history}

## Presets (`presets.json`)
Prompts the app pages can offer. Each is a JSON object `{{"name", "prompt", "answer",
"wrong_answer", "look_at", "page"}}` (`page`: the slug a page passes to `ui.widgets.preset_picker`, or "all"); `answer` and `wrong_answer` are single tokens (with the
leading space the tokenizer needs), the prompt is at most {MAX_PROMPT_TOKENS} tokens, BOS is
prepended when measuring. Logit difference = logit(answer) - logit(wrong answer) at the last
position, computed with plain `transformers`; answer rank 0 means it is the top prediction.

{preset_table()}

Candidates written but rejected (logit difference below {MIN_LOGIT_DIFF}, or the answer not the model's top
prediction): {rejected_text}

## Limitations
The induction phase change started late in the second leg, when the learning rate had
decayed (induction score 0.08 at step 1750, 0.25 at step 2200), and completed only after the
third leg raised the learning rate again. The classic "next parameter to document" docstring task
is mostly beyond this model (the answer ranks 5 to 826 in the rejected candidates); the docstring
presets shipped are simpler ones it gets right.
A 1M-parameter model trained for minutes: it writes plausible-looking Python locally and
nothing more. It has seen only the standard library. The induction circuit comes from
planted random repeats (above).
"""


if __name__ == "__main__":
    sys.exit(main())

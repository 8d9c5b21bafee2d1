"""The ARENA induction-heads chapter ([1.2] Intro to Mechanistic Interpretability), end to end with
lens_core, written as the chapter's solutions are.

    .venv/bin/python -m examples.arena_induction            # the chapter's model
    .venv/bin/python -m examples.arena_induction --bundled  # the bundled model instead

The model is the chapter's: a two-layer attention-only transformer (``ARENA_CFG``: shortformer positions,
no norms, ``use_attn_result=True``). Its checkpoint (``attn_only_2L_half.pth``; path in
``ARENA_WEIGHTS`` or next to this file) is loaded when present with ``model.load_state_dict`` (a
TransformerLens state dict; read with ``torch.load(weights_only=True)``, nothing unpickled); without it
the model keeps TransformerLens's random initialisation (seed 398) and the script says so. Its tokenizer
(GPT-NeoX-20B's) cannot be downloaded here: the bundled model's tokenizer stands in, and the script
says that too. With random weights the numbers are noise but every step runs and every identity the
chapter checks (patterns from q and k, logit attribution summing to the logits, q and k decomposed
into their inputs) holds.

Sections: (1) the cache and a hand-computed attention pattern; (2) attention detectors on repeated
random tokens and lens_core.head_detector; (3) induction scores with hooks (call-scoped and
model-wide); (4) direct logit attribution (the chapter's ``logit_attribution`` for attention-only
models, and the full residual decomposition); (5) zero- and mean-ablation of every head; (6) QK and
OV circuits with FactoredMatrix, the OV circuit's top-1 accuracy, and q/k decomposed by input; (7)
composition scores. ``main`` returns the numbers the tests check. On the bundled model (3 layers,
MLPs) a previous-token head in layer 0 (L0H0) and induction heads in layer 1 are found.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import torch

from lens_core import HookedTransformer, HookedTransformerConfig, utils
from lens_core.factored_matrix import FactoredMatrix
from lens_core.head_detector import detect_head


ARENA_CFG = dict(d_model=768, d_head=64, n_heads=12, n_layers=2, n_ctx=2048, d_vocab=50278, attention_dir="causal",
                 attn_only=True, tokenizer_name="EleutherAI/gpt-neox-20b", seed=398, use_attn_result=True,
                 normalization_type=None, positional_embedding_type="shortformer")


def arena_model(weights_path: str | None = None, say=print, **overrides) -> HookedTransformer:
    """The chapter's model: its checkpoint when there is one, else TransformerLens's random initialisation.
    ``overrides`` change the config (the tests use a narrower vocabulary to stay fast)."""
    from transformers import AutoTokenizer

    from lens_core.loading import DEFAULT_MODEL_DIR

    model = HookedTransformer(HookedTransformerConfig(**{**ARENA_CFG, **overrides}),
                              tokenizer=AutoTokenizer.from_pretrained(DEFAULT_MODEL_DIR))
    say("Tokenizer: the bundled model's (GPT-NeoX-20B's cannot be downloaded here).")
    path = Path(weights_path or os.environ.get("ARENA_WEIGHTS") or Path(__file__).with_name("attn_only_2L_half.pth"))
    if path.is_file():
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        say(f"Weights: {path}")
    else:
        say(f"Weights: {path} not found, so random weights (TransformerLens's initialisation, seed {model.cfg.seed}).")
    return model


def generate_repeated_tokens(model, seq_len: int, batch: int = 1, seed: int = 0) -> torch.Tensor:
    """BOS followed by ``seq_len`` random tokens, repeated once: [batch, 1 + 2 * seq_len]."""
    gen = torch.Generator().manual_seed(seed)
    half = torch.randint(1, model.cfg.d_vocab, (batch, seq_len), generator=gen)
    bos = torch.full((batch, 1), model.tokenizer.bos_token_id)
    return torch.cat([bos, half, half], dim=1)


def log_probs_of_next(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log p(token[i + 1]) at every position i: [batch, pos - 1]."""
    return logits.log_softmax(-1)[:, :-1].gather(-1, tokens[:, 1:, None])[..., 0]


# ---- (2) detectors, ARENA style: mean attention on the expected key, per head -----------------------
def _mean_on(pattern: torch.Tensor, offset: int) -> torch.Tensor:
    """Mean attention each head puts ``offset`` positions back: pattern [head, q, k] -> [head]."""
    return pattern.diagonal(offset=-offset, dim1=-2, dim2=-1).mean(-1)


def attention_detectors(cache, seq_len: int, threshold: float = 0.4) -> dict[str, list[str]]:
    found = {"current": [], "previous": [], "first": [], "induction": []}
    for layer in range(cache.model.cfg.n_layers):
        pattern = cache["pattern", layer][0]  # [head, q, k] of the first sequence
        scores = {"current": _mean_on(pattern, 0), "previous": _mean_on(pattern, 1), "first": pattern[:, :, 0].mean(-1),
                  "induction": _mean_on(pattern, seq_len - 1)}
        for kind, per_head in scores.items():
            found[kind] += [f"L{layer}H{h}" for h in range(len(per_head)) if per_head[h] > threshold]
    return found


def main(model: HookedTransformer | None = None, seq_len: int = 50, batch: int = 4, verbose: bool = True) -> dict:
    say = print if verbose else (lambda *a, **k: None)
    model = model or arena_model(say=say)
    cfg = model.cfg
    out: dict = {}

    # (1) run_with_cache, and the attention pattern recomputed from cached queries and keys
    text = "def add(a, b):\n    return a + b\n\ndef add(a, b):\n    return a + b\n"
    tokens = model.to_tokens(text)
    logits, cache = model.run_with_cache(tokens, remove_batch_dim=True)
    q, k = cache["q", 0], cache["k", 0]  # [pos, head, d_head]
    scores = torch.einsum("qhd,khd->hqk", q, k) / cfg.d_head**0.5
    causal = torch.triu(torch.ones(len(tokens[0]), len(tokens[0]), dtype=torch.bool), diagonal=1)
    manual = scores.masked_fill(causal, float("-inf")).softmax(-1)
    out["pattern_error"] = (manual - cache["pattern", 0]).abs().max().item()
    say(f"(1) {len(cache)} cached activations; pattern recomputed from q, k: max |error| {out['pattern_error']:.1e}")

    # (2) repeated random tokens: loss drops on the second copy; detectors
    rep_tokens = generate_repeated_tokens(model, seq_len, batch)
    rep_logits, rep_cache = model.run_with_cache(rep_tokens)
    log_probs = log_probs_of_next(rep_logits, rep_tokens)
    out["loss_first_half"] = -log_probs[:, :seq_len].mean().item()
    out["loss_second_half"] = -log_probs[:, seq_len:].mean().item()
    say(f"(2) loss on the first copy {out['loss_first_half']:.2f}, second copy {out['loss_second_half']:.2f} nats")
    out["detectors"] = attention_detectors(rep_cache, seq_len)
    say(f"    heads over 0.4: {out['detectors']}")
    out["detect_head_induction"] = detect_head(model, text, "induction_head", exclude_bos=True)
    out["detect_head_previous"] = detect_head(model, text, "previous_token_head", exclude_bos=True)
    say(f"    detect_head on repeated code: best induction head {_best(out['detect_head_induction'])}, "
        f"best previous-token head {_best(out['detect_head_previous'])}")

    # (3) induction scores with a hook on every attention pattern (call-scoped, then model-wide)
    induction_score = torch.zeros(cfg.n_layers, cfg.n_heads)

    def induction_score_hook(pattern: torch.Tensor, hook) -> None:
        stripe = pattern.diagonal(offset=1 - seq_len, dim1=-2, dim2=-1)  # [batch, head, seq_len + 1]
        induction_score[hook.layer()] = stripe.mean((0, -1))

    pattern_filter = lambda name: name.endswith("pattern")  # noqa: E731
    model.run_with_hooks(rep_tokens, return_type=None, fwd_hooks=[(pattern_filter, induction_score_hook)])
    out["induction_score"] = induction_score.clone()
    say(f"(3) induction scores by hook: best {_best(induction_score)}; layer 1: "
        + ", ".join(f"{v:.2f}" for v in induction_score[1].tolist()))
    model.add_hook(pattern_filter, induction_score_hook)  # a notebook's model-wide hook...
    induction_score.zero_()
    model(rep_tokens, return_type=None)
    model.reset_hooks()  # ...until reset
    out["model_wide_same"] = torch.allclose(induction_score, out["induction_score"])

    # (4) direct logit attribution of the correct next token, per component, on the second copy
    stack, labels = rep_cache.get_full_resid_decomposition(expand_neurons=False, return_labels=True)  # [comp, b, p, d]
    second = slice(seq_len + 1, 2 * seq_len)  # predicting tokens of the second copy
    attrs = rep_cache.logit_attrs(stack[:, :, second], rep_tokens[:, second.start + 1 : second.stop + 1],
                                  pos_slice=second)  # [comp, batch, pos]
    mean_attr = attrs.mean((1, 2))
    top = mean_attr.topk(3).indices.tolist()
    out["dla_top"] = [labels[i] for i in top]
    say(f"(4) direct logit attribution, second copy: top components {out['dla_top']}")

    # (5) zero-ablate each head, loss on the second copy
    def head_zero_ablation_hook(z: torch.Tensor, hook, head: int) -> None:
        z[:, :, head] = 0.0

    base_loss = -log_probs[:, seq_len:].mean()
    ablation = torch.zeros(cfg.n_layers, cfg.n_heads)
    for layer in range(cfg.n_layers):
        for head in range(cfg.n_heads):
            ablated = model.run_with_hooks(rep_tokens, fwd_hooks=[(utils.get_act_name("z", layer),
                                                                   functools.partial(head_zero_ablation_hook, head=head))])
            ablation[layer, head] = -log_probs_of_next(ablated, rep_tokens)[:, seq_len:].mean() - base_loss
    out["ablation"] = ablation
    say(f"(5) loss increase when ablating each head: largest {_best(ablation)} (+{ablation.max():.2f} nats)")

    # (6) QK and OV circuits with FactoredMatrix
    induction_head = int(out["induction_score"][1].argmax())
    full_ov = model.W_E @ FactoredMatrix(model.W_V[1, induction_head], model.W_O[1, induction_head]) @ model.W_U
    out["full_ov_shape"] = tuple(full_ov.shape)
    ids = torch.randperm(cfg.d_vocab, generator=torch.Generator().manual_seed(0))[:1000]
    rows = full_ov[ids].AB[:, :]  # [1000, d_vocab] without forming the whole d_vocab^2 matrix
    out["ov_copying_top1"] = (rows.argmax(-1) == ids).float().mean().item()
    say(f"(6) full OV circuit of L1H{induction_head}: {full_ov} ; top-1 copying accuracy {out['ov_copying_top1']:.2f}")
    prev_head = int(_mean_on(rep_cache["pattern", 0][0], 1).argmax())
    pos_qk = model.W_pos @ model.QK[0, prev_head] @ model.W_pos.T  # [n_ctx, n_ctx] positional scores
    n = 64
    causal = torch.triu(torch.ones(n, n, dtype=torch.bool), diagonal=1)
    pos_pattern = (pos_qk.AB[:n, :n] / cfg.d_head**0.5).masked_fill(causal, float("-inf")).softmax(-1)
    out["pos_prev_fraction"] = (pos_pattern[1:].argmax(-1) == torch.arange(n - 1)).float().mean().item()
    say(f"    positional QK of L0H{prev_head}: attends to the previous position at "
        f"{out['pos_prev_fraction']:.0%} of positions; top singular values {[round(s, 2) for s in pos_qk.S[:3].tolist()]}")

    # (7) composition scores: how much layer-1 heads read what L0's heads write
    def comp_score(W_A: FactoredMatrix, W_B: FactoredMatrix) -> torch.Tensor:
        return (W_A @ W_B).norm() / (W_A.norm() * W_B.norm())

    ov0 = model.OV[0]  # [head, d_model, d_model]
    qk1 = model.QK[1]
    k_comp = torch.stack([comp_score(ov0[h].unsqueeze(0), qk1.T) for h in range(cfg.n_heads)])  # [head0, head1]
    q_comp = torch.stack([comp_score(ov0[h].unsqueeze(0), qk1) for h in range(cfg.n_heads)])
    gen = torch.Generator().manual_seed(0)
    baseline = torch.stack([comp_score(FactoredMatrix(torch.randn(cfg.d_model, cfg.d_head, generator=gen), torch.randn(cfg.d_head, cfg.d_model, generator=gen)),
                                       FactoredMatrix(torch.randn(cfg.d_model, cfg.d_head, generator=gen), torch.randn(cfg.d_head, cfg.d_model, generator=gen)))
                            for _ in range(50)]).mean()
    out.update(k_comp=k_comp, q_comp=q_comp, comp_baseline=baseline.item())
    say(f"(7) K-composition L0H{prev_head} -> L1H{induction_head}: {k_comp[prev_head, induction_head]:.3f} "
        f"(Q-composition {q_comp[prev_head, induction_head]:.3f}; random baseline {baseline:.3f})")
    out["prev_head"], out["induction_head"] = prev_head, induction_head
    if cfg.attn_only:  # the chapter's steps written for its attention-only model
        attn_only_steps(model, tokens, cache, rep_tokens, rep_cache, out, say, seq_len)
    return out


# ---- the chapter's attention-only steps ---------------------------------------------------------
def logit_attribution(embed, l1_results, l2_results, W_U, tokens) -> torch.Tensor:
    """[seq - 1, 1 + 2 n_heads]: the direct path, then each head of layer 0 and layer 1, on the correct next token."""
    W_U_correct_tokens = W_U[:, tokens[1:]]  # [d_model, seq - 1]
    direct = torch.einsum("ds,sd->s", W_U_correct_tokens, embed[:-1])[:, None]
    l1 = torch.einsum("ds,shd->sh", W_U_correct_tokens, l1_results[:-1])
    l2 = torch.einsum("ds,shd->sh", W_U_correct_tokens, l2_results[:-1])
    return torch.cat([direct, l1, l2], dim=-1)


def top_1_acc(full_OV_circuit: FactoredMatrix, batch_size: int = 1000, rows: int | None = None) -> float:
    """How often each token's row of the full OV circuit is largest on the token itself (``rows``: the first rows only)."""
    n = full_OV_circuit.shape[-1] if rows is None else rows
    correct = 0
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        correct += (full_OV_circuit[start:stop].AB.argmax(-1) == torch.arange(start, stop)).sum().item()
    return correct / n


def attn_only_steps(model, tokens, cache, rep_tokens, rep_cache, out, say, seq_len) -> None:
    cfg = model.cfg
    # (4b) logit attribution from the cached per-head results (use_attn_result=True), against the logits
    logits = model(tokens)[0]
    attr = logit_attribution(cache["embed"], cache["result", 0], cache["result", 1], model.W_U, tokens[0])
    correct = logits[torch.arange(tokens.shape[1] - 1), tokens[0, 1:]]
    bias = (model.b_O.sum(0) @ model.W_U[:, tokens[0, 1:]]) + model.b_U[tokens[0, 1:]]  # zero in the chapter's model
    out["logit_attr_error"] = (attr.sum(-1) + bias - correct).abs().max().item()
    say(f"(4b) logit attribution sums to the correct-token logits: max |error| {out['logit_attr_error']:.1e}")
    # (5b) mean ablation: each head's output replaced by its mean over the batch
    def head_mean_ablation_hook(z, hook, head):
        z[:, :, head] = z[:, :, head].mean(0)

    log_probs = log_probs_of_next(model(rep_tokens), rep_tokens)[:, seq_len:].mean()
    mean_abl = torch.zeros(cfg.n_layers, cfg.n_heads)
    for layer in range(cfg.n_layers):
        for head in range(cfg.n_heads):
            hooked = model.run_with_hooks(rep_tokens, fwd_hooks=[(utils.get_act_name("z", layer),
                                                                  functools.partial(head_mean_ablation_hook, head=head))])
            mean_abl[layer, head] = log_probs - log_probs_of_next(hooked, rep_tokens)[:, seq_len:].mean()
    out["mean_ablation"] = mean_abl
    say(f"(5b) mean ablation: largest loss increase {_best(mean_abl)} (+{mean_abl.max():.2f} nats)")
    # (6b) the induction head's full OV circuit, top-1 accuracy over the first rows
    head = out["induction_head"]
    full_OV = model.W_E @ FactoredMatrix(model.W_V[1, head], model.W_O[1, head]) @ model.W_U
    out["ov_top1_acc"] = top_1_acc(full_OV, rows=min(2000, cfg.d_vocab))
    say(f"(6b) full OV circuit of L1H{head}: top-1 accuracy {out['ov_top1_acc']:.3f} over the first rows")
    # (6c) layer 1's queries and keys decomposed by input: embed, positions (shortformer), each L0 head
    first = {name: rep_cache[name][0] for name in ("embed", "pos_embed")}  # the first sequence
    first.update({(name, layer): rep_cache[name, layer][0] for name, layer in (("result", 0), ("resid_pre", 1), ("q", 1), ("k", 1))})
    parts = [first["embed"][None], first["pos_embed"][None], first["result", 0].movedim(1, 0)]
    decomposed_qk_input = torch.cat(parts)  # [2 + n_heads, pos, d_model]
    decomposed_q = decomposed_qk_input @ model.W_Q[1, head]
    decomposed_k = decomposed_qk_input @ model.W_K[1, head]
    resid_err = (decomposed_qk_input.sum(0) + model.b_O[0] - first["resid_pre", 1] - first["pos_embed"]).abs().max()
    q_err = (decomposed_q.sum(0) + model.b_O[0] @ model.W_Q[1, head] + model.b_Q[1, head] - first["q", 1][:, head]).abs().max()
    k_err = (decomposed_k.sum(0) + model.b_O[0] @ model.W_K[1, head] + model.b_K[1, head] - first["k", 1][:, head]).abs().max()
    out["qk_decomposition_error"] = max(resid_err.item(), q_err.item(), k_err.item())
    say(f"(6c) layer-1 q and k decomposed by input: max |error| {out['qk_decomposition_error']:.1e}; "
        f"largest key part {['embed', 'pos_embed', *[f'L0H{h}' for h in range(cfg.n_heads)]][int(decomposed_k.norm(dim=-1).mean(-1).argmax())]}")
    # (7b) every K-composition score at once (utils.composition_scores) against the loop of section 7
    k_all = utils.composition_scores(model.OV[0], model.QK[1].T)  # [head0, head1]
    out["comp_scores_error"] = (k_all - out["k_comp"]).abs().max().item()
    say(f"(7b) utils.composition_scores equals the loop: max |difference| {out['comp_scores_error']:.1e}")


def _best(scores: torch.Tensor) -> str:
    flat = int(scores.argmax())
    return f"L{flat // scores.shape[1]}H{flat % scores.shape[1]}"


if __name__ == "__main__":
    import sys

    with torch.inference_mode():
        main(HookedTransformer.from_pretrained("default") if "--bundled" in sys.argv else None)

"""The guided story "How the bundled model completes a repeated sequence": its requests and the sentences that read
its results.

:func:`compute` runs every step's experiment through ``run(name, fn, request, **kwargs)`` (the page passes
``ui.model.run_experiment``, so each step is a live, cached result; the bench passes the plain function). The
``say_*`` functions turn a step's numbers into the two sentences the page prints: nothing in them is written
ahead of time, so another checkpoint or prompt gives other names and figures.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import torch

from lens_core.experiments.attribution_graph import AttributionGraphRequest, attribution_graph
from lens_core.experiments.circuit_graph import edge_table
from lens_core.experiments.detectors import DetectorRequest, head_detectors
from lens_core.experiments.edges import EdgeAttributionRequest, edge_attribution
from lens_core.experiments.faithfulness import FaithfulnessRequest, circuit_faithfulness
from lens_core.experiments.patching import PatchingRequest, activation_patching
from lens_core.experiments.predictions import PredictionsRequest, predictions
from lens_core.experiments.graphs.qk_attribution import QKAttributionRequest, qk_attribution

CIRCUIT_EDGES = 20
STRONG = 0.5  # a detector score above this names the head


@dataclasses.dataclass
class StoryInputs:
    prompt: str
    answer: str
    wrong_answer: str
    corrupted: str
    ids: tuple
    corrupted_ids: tuple
    answer_id: int
    wrong_id: int


def inputs(model: Any, prompt: str, answer: str, wrong_answer: str, derive: Callable) -> StoryInputs:
    """The story's prompt, its corruption (``derive(model, prompt, answer, wrong)``, the app's own) and answer ids."""
    corrupted = derive(model, prompt, answer, wrong_answer)
    if corrupted is None:
        raise ValueError("no corrupted prompt of the same length could be derived from the story's prompt")
    return StoryInputs(prompt, answer, wrong_answer, corrupted, tuple(int(t) for t in model.to_tokens(prompt)[0].tolist()),
                       tuple(int(t) for t in model.to_tokens(corrupted)[0].tolist()), int(model.to_single_token(answer)),
                       int(model.to_single_token(wrong_answer)))


def requests(s: StoryInputs, transcoders: str) -> dict[str, tuple[str, Callable, Any]]:
    """Step name -> (experiment name, function, request), in story order."""
    pair = dict(clean_tokens=s.ids, corrupted_tokens=s.corrupted_ids, answer=s.answer_id, wrong_answer=s.wrong_id)
    return {
        "predictions": ("predictions", predictions, PredictionsRequest(tokens=s.ids, top_k=5)),
        "detectors": ("head_detectors", head_detectors, DetectorRequest(tokens=s.ids)),
        "patch_resid": ("activation_patching", activation_patching, PatchingRequest(sweep="resid_pre", **pair)),
        "patch_heads": ("activation_patching", activation_patching, PatchingRequest(sweep="head_out_all_pos", **pair)),
        "edges": ("edge_attribution", edge_attribution, EdgeAttributionRequest(**pair)),
        "circuit": ("circuit_faithfulness", circuit_faithfulness, FaithfulnessRequest(n_edges=CIRCUIT_EDGES, **pair)),
        "graph": ("attribution_graph", attribution_graph,
                  AttributionGraphRequest(tokens=s.ids, targets=(s.answer_id,), transcoders=transcoders)),
    }


def qk_request(s: StoryInputs, detectors, transcoders: str) -> QKAttributionRequest:
    """Why the strongest induction head attends where it does from the last token (the key it attends to most)."""
    layer, head = best_head(detectors.induction)
    return QKAttributionRequest(tokens=s.ids, layer=layer, head=head, query_pos=-1, transcoders=transcoders)


def compute(run: Callable, s: StoryInputs, transcoders: str, steps=None) -> dict[str, Any]:
    """Every step's result (or those in ``steps``), through ``run(name, fn, request)``; ``qk`` (the attention
    explanation) follows the detectors' induction head."""
    out = {}
    for step, (name, fn, request) in requests(s, transcoders).items():
        if steps is None or step in steps:
            out[step] = run(name, fn, request)
    if (steps is None or "qk" in steps) and "detectors" in out:
        out["qk"] = run("qk_attribution", qk_attribution, qk_request(s, out["detectors"], transcoders))
    return out


# -- the sentences ------------------------------------------------------------------------------
def _tok(text: str) -> str:
    return repr(text)


def repeated_positions(ids) -> list[bool]:
    """Per position p < len-1: whether the next token is predictable by copying (ids[p] seen earlier, then ids[p+1])."""
    ids = list(ids)
    return [any(ids[j] == ids[p] and ids[j + 1] == ids[p + 1] for j in range(p)) for p in range(len(ids) - 1)]


def say_predictions(result, ids) -> str:
    loss = result.loss_per_token.float().tolist()
    repeat = repeated_positions(ids)
    first = [l for l, r in zip(loss, repeat) if not r]
    again = [l for l, r in zip(loss, repeat) if r]
    top, p = result.top_tokens[-1][0], float(result.top_probs[-1, 0])
    text = (f"Over the first copy of the sequence the model's loss is {sum(first) / max(len(first), 1):.2f} nats per token "
            f"(random words cannot be guessed)")
    if again:
        text += f"; on the {len(again)} repeated tokens it falls to {sum(again) / len(again):.2f} nats."
    else:
        text += "."
    return text + f" After the last token its top prediction is {_tok(top)} with probability {p:.2f}."


def _heads_above(scores: torch.Tensor, cut: float) -> list[tuple[str, float]]:
    found = [(f"L{l}H{h}", float(scores[l, h])) for l in range(scores.shape[0]) for h in range(scores.shape[1])
             if float(torch.nan_to_num(scores[l, h], nan=-1.0)) > cut]
    return sorted(found, key=lambda x: -x[1])


def best_head(scores: torch.Tensor) -> tuple[int, int]:
    flat = int(torch.nan_to_num(scores, nan=-1.0).flatten().argmax())
    return flat // scores.shape[1], flat % scores.shape[1]


def _listing(heads: list[tuple[str, float]]) -> str:
    return ", ".join(f"{name} ({value:.2f})" for name, value in heads)


def say_detectors(result) -> str:
    prev = _heads_above(result.previous_token, STRONG)
    ind = _heads_above(result.induction, STRONG)
    pl, ph = best_head(result.previous_token)
    il, ih = best_head(result.induction)
    prev_text = (f"Previous-token heads (score above {STRONG}): {_listing(prev)}." if prev else
                 f"No head scores above {STRONG} as a previous-token head; the best is L{pl}H{ph} "
                 f"({float(result.previous_token[pl, ph]):.2f}).")
    ind_text = (f"Induction heads, which attend to the token after an earlier copy of the current one: {_listing(ind)}."
                if ind else f"No head scores above {STRONG} as an induction head; the best is L{il}H{ih} "
                f"({float(result.induction[il, ih]):.2f}).")
    return prev_text + " " + ind_text


def say_patching(resid, heads, corrupted_position: int | None) -> str:
    last = resid.normalized.shape[1] - 1
    per_layer = []
    for layer, name in enumerate(resid.axis_labels[0]):
        row = resid.normalized[layer]
        pos = int(torch.nan_to_num(row, nan=-1e9).argmax())
        per_layer.append(f"{name} at position {pos} ({float(row[pos]):.0%})")
    where = ("the corrupted position " + str(corrupted_position)) if corrupted_position is not None else "one position"
    text = (f"Restoring the clean residual stream at a single position recovers the answer: the best cell per layer is "
            f"{', '.join(per_layer)}, so the information moves from {where} to the last position ({last}) on the way up.")
    top = sorted(((f"L{l}H{h}", float(heads.normalized[l, h])) for l in range(heads.normalized.shape[0])
                  for h in range(heads.normalized.shape[1])), key=lambda x: -x[1])[:2]
    return text + f" Of single heads' outputs, {top[0][0]} ({top[0][1]:.0%}) and {top[1][0]} ({top[1][1]:.0%}) restore most."


def corrupted_position(s: StoryInputs) -> int | None:
    diff = [i for i, (a, b) in enumerate(zip(s.ids, s.corrupted_ids)) if a != b]
    return diff[0] if len(diff) == 1 else None


def circuit_rows(scores, faith) -> tuple[torch.Tensor, list[dict]]:
    """The circuit the faithfulness run kept, and its edges (``edge_table`` rows), strongest |score| first."""
    mask = faith.circuit.bool()
    return mask, edge_table(scores, mask)


def say_circuit(faith, table) -> str:
    edges = ", ".join(f"{row['sender']} → {row['receiver']} ({'supports' if row['score'] < 0 else 'works against'} the "
                      f"answer, score {row['score']:+.2f})" for row in table[:3])
    return (f"The {int(faith.circuit.sum())} top-scored edges of {faith.total_edges}, run alone with every other edge "
            f"carrying its corrupted value, recover {faith.circuit_normalized:.0%} of the clean logit difference "
            f"({faith.circuit_metric:.2f} of {faith.clean_metric:.2f}; corrupted {faith.corrupted_metric:.2f}). "
            f"Its strongest edges (a negative score: corrupting the edge alone would lower the logit difference): {edges}.")


def top_features(graph, n: int = 3) -> list[int]:
    """Node indices of the ``n`` feature nodes with the largest influence on the target."""
    idx = [i for i, k in enumerate(graph.node_kind) if k == "feature"]
    return sorted(idx, key=lambda i: -float(graph.node_influence[i]))[:n]


def say_graph(graph, labels: list[str]) -> str:
    n_features = sum(k == "feature" for k in graph.node_kind)
    named = ", ".join(f"{labels[i]} at position {graph.node_pos[i]} (influence {float(graph.node_influence[i]):.2f})"
                      for i in top_features(graph))
    corr = graph.check_correlation
    check = "" if corr is None else (f" Zeroing the {len(graph.check_nodes)} most influential features in the real "
                                     f"model moves the target's logit as the graph predicts with r = {corr:.2f}.")
    return (f"With the MLPs replaced by transcoders, the pruned graph keeps {len(graph.node_kind)} of "
            f"{graph.full_nodes:,} nodes ({n_features} features) behind {_tok(graph.logit_tokens[0])}; the most "
            f"influential features are {named or 'none'}.{check}")


def say_qk(result) -> str:
    q, k = result.str_tokens[result.query_pos], result.str_tokens[result.key_pos]
    ids = result.token_ids
    after_copy = result.key_pos >= 1 and ids[result.key_pos - 1] == ids[result.query_pos]
    text = (f"From the last token {_tok(q)}, L{result.layer}H{result.head} puts {result.pattern:.0%} of its attention on "
            f"position {result.key_pos} ({_tok(k)})" + (f", the token after the earlier copy of {_tok(q)}." if after_copy
                                                        else "."))
    excess = result.score - result.baseline
    contrast = result.group_contrast
    flat = int(contrast.abs().flatten().argmax())
    qg, kg = result.query_groups[flat // contrast.shape[1]], result.key_groups[flat % contrast.shape[1]]
    part = float(contrast.flatten()[flat])
    share = f"{part / excess:.0%} of it" if abs(excess) > 1e-9 else f"{part:+.2f}"
    return text + (f" Its score there exceeds the mean over the other keys by {excess:.2f}; the largest part, {share}, "
                   f"comes from the query's {qg} meeting the key's {kg}.")

"""Edge attribution patching (EAP, EAP-IG) over the model's computational graph, and circuit selection.

The graph (every path through the residual stream is an edge):
- senders ``S``: ``embed`` (token + position embedding), every head ``L{l}H{h}`` (its output
  through ``W_O``), every MLP ``MLP{l}``; in forward order;
- receivers ``R``: every head's query, key and value inputs ``L{l}H{h}.q`` / ``L{l}KV{j}.k`` /
  ``L{l}KV{j}.v`` (keys and values per key/value head, so per head unless grouped-query),
  every MLP's input ``MLP{l}.in``, and ``logits``;
- an edge ``s -> r`` exists when ``s`` writes the residual stream before ``r`` reads it.

The metric is the logit difference ``answer - wrong_answer`` at the last position, averaged
over the task's prompt pairs. An edge's score estimates how the metric moves when that edge
alone carries the corrupted value of its sender:

- ``eap``: ``(sender_corrupt - sender_clean) . d metric / d receiver_input`` at the clean
  input; 2 forward passes and 1 backward pass score every edge;
- ``eap_ig``: the same with the gradient averaged over ``ig_steps`` inputs on the straight
  line from the corrupted to the clean embeddings (``alpha = k / steps``, ``k = 1..steps``),
  all in one batch.

Scores are kept per position (``scores_by_pos [S, R, pos]``) and summed (``scores [S, R]``).
With post-sublayer norms (Gemma, OLMo 2) a head's output is ``z @ W_O`` carried through its layer's
``ln1_post`` with that run's scale (frozen) and weight, and an MLP's is ``hook_mlp_out`` (after
``ln2_post``); the gradients are the real model's (soft-capped logits included: the metric is the
model's logit difference), through every norm.
Receiver inputs come from the hook points ``blocks.{l}.hook_q_input`` etc.
(``lens_core.components``), so the gradient of each head's query input is its own.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import torch

from lens_core.results import ExperimentResult

from .._common import ContrastRequest, capped, contrast_tokens, resolve_answers, str_tokens

METHODS = ("eap", "eap_ig")
TASKS = ("pair", "induction", "pairs")


# ---- the graph -------------------------------------------------------------------------
@dataclasses.dataclass
class Graph:
    n_layers: int
    n_heads: int
    n_kv: int
    senders: list  # labels, forward order
    sender_layers: list  # -1 for embed
    receivers: list
    receiver_layers: list  # n_layers for logits
    receiver_owners: list  # per receiver: the senders whose input it is ([] for logits)
    allowed: torch.Tensor  # [S, R] bool

    def head_sender(self, layer: int, head: int) -> int:
        return 1 + layer * (self.n_heads + 1) + head

    def mlp_sender(self, layer: int) -> int:
        return 1 + layer * (self.n_heads + 1) + self.n_heads

    def receiver(self, layer: int, kind: str, index: int = 0) -> int:
        """Index of a receiver: kind ``q`` (head), ``k``/``v`` (kv head), ``mlp``, or ``logits``."""
        if kind == "logits":
            return len(self.receivers) - 1
        base = layer * (self.n_heads + 2 * self.n_kv + 1)
        offset = {"q": 0, "k": self.n_heads, "v": self.n_heads + self.n_kv, "mlp": self.n_heads + 2 * self.n_kv}[kind]
        return base + offset + index

    def layer_receivers(self, layer: int) -> slice:
        """The receivers of block ``layer``: q heads, k, v, then the MLP input."""
        width = self.n_heads + 2 * self.n_kv + 1
        return slice(layer * width, (layer + 1) * width)

    def senders_before(self, receiver: int) -> int:
        """Senders ``[:n]`` can reach receiver (senders are in forward order)."""
        return int(self.allowed[:, receiver].nonzero().max()) + 1


def build_graph(cfg) -> Graph:
    L, H, KV = cfg.n_layers, cfg.n_heads, cfg.n_key_value_heads
    group = H // KV
    senders, sender_layers = ["embed"], [-1]
    receivers, receiver_layers, owners = [], [], []
    for l in range(L):
        senders += [f"L{l}H{h}" for h in range(H)] + [f"MLP{l}"]
        sender_layers += [l] * (H + 1)
        head = lambda h: 1 + l * (H + 1) + h  # noqa: E731
        kv_name = "H" if KV == H else "KV"
        receivers += [f"L{l}H{h}.q" for h in range(H)]
        owners += [[head(h)] for h in range(H)]
        for kind in ("k", "v"):
            receivers += [f"L{l}{kv_name}{j}.{kind}" for j in range(KV)]
            owners += [[head(h) for h in range(j * group, (j + 1) * group)] for j in range(KV)]
        receivers.append(f"MLP{l}.in")
        owners.append([1 + l * (H + 1) + H])
        receiver_layers += [l] * (H + 2 * KV + 1)
    receivers.append("logits")
    receiver_layers.append(L)
    owners.append([])
    # An edge from every sender in an earlier layer; within a layer, from the heads into the MLP
    # (unless attention and MLP run in parallel).
    ls, lr = torch.tensor(sender_layers)[:, None], torch.tensor(receiver_layers)[None, :]
    mlp_sender = torch.tensor([s.startswith("MLP") for s in senders])[:, None]
    mlp_receiver = torch.tensor([r.endswith(".in") for r in receivers])[None, :]
    same_layer_ok = mlp_receiver & ~mlp_sender & (not cfg.parallel_attn_mlp)
    allowed = (ls < lr) | ((ls == lr) & same_layer_ok)
    return Graph(L, H, KV, senders, sender_layers, receivers, receiver_layers, owners, allowed)


# ---- requests and results --------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class EdgeAttributionRequest(ContrastRequest):
    method: str = "eap"
    ig_steps: int = 5
    # "pair": the clean/corrupted prompts; "induction": ``task_size`` repeated random sequences
    # (see :func:`induction_task`); "pairs": ``pairs`` = ((clean ids, corrupted ids, answer, wrong), ...).
    task: str = "pair"
    task_size: int = 32
    task_seq_len: int = 8
    task_seed: int = 0
    pairs: tuple = ()


@dataclasses.dataclass
class EdgeAttributionResult(ExperimentResult):
    kind = "edge_attribution"
    scores: torch.Tensor  # [sender, receiver], summed over positions; 0 where no edge
    scores_by_pos: torch.Tensor  # [sender, receiver, pos]
    allowed: torch.Tensor  # [sender, receiver] bool: the graph's edges
    senders: list
    receivers: list
    sender_layers: list
    receiver_layers: list
    receiver_owners: list
    method: str
    ig_steps: int
    clean_metric: float  # mean logit difference over the task's prompts
    corrupted_metric: float
    n_prompts: int
    str_tokens: list  # the first clean prompt's tokens

    @property
    def n_edges(self) -> int:
        return int(self.allowed.sum())


# ---- the task: batches of (clean, corrupted, answer, wrong) ----------------------------------
@dataclasses.dataclass
class Task:
    clean: torch.Tensor  # [N, pos]
    corrupted: torch.Tensor  # [N, pos]
    answers: torch.Tensor  # [N]
    wrongs: Optional[torch.Tensor]  # [N] or None (metric: the answer's logit)


def induction_task(model, n: int, seq_len: int, seed: int = 0) -> Task:
    """``n`` pairs: clean ``BOS A A[:-1]``, whose last token ``A[-2]`` was seen before, followed by
    the answer ``A[-1]`` (what induction predicts); corrupted: the same with that earlier ``A[-2]``
    replaced by another random token, so there is no earlier copy to follow (the answer's token is
    still in the prompt). The wrong answer is the replacing token (a control the model has seen)."""
    if n < 1 or seq_len < 3:
        raise ValueError("an induction task needs at least 1 sequence of at least 3 tokens")
    if 2 * seq_len > model.cfg.n_ctx:
        raise ValueError(f"2 * seq_len = {2 * seq_len} tokens exceed the model's context ({model.cfg.n_ctx})")
    bos = getattr(model, "bos_token_id", None)
    bos = 0 if bos is None else int(bos)
    gen = torch.Generator().manual_seed(seed)
    vocab = model.cfg.d_vocab

    def draw(shape) -> torch.Tensor:
        tokens = torch.randint(0, vocab - 1, shape, generator=gen)
        return tokens + (tokens >= bos).long()  # never BOS

    a = draw((n, seq_len))
    replacement = draw((n,))
    while True:  # the replacement must not already occur in the sequence
        clash = (a == replacement[:, None]).any(1)
        if not clash.any():
            break
        replacement[clash] = draw((int(clash.sum()),))
    first = torch.full((n, 1), bos)
    clean = torch.cat([first, a, a[:, :-1]], dim=1)
    corrupted = clean.clone()
    corrupted[:, seq_len - 1] = replacement  # the first copy of the last token, A[-2]
    device = model.cfg.device
    return Task(clean.to(device), corrupted.to(device), a[:, -1].to(device), replacement.to(device))


def task_from_request(model, request: EdgeAttributionRequest) -> Task:
    if request.task == "pair":
        clean, corrupted = contrast_tokens(model, request)
        answer, wrong = resolve_answers(model, request)
        device = clean.device
        return Task(clean, corrupted, torch.tensor([answer], device=device),
                    None if wrong is None else torch.tensor([wrong], device=device))
    if request.task == "induction":
        return induction_task(model, request.task_size, request.task_seq_len, request.task_seed)
    if request.task == "pairs":
        if not request.pairs:
            raise ValueError("task 'pairs' needs at least one (clean ids, corrupted ids, answer, wrong) tuple")
        lengths = {len(p[0]) for p in request.pairs} | {len(p[1]) for p in request.pairs}
        if len(lengths) != 1:
            raise ValueError(f"every clean and corrupted prompt of the task must have the same number of tokens; got {sorted(lengths)}")
        device = model.cfg.device
        clean = torch.tensor([list(p[0]) for p in request.pairs], device=device)
        corrupted = torch.tensor([list(p[1]) for p in request.pairs], device=device)
        if int(clean.min()) < 0 or int(max(clean.max(), corrupted.max())) >= model.cfg.d_vocab:
            raise ValueError(f"token ids must lie in [0, {model.cfg.d_vocab})")
        answers = torch.tensor([int(p[2]) for p in request.pairs], device=device)
        wrongs = [p[3] for p in request.pairs]
        return Task(clean, corrupted, answers, None if any(w is None for w in wrongs) else torch.tensor(wrongs, device=device))
    raise ValueError(f"task must be one of {TASKS}, got {request.task!r}")


def task_metric(model, final_resid: torch.Tensor, task: Task, rows_per_prompt: int = 1) -> torch.Tensor:
    """Per row ``[rows]``: logit difference at the last position, from the residual after the last block
    (only the answer columns of ``W_U`` are used); rows are ``rows_per_prompt`` blocks of the task."""
    last = model.ln_final(final_resid[:, -1:])[:, 0]  # [rows, d_model]
    answers = task.answers.repeat(rows_per_prompt)

    def logit(tokens: torch.Tensor) -> torch.Tensor:
        return capped(model, (last * model.W_U[:, tokens].T).sum(-1) + model.b_U[tokens]).float()

    diff = logit(answers)
    if task.wrongs is not None:
        diff = diff - logit(task.wrongs.repeat(rows_per_prompt))
    return diff


def final_resid(model, input: torch.Tensor, start_at_layer: Optional[int] = None) -> torch.Tensor:
    """The residual after the last block (no unembedding: the metric reads two columns of ``W_U``)."""
    return model(input, start_at_layer=start_at_layer, stop_at_layer=model.cfg.n_layers)


# ---- sender outputs and receiver gradients ----------------------------------------------
def sender_hooks(model, graph: Graph, out: torch.Tensor) -> list:
    """Forward hooks writing every sender's output into ``out [batch, S, pos, d_model]`` (detached)."""
    H = graph.n_heads

    def embed(x, hook):
        out[:, 0] = x.detach()

    hooks = [("blocks.0.hook_resid_pre", embed)]
    for l in range(graph.n_layers):
        W_O = model.blocks[l].attn.W_O
        first = graph.head_sender(l, 0)

        def heads(z, hook, W_O=W_O, first=first):
            out[:, first : first + H] = torch.einsum("bphe,hed->bhpd", z.detach(), W_O)

        def mlp(x, hook, index=graph.mlp_sender(l)):
            out[:, index] = x.detach()

        hooks += [(f"blocks.{l}.attn.hook_z", heads), (f"blocks.{l}.hook_mlp_out", mlp)]
        post = model.blocks[l].ln1_post
        if post is not None:  # the heads' outputs reach the residual through ln1_post: its scale of this run, its weight
            def through_post(scale, hook, first=first, w=getattr(post, "w", None)):
                heads_out = out[:, first : first + H] / scale.detach()[:, None]
                out[:, first : first + H] = heads_out * w if w is not None else heads_out

            hooks.append((f"blocks.{l}.ln1_post.hook_scale", through_post))
    return hooks


def sender_outputs(model, graph: Graph, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(``[batch, S, pos, d_model]``: each sender's output on ``tokens``, the residual after the last block)."""
    out = _sender_buffer(model, graph, tokens.shape[0], tokens.shape[1], tokens.device)
    with torch.no_grad(), model.hooks(fwd_hooks=sender_hooks(model, graph, out)):
        resid = final_resid(model, tokens)
    return out, resid


def _sender_buffer(model, graph: Graph, batch: int, n_pos: int, device) -> torch.Tensor:
    cfg = model.cfg
    return torch.empty(batch, len(graph.senders), n_pos, cfg.d_model, dtype=cfg.dtype, device=device)


def receiver_gradients(model, graph: Graph, resid0: torch.Tensor, task: Task, rows_per_prompt: int = 1,
                       senders_into: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(``[batch, R, pos, d_model]``: the gradient of the summed task metric at every receiver's
    input, the metric per row), running the model from the embeddings ``resid0 [batch, pos, d_model]``.
    ``senders_into``: also write the senders' outputs there (as :func:`sender_outputs`)."""
    n_layers = graph.n_layers
    seen: dict[int, torch.Tensor] = {}

    def keep(index: int):
        def hook(x, _):
            seen[index] = x
        return hook

    hooks = [] if senders_into is None else sender_hooks(model, graph, senders_into)
    for l in range(n_layers):
        hooks += [(f"blocks.{l}.hook_q_input", keep(graph.receiver(l, "q"))),
                  (f"blocks.{l}.hook_k_input", keep(graph.receiver(l, "k"))),
                  (f"blocks.{l}.hook_v_input", keep(graph.receiver(l, "v"))),
                  (f"blocks.{l}.hook_mlp_in", keep(graph.receiver(l, "mlp")))]
    hooks.append((f"blocks.{n_layers - 1}.hook_resid_post", keep(graph.receiver(0, "logits"))))
    with torch.inference_mode(False), torch.enable_grad():
        x = resid0.detach().clone().requires_grad_(True)
        with model.hooks(fwd_hooks=hooks):
            resid = final_resid(model, x, start_at_layer=0)
        metric = task_metric(model, resid, task, rows_per_prompt)
        order = sorted(seen)
        grads = torch.autograd.grad(metric.sum(), [seen[i] for i in order], allow_unused=True)
    batch, n_pos, d = resid0.shape
    out = torch.zeros(batch, len(graph.receivers), n_pos, d, dtype=resid0.dtype, device=resid0.device)
    for start, grad in zip(order, grads):
        if grad is None:
            continue
        if grad.dim() == 4:  # per head [batch, pos, head, d_model]
            out[:, start : start + grad.shape[2]] = grad.transpose(1, 2)
        else:
            out[:, start] = grad
    return out, metric.detach()


def edge_scores(graph: Graph, delta: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """``[S, R, pos]``: sum over prompts of ``delta[n, s, p] . grads[n, r, p]`` on the graph's edges."""
    S, R = graph.allowed.shape
    scores = torch.zeros(S, R, delta.shape[2], dtype=torch.float32, device=delta.device)
    blocks = [graph.layer_receivers(l) for l in range(graph.n_layers)] + [slice(R - 1, R)]
    for block in blocks:
        n_senders = max(graph.senders_before(r) for r in range(block.start, block.stop))
        scores[:n_senders, block] = torch.einsum("nspd,nrpd->srp", delta[:, :n_senders].float(), grads[:, block].float())
    return scores * graph.allowed[..., None].to(scores.device)


def edge_attribution(model, request: EdgeAttributionRequest) -> EdgeAttributionResult:
    # Gradients are needed even when the caller runs in inference mode (its tensors could not join a graph).
    with torch.inference_mode(False):
        return _edge_attribution(model, request)


def _edge_attribution(model, request: EdgeAttributionRequest) -> EdgeAttributionResult:
    if request.method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {request.method!r}")
    if request.method == "eap_ig" and not 1 <= request.ig_steps <= 64:
        raise ValueError(f"ig_steps must be between 1 and 64, got {request.ig_steps}")
    graph = build_graph(model.cfg)
    task = task_from_request(model, request)
    n = task.clean.shape[0]
    corrupt_out, corrupt_resid = sender_outputs(model, graph, task.corrupted)
    corrupted_metric = float(task_metric(model, corrupt_resid, task).mean())
    if request.method == "eap":
        # One forward pass with gradients gives the clean senders, the metric and the receivers' gradients.
        with torch.no_grad():
            resid0 = model(task.clean, stop_at_layer=0)
        clean_out = _sender_buffer(model, graph, n, task.clean.shape[1], task.clean.device)
        grads, metric = receiver_gradients(model, graph, resid0, task, 1, senders_into=clean_out)
    else:
        clean_out, clean_resid = sender_outputs(model, graph, task.clean)
        metric = task_metric(model, clean_resid, task)
        steps = request.ig_steps
        alphas = torch.arange(1, steps + 1, device=clean_out.device, dtype=clean_out.dtype) / steps
        start, end = corrupt_out[:, 0], clean_out[:, 0]  # embeddings [N, pos, d_model]
        resid0 = (start[None] + alphas[:, None, None, None] * (end - start)[None]).flatten(0, 1)
        grads, _ = receiver_gradients(model, graph, resid0, task, steps)
        grads = grads.unflatten(0, (steps, n)).mean(0)
    clean_metric = float(metric.mean())
    with torch.no_grad():
        by_pos = edge_scores(graph, corrupt_out - clean_out, grads / n)  # d mean-metric / d input
    return EdgeAttributionResult(
        scores=by_pos.sum(-1).cpu(), scores_by_pos=by_pos.cpu(), allowed=graph.allowed.clone(),
        senders=graph.senders, receivers=graph.receivers, sender_layers=graph.sender_layers,
        receiver_layers=graph.receiver_layers, receiver_owners=graph.receiver_owners, method=request.method,
        ig_steps=request.ig_steps if request.method == "eap_ig" else 0, clean_metric=clean_metric,
        corrupted_metric=corrupted_metric, n_prompts=n, str_tokens=str_tokens(model, task.clean[0].tolist()),
    )

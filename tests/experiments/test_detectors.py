import itertools

import pytest
import torch

from lens_core.experiments.views.detectors import DetectorRequest, detector_scores, head_detectors, repeated_random_tokens

from exp_tiny import random_tokens, tiny


def _loop_scores(pattern, tokens, exclude_bos, exclude_current):
    """Reference: plain Python loops over sequences, heads and query positions. pattern [batch, head, q, k]."""
    batch, n_heads, n_pos, _ = pattern.shape
    out = {}
    for name in ("previous_token", "duplicate_token", "induction"):
        scores = []
        for h in range(n_heads):
            values = []
            for b in range(batch):
                toks = tokens[b].tolist()
                for q in range(n_pos):
                    allowed = [k for k in range(q + 1) if not (exclude_bos and k == 0) and not (exclude_current and k == q)]
                    if name == "previous_token":
                        targets = [k for k in allowed if k == q - 1]
                    elif name == "duplicate_token":
                        targets = [k for k in allowed if k < q and toks[k] == toks[q]]
                    else:
                        targets = [k for k in allowed if k >= 1 and toks[k - 1] == toks[q]]
                    if targets:
                        row = pattern[b, h, q]
                        values.append(float(sum(row[k] for k in targets) / sum(row[k] for k in allowed)))
            scores.append(sum(values) / len(values) if values else float("nan"))
        out[name] = torch.tensor(scores)
    return out


@pytest.mark.parametrize("exclude_bos,exclude_current", list(itertools.product([False, True], repeat=2)))
def test_scores_match_a_loop_on_random_patterns(exclude_bos, exclude_current):
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 5, (2, 9), generator=gen)  # a small alphabet: many duplicates
    logits = torch.randn(2, 3, 9, 9, generator=gen).masked_fill(~torch.ones(9, 9, dtype=torch.bool).tril(), float("-inf"))
    pattern = logits.softmax(-1)
    ours = detector_scores(pattern, tokens, exclude_bos, exclude_current)
    ref = _loop_scores(pattern, tokens, exclude_bos, exclude_current)
    for name in ref:
        torch.testing.assert_close(ours[name], ref[name], atol=1e-6, rtol=1e-5)


def test_ideal_heads_score_one():
    seq = torch.tensor([[0, 11, 12, 13, 14, 11, 12, 13, 14]])  # BOS + a sequence repeated twice
    n = seq.shape[1]
    prev, induct = torch.zeros(n, n), torch.zeros(n, n)
    prev[0, 0] = 1
    for q in range(1, n):
        prev[q, q - 1] = 1
        induct[q, q - 3 if q >= 5 else 0] = 1  # second half: the token after the first copy
    scores = detector_scores(torch.stack([prev, induct])[None], seq, exclude_bos=True)
    assert scores["previous_token"].tolist() == pytest.approx([1.0, 0.0])
    assert scores["induction"].tolist() == pytest.approx([0.0, 1.0])
    assert scores["duplicate_token"].tolist() == pytest.approx([0.0, 0.0])


def test_head_detectors_on_a_model_match_the_loop():
    model = tiny("gpt2")
    tokens = random_tokens(10, seed=70)
    tokens[0, 6:] = tokens[0, 1:5]  # some repeats
    result = head_detectors(model, DetectorRequest(tokens=tuple(tokens[0].tolist()), exclude_current_token=True))
    _, cache = model.run_with_cache(tokens)
    for l in range(model.cfg.n_layers):
        ref = _loop_scores(cache["pattern", l], tokens, True, True)
        for name in ref:
            torch.testing.assert_close(getattr(result, name)[l], ref[name], atol=1e-5, rtol=1e-4)
    assert result.axis_labels[0] == ["L0", "L1", "L2"] and result.source == "prompt"


def test_repeated_random_tokens():
    model = tiny("gpt2")
    tokens = repeated_random_tokens(model, 7, batch=3, seed=5)
    assert tokens.shape == (3, 15)
    assert torch.equal(tokens[:, 1:8], tokens[:, 8:])
    assert torch.equal(tokens, repeated_random_tokens(model, 7, batch=3, seed=5))
    assert not torch.equal(tokens, repeated_random_tokens(model, 7, batch=3, seed=6))
    with pytest.raises(ValueError, match="context"):
        repeated_random_tokens(model, 100)

"""The store with the real HookedTransformer and experiments (tiny random GPT-2, no download)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from cache_store import ResultStore, model_fingerprint
from cache_store.warm import warm
from cache_store_testkit import assert_same, tiny_hf_gpt2

lens_core = pytest.importorskip("lens_core")
predictions_module = pytest.importorskip("lens_core.experiments.views.predictions")
from lens_core import ActivationCache, HookedTransformer  # noqa: E402

PredictionsRequest = predictions_module.PredictionsRequest
predictions = predictions_module.predictions
PROMPT = "the cat sat on the mat"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def hf():
    return tiny_hf_gpt2(seed=0)


@pytest.fixture(scope="module")
def model(hf):
    hf_model, tokenizer = hf
    return HookedTransformer.from_hf_model(hf_model, tokenizer=tokenizer, model_name="tiny-gpt2")


def test_fingerprint_tracks_processing_dtype_and_weights(hf, model):
    hf_model, tokenizer = hf
    same = HookedTransformer.from_hf_model(hf_model, tokenizer=tokenizer, model_name="tiny-gpt2")
    assert model_fingerprint(same) == model_fingerprint(model)
    unfolded = HookedTransformer.from_hf_model(hf_model, tokenizer=tokenizer, model_name="tiny-gpt2", fold_ln=False)
    assert model_fingerprint(unfolded)["processing"] != model_fingerprint(model)["processing"]
    half = HookedTransformer.from_hf_model(hf_model, tokenizer=tokenizer, model_name="tiny-gpt2", dtype="bfloat16")
    assert model_fingerprint(half)["dtype"] != model_fingerprint(model)["dtype"]
    other_hf, _ = tiny_hf_gpt2(seed=1)
    other = HookedTransformer.from_hf_model(other_hf, tokenizer=tokenizer, model_name="tiny-gpt2")
    assert model_fingerprint(other)["weights"] != model_fingerprint(model)["weights"]


def test_run_experiment_hit_equals_a_direct_run(tmp_path, model):
    direct = predictions(model, PredictionsRequest(prompt=PROMPT, top_k=3))
    calls = []

    def counted(m, request):
        calls.append(request)
        return predictions(m, request)

    with ResultStore(tmp_path, 2**24) as store:
        first = store.run_experiment(model, "predictions", counted, PredictionsRequest(prompt=PROMPT, top_k=3))
        ids = tuple(model.to_tokens(PROMPT)[0].tolist())
        # Same token ids given directly: the same entry.
        second = store.run_experiment(model, "predictions", counted, PredictionsRequest(tokens=ids, top_k=3))
        assert len(calls) == 1 and calls[0].prompt is None and calls[0].tokens == ids
        assert_same(first, direct)
        assert_same(second, direct)
        store.run_experiment(model, "predictions", counted, PredictionsRequest(tokens=ids, top_k=4))
        assert len(calls) == 2


def test_activation_cache_round_trip(tmp_path, model):
    tokens = model.to_tokens(PROMPT)
    _, reference = model.run_with_cache(tokens)
    with ResultStore(tmp_path, 2**24) as store:
        store.get_or_compute_activations(model, tokens, None, lambda: dict(reference.cache_dict))
        stored = store.get_or_compute_activations(model, tokens, None, lambda: pytest.fail("expected a hit"))
    assert list(stored) == list(reference.cache_dict)
    rebuilt = ActivationCache(stored, model)
    for layer in range(model.cfg.n_layers):
        assert_same(rebuilt["pattern", layer], reference["pattern", layer])
        assert_same(rebuilt["resid_post", layer], reference["resid_post", layer])


def test_warm_fills_what_pages_then_hit(tmp_path, model):
    messages = []
    with ResultStore(tmp_path, 2**24) as store:
        done = warm(store, model, [PROMPT, "a dog ran to Paris", ""], ["predictions", "no_such_thing"], say=messages.append)
        assert done == {"predictions": 2, "no_such_thing": 0}
        assert any(m.startswith("skip no_such_thing") for m in messages)
        hit = store.run_experiment(model, "predictions", lambda *a: pytest.fail("expected a hit"), PredictionsRequest(prompt=PROMPT))
        assert_same(hit, predictions(model, PredictionsRequest(prompt=PROMPT)))
    # The command line sees the same directory.
    run = [sys.executable, "-m", "cache_store", "--dir", str(tmp_path)]
    out = subprocess.run(run + ["stats", "--json"], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    stats = json.loads(out.stdout)
    assert stats["entries"] == 2 and stats["hits"] == 1 and stats["misses"] == 2
    out = subprocess.run(run + ["clear"], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert "removed 2 entries" in out.stdout
    out = subprocess.run(run + ["stats", "--json"], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout)["entries"] == 0


def test_cli_uses_the_environment_variable_directory(tmp_path):
    env = {**os.environ, "CIRCUIT_EXPLORER_CACHE_DIR": str(tmp_path / "from_env")}
    out = subprocess.run([sys.executable, "-m", "cache_store", "stats", "--json"], cwd=REPO_ROOT, env=env,
                         capture_output=True, text=True, check=True)
    assert json.loads(out.stdout)["directory"] == str(tmp_path / "from_env")
    assert (tmp_path / "from_env" / "cache.db").exists()


def test_run_experiment_tokenizes_every_prompt_pair(tmp_path, model):
    import dataclasses

    @dataclasses.dataclass(frozen=True)
    class PairRequest:
        clean_prompt: str | None = None
        corrupted_prompt: str | None = None
        clean_tokens: tuple | None = None
        corrupted_tokens: tuple | None = None
        answer: str = " Paris"

    seen = []

    def fn(m, request):
        seen.append(request)
        return predictions(m, PredictionsRequest(tokens=request.clean_tokens + request.corrupted_tokens))

    clean, corrupted = "the cat sat", "the dog ran"
    clean_ids = tuple(model.to_tokens(clean)[0].tolist())
    corrupted_ids = tuple(model.to_tokens(corrupted)[0].tolist())
    with ResultStore(tmp_path, 2**24) as store:
        a = store.run_experiment(model, "pair", fn, PairRequest(clean_prompt=clean, corrupted_prompt=corrupted))
        b = store.run_experiment(model, "pair", fn, PairRequest(clean_tokens=clean_ids, corrupted_prompt=corrupted))
        assert len(seen) == 1
        assert (seen[0].clean_prompt, seen[0].clean_tokens, seen[0].corrupted_tokens) == (None, clean_ids, corrupted_ids)
        assert_same(a, b)
        store.run_experiment(model, "pair", fn, PairRequest(clean_prompt=clean, corrupted_prompt="the cat ran"))
        assert len(seen) == 2
        # Neither text nor ids for a pair: the experiment rejects it, and nothing is stored.
        with pytest.raises(TypeError):
            store.run_experiment(model, "pair", fn, PairRequest(clean_prompt=clean))
        assert store.stats().entries == 2


def test_cli_warm_with_a_saved_model_directory(tmp_path, hf):
    hf_model, tokenizer = hf
    model_dir = tmp_path / "model"
    hf_model.save_pretrained(model_dir, safe_serialization=True)
    tokenizer.save_pretrained(model_dir)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("the cat sat on the mat\na dog ran to Paris\n", encoding="utf-8")
    cache_dir = tmp_path / "cache"
    run = [sys.executable, "-m", "cache_store", "--dir", str(cache_dir)]
    out = subprocess.run(run + ["warm", "--model", str(model_dir), "--prompts", str(prompts),
                                "--experiments", "predictions,logit_lens,nope"],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "predictions: 2 prompt(s) cached" in out.stdout and "logit_lens: 2 prompt(s) cached" in out.stdout
    assert "skip nope" in out.stdout
    # A page asking for the default view of one of those prompts gets a hit.
    model = HookedTransformer.from_pretrained(str(model_dir))
    with ResultStore(cache_dir, None) as store:
        assert store.stats().entries == 4
        hit = store.run_experiment(model, "predictions", lambda *a: pytest.fail("expected a hit"),
                                   PredictionsRequest(prompt="a dog ran to Paris"))
        assert_same(hit, predictions(model, PredictionsRequest(prompt="a dog ran to Paris")))
    bad = subprocess.run(run + ["warm", "--model", str(tmp_path / "missing"), "--prompts", str(prompts)],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "cannot load model" in bad.stderr and "Traceback" not in bad.stderr


def test_a_weights_only_request_is_cached_under_no_tokens(tmp_path, model):
    import dataclasses

    @dataclasses.dataclass(frozen=True)
    class WeightsRequest:  # like the circuits requests: no prompt at all
        layer: int = 0

    calls = []

    def fn(m, request):
        calls.append(request)
        return predictions(m, PredictionsRequest(tokens=(0, 1, 2)))

    with ResultStore(tmp_path, 2**24) as store:
        first = store.run_experiment(model, "weights_only", fn, WeightsRequest(layer=1))
        again = store.run_experiment(model, "weights_only", fn, WeightsRequest(layer=1))
        store.run_experiment(model, "weights_only", fn, WeightsRequest(layer=0))
    assert calls == [WeightsRequest(layer=1), WeightsRequest(layer=0)]
    assert_same(first, again)

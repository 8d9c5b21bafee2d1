"""The bundled default model, loaded with plain `transformers`, offline.

Checks the files (architecture, size, plain data only), the tokenizer conventions other code
relies on, that the trained weights really copy repeated sequences, and that every preset's
answer and wrong answer are single tokens and the model prefers the answer.
"""
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2LMHeadModel  # noqa: E402

MODEL_DIR = Path(__file__).resolve().parent.parent / "lens_core" / "default_model"
MAX_BYTES = 20 * 1024 * 1024
PRESET_KEYS = {"name", "prompt", "answer", "wrong_answer", "look_at", "page"}


@pytest.fixture(scope="module")
def model():
    return AutoModelForCausalLM.from_pretrained(MODEL_DIR, local_files_only=True).eval()


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(MODEL_DIR, local_files_only=True)


@pytest.fixture(scope="module")
def presets():
    return json.loads((MODEL_DIR / "presets.json").read_text())


def test_folder_is_plain_data_within_size():
    # The transcoders/ subfolder has its own budget (tests/features/test_features_shipped.py).
    files = [f for f in MODEL_DIR.rglob("*") if f.is_file() and "transcoders" not in f.relative_to(MODEL_DIR).parts]
    names = {f.name for f in files}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "presets.json", "README.md"} <= names
    assert not [f for f in files if f.suffix in {".py", ".pyc", ".pt", ".bin", ".pkl", ".pickle"}]
    assert sum(f.stat().st_size for f in files) <= MAX_BYTES


def test_is_gpt2_with_tied_embeddings(model):
    assert isinstance(model, GPT2LMHeadModel)
    assert model.config.model_type == "gpt2"
    assert model.config.activation_function == "gelu_new"
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()
    assert model.config.n_layer >= 3


def test_tokenizer_conventions(tokenizer, model):
    # <|endoftext|> is BOS, EOS and padding, id 0; the tokenizer does not prepend BOS itself.
    assert tokenizer.convert_tokens_to_ids("<|endoftext|>") == 0
    assert tokenizer.bos_token_id == tokenizer.eos_token_id == tokenizer.pad_token_id == 0
    assert model.config.bos_token_id == 0
    text = "def f(x):\n    return x"
    ids = tokenizer(text).input_ids
    assert ids[0] != 0
    assert tokenizer.decode(ids) == text
    assert len(tokenizer) == model.config.vocab_size


@torch.no_grad()
def test_second_copy_of_random_sequence_is_predicted(model):
    # Induction, measured directly: loss on the second copy of a random sequence is far lower.
    g = torch.Generator().manual_seed(0)
    r = torch.randint(1, model.config.vocab_size, (8, 40), generator=g)
    tokens = torch.cat([torch.zeros(8, 1, dtype=torch.long), r, r], dim=1)
    logprobs = model(tokens).logits[:, :-1].log_softmax(-1)
    nll = -logprobs.gather(-1, tokens[:, 1:, None])[..., 0]  # nll[:, j] predicts tokens[:, j + 1]
    first, second = nll[:, :40].mean().item(), nll[:, 41:].mean().item()
    assert first > second + 4.0, (first, second)


def _single_token(tokenizer, text):
    ids = tokenizer(text, add_special_tokens=False).input_ids
    assert len(ids) == 1, f"{text!r} is {tokenizer.convert_ids_to_tokens(ids)}"
    return ids[0]


def test_presets_schema(presets):
    assert isinstance(presets, list) and len(presets) >= 3
    for p in presets:
        assert set(p) == PRESET_KEYS, p
        assert all(isinstance(p[k], str) and p[k] for k in PRESET_KEYS)
        assert p["answer"] != p["wrong_answer"]
    names = " ".join(p["name"].lower() for p in presets)
    assert "induction" in names and "repeated name" in names and "docstring" in names


@torch.no_grad()
def test_model_prefers_each_preset_answer(model, tokenizer, presets):
    for p in presets:
        answer = _single_token(tokenizer, p["answer"])
        wrong = _single_token(tokenizer, p["wrong_answer"])
        ids = [tokenizer.bos_token_id] + tokenizer(p["prompt"], add_special_tokens=False).input_ids
        assert len(ids) <= 41, p["name"]
        logits = model(torch.tensor([ids])).logits[0, -1]
        assert logits[answer] > logits[wrong], p["name"]


@torch.no_grad()
def test_each_preset_answer_is_the_models_top_prediction(model, tokenizer, presets):
    # A preset shows its point only if the model gets it right: the answer ranks first, not just above the distractor.
    for p in presets:
        ids = [tokenizer.bos_token_id] + tokenizer(p["prompt"], add_special_tokens=False).input_ids
        probs = model(torch.tensor([ids])).logits[0, -1].softmax(-1)
        answer = _single_token(tokenizer, p["answer"])
        assert int(probs.argmax()) == answer, (p["name"], tokenizer.decode([int(probs.argmax())]), float(probs[answer]))
        assert float(probs[answer]) > 0.1, p["name"]


def test_induction_preset_answer_continues_the_repeat(tokenizer, presets):
    # The answer is the token that followed the current token's earlier occurrence.
    p = next(p for p in presets if "induction" in p["name"].lower())
    ids = tokenizer(p["prompt"], add_special_tokens=False).input_ids
    last = ids[-1]
    earlier = [i for i in range(len(ids) - 1) if ids[i] == last]
    assert earlier, "the last token must have appeared before"
    assert ids[earlier[0] + 1] == _single_token(tokenizer, p["answer"])

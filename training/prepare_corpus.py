"""Prepare the bundled model's held-out split as the app's default corpus (run once).

    .venv/bin/python -m training.prepare_corpus [--check]

Reads the held-out standard-library files (the split `train_default_model.stdlib_files`
defines: crc32(relative path) % 20 == 0), tokenizes each with the bundled tokenizer, and
writes one stream, each file followed by `<|endoftext|>` (id 0), exactly as the training
script built its held-out stream, to

  lens_core/default_model/corpus_heldout.safetensors   {"stream": int16 [n_tokens]}
  lens_core/default_model/corpus_heldout.json          files, their offsets and sha256

`lens_core.corpus.load_default_corpus()` cuts the stream into BOS-first windows. The file
list must equal the one recorded in `training/run_stats.json` (the model card's list):
another Python version's standard library would give another corpus, and the script
refuses. `--check` only compares what would be written with what is shipped.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
OUT_DIR = REPO / "lens_core" / "default_model"


def build() -> tuple[torch.Tensor, dict]:
    from tokenizers import Tokenizer

    from lens_core.corpus import vocab_digest
    from training.train_default_model import read_text, stdlib_files

    root, _, held = stdlib_files()
    names = [p.relative_to(root).as_posix() for p in held]
    expected = json.loads((REPO / "training" / "run_stats.json").read_text())["held_out_files"]
    if names != expected:
        missing, extra = sorted(set(expected) - set(names)), sorted(set(names) - set(expected))
        raise SystemExit(f"the local standard library ({root}) does not give the model card's held-out files: "
                         f"missing {missing}, extra {extra}")
    tok = Tokenizer.from_file(str(OUT_DIR / "tokenizer.json"))
    ids: list[int] = []
    documents = []
    for path, name in zip(held, names):
        text = read_text(path)
        file_ids = tok.encode(text).ids + [0]
        documents.append({"name": name, "start": len(ids), "n_tokens": len(file_ids),
                          "sha256": hashlib.sha256(text.encode()).hexdigest()})
        ids.extend(file_ids)
    stream = torch.tensor(ids, dtype=torch.int16)
    assert int(stream.max()) < 2**15 and int(stream.min()) >= 0
    index = {
        "description": "Held-out split of the bundled model's training data (Python 3.11.7 stdlib files with "
                       "crc32(relative path) % 20 == 0), each file followed by <|endoftext|> (id 0).",
        "bos_token_id": 0,
        "vocab_size": tok.get_vocab_size(),
        "vocab_sha256": vocab_digest(tok.get_vocab()),
        "n_tokens": len(ids),
        "stream_sha256": hashlib.sha256(stream.numpy().tobytes()).hexdigest(),
        "documents": documents,
    }
    return stream, index


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare with the shipped files, write nothing")
    args = parser.parse_args(argv)
    stream, index = build()
    tokens_file, index_file = OUT_DIR / "corpus_heldout.safetensors", OUT_DIR / "corpus_heldout.json"
    if args.check:
        shipped = json.loads(index_file.read_text())
        same = shipped["stream_sha256"] == index["stream_sha256"] and shipped["documents"] == index["documents"]
        print("shipped corpus matches" if same else "shipped corpus DIFFERS from a fresh preparation")
        return 0 if same else 1
    from safetensors.torch import save_file

    save_file({"stream": stream}, str(tokens_file))
    index_file.write_text(json.dumps(index, indent=1) + "\n")
    print(f"{len(index['documents'])} files, {index['n_tokens']:,} tokens -> {tokens_file.name} "
          f"({tokens_file.stat().st_size:,} bytes), {index_file.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Where one ``HookedTransformer.from_pretrained`` + first forward spends its time, in a fresh process.

    .venv/bin/python -m bench.load_breakdown DIR    (from the repository root; ``bench.forward --breakdown`` runs it
                                                     on its GPT-2-small-shaped directory)

Each step of the loader is timed by wrapping the function that does it (this script only: the library is
unchanged): wall milliseconds, CPU milliseconds (user + system, all threads: above the wall time when
torch's intra-op threads share the work) and minor page faults (each one a fresh 4 KiB page of memory,
or a page of the mapped checkpoint; their cost is the system time). "rest" is what no listed step
covers (below zero when a step runs inside another: AutoTokenizer reads the config through
AutoConfig, a second call in the config row).
``bench.forward`` times the floor (fresh memory for every weight) in its own fresh processes.
"""

from __future__ import annotations

import resource
import sys
import time

CHILD_IMPORTS = "import torch, transformers; from transformers import AutoConfig, AutoTokenizer"  # not part of a load


class Steps:
    """Wall, CPU and fault counts per step, summed over calls; nested steps are counted in their parent too."""

    def __init__(self) -> None:
        self.rows: dict[str, list[float]] = {}

    @staticmethod
    def now() -> tuple[float, float, int]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return time.perf_counter(), usage.ru_utime + usage.ru_stime, usage.ru_minflt

    def wrap(self, owner, attribute: str, label: str) -> None:
        inner = getattr(owner, attribute)

        def timed(*args, **kwargs):
            start = self.now()
            try:
                return inner(*args, **kwargs)
            finally:
                end = self.now()
                row = self.rows.setdefault(label, [0.0, 0.0, 0])
                for i in range(3):
                    row[i] += end[i] - start[i]

        setattr(owner, attribute, timed)


def main() -> None:
    directory = sys.argv[1]
    exec(CHILD_IMPORTS)
    import torch
    from transformers import AutoConfig, AutoTokenizer

    from lens_core import HookedTransformer, loading, processing

    steps = Steps()
    steps.wrap(loading, "resolve_source", "find the directory")
    steps.wrap(AutoConfig, "from_pretrained", "config (AutoConfig)")
    steps.wrap(AutoTokenizer, "from_pretrained", "tokenizer (AutoTokenizer)")
    steps.wrap(loading, "open_state_dict", "open + map the safetensors")
    family_for = loading.family_for

    def timed_family(model_type):
        family = family_for(model_type)

        class Family:  # the family module with its convert timed
            PREFIXES, config_from_hf = family.PREFIXES, family.config_from_hf

        Family.convert = family.convert
        steps.wrap(Family, "convert", "convert (family layout)")
        return Family

    loading.family_for = timed_family
    for name, label in [("_fold_final_norm", "fold ln_final into W_U"), ("_center_embeddings", "center W_E, W_pos"),
                        ("_center_unembed", "center W_U"), ("_fold_block_norms", "fold ln1/ln2 into W_QKV/W_in"),
                        ("_center_block_writers", "center W_O, W_out, biases"),
                        ("_fold_value_biases", "fold value biases")]:
        steps.wrap(processing, name, "  " + label)
    steps.wrap(loading, "process_weights", "process (all steps)")
    steps.wrap(HookedTransformer, "__init__", "build the module")
    steps.wrap(loading, "load_weights", "check + assign the weights")
    steps.wrap(HookedTransformer, "to", "model.to(dtype, device)")
    tokens = torch.randint(0, 50257, (1, 16), generator=torch.Generator().manual_seed(0))
    start = steps.now()
    model = HookedTransformer.from_pretrained(directory)
    loaded = steps.now()
    with torch.inference_mode():
        model(tokens)
    done = steps.now()
    steps.rows["first forward (16 tokens)"] = [done[i] - loaded[i] for i in range(3)]
    covered = [sum(row[i] for label, row in steps.rows.items() if not label.startswith(" ") and "forward" not in label)
               for i in range(3)]
    steps.rows["rest of from_pretrained"] = [loaded[i] - start[i] - covered[i] for i in range(3)]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} intra-op threads; step: wall ms / CPU ms / minor faults")
    for label, (wall, cpu, faults) in steps.rows.items():
        print(f"  {label:<34} {wall * 1e3:7.1f} {cpu * 1e3:7.1f} {faults:8d}")
    print(f"  {'= load':<34} {(loaded[0] - start[0]) * 1e3:7.1f} {(loaded[1] - start[1]) * 1e3:7.1f} {loaded[2] - start[2]:8d}")
    print(f"  {'= load + first forward':<34} {(done[0] - start[0]) * 1e3:7.1f} {(done[1] - start[1]) * 1e3:7.1f} "
          f"{done[2] - start[2]:8d}")


if __name__ == "__main__":
    main()

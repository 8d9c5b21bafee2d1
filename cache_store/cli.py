"""``python -m cache_store {warm,stats,clear,weights}``: fill, inspect or empty the result cache; list or
empty the processed-weight cache (``weights``).

The result cache's directory is ``--dir``, else ``$CIRCUIT_EXPLORER_CACHE_DIR``, else
``~/.cache/circuit-explorer/results``. The weight cache's is ``weights --dir``, else
``$CIRCUIT_EXPLORER_WEIGHT_CACHE``, else ``~/.cache/circuit-explorer/weights`` (``lens_core.weight_cache``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Sequence

from .store import ResultStore, default_cache_dir
from .warm import WARMABLE, warm


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cache_store", description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=None, help=f"cache directory (default: {default_cache_dir()})")
    parser.add_argument(
        "--size-limit-mb", type=int, default=None, help="set the size limit (default: keep the directory's own)"
    )
    parser.add_argument("--redis", metavar="URL", default=None,
                        help="use the shared Redis store at URL (e.g. redis://redis:6379/0) instead of a directory")
    commands = parser.add_subparsers(dest="command", required=True)

    warm_cmd = commands.add_parser("warm", help="compute and store results for a list of prompts")
    warm_cmd.add_argument("--model", default="default", help="name or local directory for HookedTransformer.from_pretrained")
    warm_cmd.add_argument("--prompts", type=Path, required=True, help="text file, one prompt per line")
    warm_cmd.add_argument("--experiments", default=",".join(WARMABLE), help="comma-separated (default: %(default)s)")
    warm_cmd.add_argument("--dtype", default="float32")
    warm_cmd.add_argument("--device", default="cpu")

    stats_cmd = commands.add_parser("stats", help="entries, bytes, hits, misses")
    stats_cmd.add_argument("--json", action="store_true", help="print one JSON object")
    commands.add_parser("clear", help="remove every entry")

    weights_cmd = commands.add_parser("weights", help="list the processed-weight cache's entries (lens_core.weight_cache)")
    weights_cmd.add_argument("--dir", dest="weights_dir", type=Path, default=None,
                             help="the weight cache directory (default: $CIRCUIT_EXPLORER_WEIGHT_CACHE, else "
                                  "~/.cache/circuit-explorer/weights)")
    removal = weights_cmd.add_mutually_exclusive_group()
    removal.add_argument("--prune", action="store_true",
                         help="remove the entries no load can use again (checkpoint changed or gone, other library code)")
    removal.add_argument("--clear", action="store_true", help="remove every entry")
    return parser


def weights_command(args: argparse.Namespace) -> int:
    from lens_core import weight_cache

    root = args.weights_dir.expanduser() if args.weights_dir else weight_cache.cache_root(True)
    rows = weight_cache.describe(root)
    gone = [row for row in rows if args.clear or (args.prune and not row["current"])]
    for row in gone:
        Path(row["path"]).unlink(missing_ok=True)
    kept = [row for row in rows if row not in gone]
    for row in kept:
        print(f"{row['mib']:9.1f} MiB  {row['used']}  {row['dtype']:<8}  {'current' if row['current'] else 'stale  '}  "
              f"{row['checkpoint']}  (processing: {row['processing']})")
    print(f"{root}: {len(kept)} entries, {sum(r['mib'] for r in kept):.1f} MiB of at most "
          f"{weight_cache.limit_bytes() / 2**20:.0f} MiB"
          + (f"; removed {len(gone)} ({sum(r['mib'] for r in gone):.1f} MiB)" if gone else ""))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "weights":
        return weights_command(args)
    directory = args.dir if args.dir is not None else default_cache_dir()
    limit = None if args.size_limit_mb is None else args.size_limit_mb * 2**20
    if args.redis:
        from .redis_backend import RedisResultStore

        store = RedisResultStore(args.redis)
    else:
        store = ResultStore(directory, size_limit_bytes=limit)
    try:
        if args.command == "stats":
            stats = store.stats().as_dict()
            if args.json:
                print(json.dumps(stats))
            else:
                for name, value in stats.items():
                    print(f"{name:>16}: {value:.3f}" if isinstance(value, float) else f"{name:>16}: {value}")
        elif args.command == "clear":
            print(f"removed {store.clear()} entries from {store.directory}")
        elif args.command == "warm":
            from lens_core import HookedTransformer  # heavy: only for warm

            try:
                model = HookedTransformer.from_pretrained(args.model, dtype=args.dtype, device=args.device)
            except Exception as error:  # a bad name or directory: say so, no traceback
                print(f"cannot load model {args.model!r}: {error}", file=sys.stderr)
                return 2
            prompts = args.prompts.read_text(encoding="utf-8").splitlines()
            names = [n.strip() for n in args.experiments.split(",") if n.strip()]
            warm(store, model, prompts, names)
        return 1 if store.degraded else 0
    finally:
        store.close()

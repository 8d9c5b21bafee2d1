"""The Ray Serve deployment that holds the models and runs experiments for the app replicas.

Each replica of ``ModelWorker`` owns a :class:`lens_core.pool.ModelPool`: a model is
loaded once per replica (by name and dtype, on the replica's device), at most
``max_models`` stay loaded, and at most ``max_runs_per_device`` experiments run at
once (the rest wait in the pool, as they would in-process). With GPUs, give each
replica one (``num_gpus=1``) and as many replicas as GPUs.

:meth:`ModelWorker.run` takes what the result cache keys (the experiment's registry
name and its tokenized request) plus the model's weights hash, and streams events:
``("progress", done, total)`` while a sweep runs, then ``("result", blob)`` with the
result encoded by :func:`cache_store.codec.encode_result` (no pickle in the result),
or ``("error", type name, message)``. A replica whose weights differ from the app's
(another revision of the model) refuses, so a cached result is never keyed to the
wrong weights.

Deploy on a running cluster::

    python -m workers.ray_serve --address auto --num-gpus 1 --replicas 1
"""

from __future__ import annotations

import argparse
import inspect
import logging
import os
import queue
import threading
from typing import Any, Iterator

from ray import serve

from cache_store.codec import encode_result
from lens_core.experiments import REGISTRY, REQUEST_TYPES
from lens_core.pool import ModelPool

log = logging.getLogger(__name__)
DEFAULT_APP = "circuit-explorer"


class WeightsMismatchError(RuntimeError):
    """The worker's copy of a model differs from the app's."""


def accepts_progress(fn: Any) -> bool:
    return "progress" in inspect.signature(fn).parameters


@serve.deployment(name="ModelWorker", max_ongoing_requests=32, ray_actor_options={"num_cpus": 1})
class ModelWorker:
    def __init__(self, max_models: int = 2, max_runs_per_device: int = 2, device: str = "auto") -> None:
        self.pool = ModelPool(max_models=max_models, max_runs_per_device=max_runs_per_device)
        self.device = device

    def health(self) -> dict[str, Any]:
        """This replica's process id and loaded models (for operators and the fault tests)."""
        return {"pid": os.getpid(), "loaded": [list(k) for k in self.pool.loaded_keys()]}

    def run(self, experiment: str, model_name: str, dtype: str, weights_hash: str | None, request: Any,
            with_progress: bool = False) -> Iterator[tuple]:
        events: queue.SimpleQueue = queue.SimpleQueue()

        def work() -> None:
            try:
                fn = REGISTRY.get(experiment)
                if fn is None or type(request) is not REQUEST_TYPES.get(experiment):
                    raise ValueError(f"unknown experiment {experiment!r} or a request of the wrong type")
                model = self.pool.get(model_name, dtype, self.device)
                if weights_hash is not None and model.weights_hash() != weights_hash:
                    raise WeightsMismatchError(
                        f"the model worker's {model_name!r} has other weights than the app's; deploy the same model files")
                kwargs = {}
                if with_progress and accepts_progress(fn):
                    kwargs["progress"] = lambda done, total: events.put(("progress", int(done), int(total)))
                with self.pool.run_slot(self.device, what=f"the {experiment} run"):
                    result = fn(model, request, **kwargs)
                events.put(("result", encode_result(result)))
            except BaseException as exc:  # noqa: BLE001 - every failure goes back to the caller as data
                log.exception("experiment %s failed", experiment)
                events.put(("error", type(exc).__name__, str(exc)))

        threading.Thread(target=work, name=f"run-{experiment}", daemon=True).start()
        while True:
            event = events.get()
            yield event
            if event[0] != "progress":
                return


def build_app(max_models: int = 2, max_runs_per_device: int = 2, device: str = "auto", replicas: int = 1,
              num_gpus: float = 0, num_cpus: float = 1):
    options = {"num_cpus": num_cpus, **({"num_gpus": num_gpus} if num_gpus else {})}
    return ModelWorker.options(num_replicas=replicas, ray_actor_options=options).bind(
        max_models=max_models, max_runs_per_device=max_runs_per_device, device=device)


def main(argv: list[str] | None = None) -> int:
    import ray

    parser = argparse.ArgumentParser(prog="python -m workers.ray_serve", description=__doc__.splitlines()[0])
    parser.add_argument("--address", default="auto", help="the Ray cluster (default: the node this runs on)")
    parser.add_argument("--app", default=DEFAULT_APP, help="Serve application name ([compute] ray_app)")
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--num-gpus", type=float, default=0, help="GPUs per replica (1 = one replica per GPU)")
    parser.add_argument("--num-cpus", type=float, default=1)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--max-models", type=int, default=2)
    parser.add_argument("--max-runs-per-device", type=int, default=2)
    args = parser.parse_args(argv)
    ray.init(address=args.address)
    serve.start(proxy_location="Disabled")  # the app talks to the deployment through handles, not HTTP
    serve.run(build_app(args.max_models, args.max_runs_per_device, args.device, args.replicas, args.num_gpus,
                        args.num_cpus), name=args.app, route_prefix=None)
    print(f"deployed {args.app!r}: {args.replicas} ModelWorker replica(s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

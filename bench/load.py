"""N concurrent sessions against a locally started app: errors, p50/p95 time to chart, server memory.

    .venv/bin/python -m bench.load --sessions 8 --backend local      (from the repository root)
    .venv/bin/python -m bench.load --sessions 16 --backend ray

Starts ``streamlit run app.py`` on a free 127.0.0.1 port (bundled model, a fresh disk
cache) and, for ``--backend ray``, a local Ray instance in this process with the
``ModelWorker`` deployment (``--ray-cpus`` replicas), which the app reaches through
``[compute] backend = "ray"``. Nothing listens beyond 127.0.0.1; sessions, views and
the whole run are bounded (``--sessions`` <= 32, ``--deadline-s`` <= 600).

The client speaks Streamlit's own websocket protocol (``/_stcore/stream``, protobuf
``BackMsg``/``ForwardMsg``), one connection per session, all in one asyncio loop: the
server does exactly the work a browser session causes (script run, experiment, chart
serialisation), while the client costs almost nothing. Headless Chromium x 16 would
measure the browsers on a 2-core machine, and ``AppTest`` runs no server at all.

Each session opens ``--views`` page views in turn (a prompt of its own: cold, every
view computes), then the same views again (warm: every view is a result-cache hit).
"app CPU s/view" is the app server process's CPU time over the phase divided by its views
(robust to a busy machine, unlike wall time). "Time to chart" is from sending the page request
to the first plotly chart arriving;
an error is an exception element, an error alert, or no chart before the deadline.
The reference in the same run is one session alone (N = 1), so the printed ratio
p50(N) / p50(1) is the slowdown from sharing the server.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import psutil
import websockets
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "tests" / "support"))
from app_server import AppServer  # noqa: E402  (the test suite's local server start-up, shared)
from app_settings import write_settings  # noqa: E402
WORDS = ["cat", "dog", "bird", "fish", "tree", "house", "river", "stone", "cloud", "lamp", "door", "book",
         "chair", "road", "field", "hill"]


def prompt_for(session: int, view: int) -> str:
    a, b = WORDS[session % len(WORDS)], WORDS[(session * 7 + view * 3 + 1) % len(WORDS)]
    return f"The {a} sat by the {b} number {session}-{view}. The {a} sat by the"


def bench_settings(directory: Path, backend: str, ray_address: str | None) -> Path:
    sections = {"compute": f'backend = "ray"\nray_address = "{ray_address}"\nray_app = "bench-load"\ntimeout_s = 120'} \
        if backend == "ray" else {}
    return write_settings(directory / "settings.toml", directory / "cache", cache="size_limit_mb = 512", **sections)


class App(AppServer):
    """The app under load (tests/support's server), with its memory and CPU sampled."""

    def __init__(self, settings: Path, log: Path) -> None:
        super().__init__(settings, log)
        self.wait_healthy(120)
        self.ps = psutil.Process(self.proc.pid)
        self.peak_rss = self.rss()

    def rss(self) -> int:
        try:
            return self.ps.memory_info().rss
        except psutil.Error:
            return 0

    def cpu_seconds(self) -> float:
        try:
            times = self.ps.cpu_times()
            return times.user + times.system
        except psutil.Error:
            return 0.0

    def sample(self) -> None:
        self.peak_rss = max(self.peak_rss, self.rss())


async def page_view(port: int, page: str, prompt: str, deadline: float) -> tuple[float | None, str | None]:
    """(seconds to the first chart, error or None) for one fresh session opening ``page`` with ``prompt``."""
    url = f"ws://127.0.0.1:{port}/_stcore/stream"
    message = BackMsg()
    message.rerun_script.query_string = urllib.parse.urlencode({"prompt": prompt})
    message.rerun_script.page_name = page
    try:
        async with websockets.connect(url, subprotocols=["streamlit"], max_size=2**26) as ws:
            start = time.monotonic()
            await ws.send(message.SerializeToString())
            chart_at = None
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return chart_at, "deadline reached before the page finished"
                data = await asyncio.wait_for(ws.recv(), timeout=remaining)
                forward = ForwardMsg()
                forward.ParseFromString(data)
                kind = forward.WhichOneof("type")
                if kind == "delta" and forward.delta.WhichOneof("type") == "new_element":
                    element = forward.delta.new_element
                    which = element.WhichOneof("type")
                    if which == "plotly_chart" and chart_at is None:
                        chart_at = time.monotonic() - start
                    elif which == "exception":
                        return chart_at, f"exception: {element.exception.message[:200]}"
                    elif which == "alert" and element.alert.format == element.alert.ERROR:
                        return chart_at, f"error shown: {element.alert.body[:200]}"
                elif kind == "script_finished":
                    status = forward.script_finished
                    if status in (forward.FINISHED_SUCCESSFULLY, forward.FINISHED_WITH_COMPILE_ERROR):
                        return chart_at, None if chart_at is not None else "the page finished without a chart"
    except (OSError, asyncio.TimeoutError, websockets.WebSocketException) as error:
        return None, f"{type(error).__name__}: {error}"


async def run_sessions(app: App, n: int, views: int, page: str, deadline: float, salt: int) -> dict:
    async def session(i: int) -> list[tuple[float | None, str | None]]:
        out = []
        for v in range(views):
            out.append(await page_view(app.port, page, prompt_for(i + salt, v), deadline))
        return out

    async def sampler(stop: asyncio.Event) -> None:
        while not stop.is_set():
            app.sample()
            await asyncio.sleep(0.2)

    results = {}
    for phase in ("cold", "warm"):
        stop = asyncio.Event()
        watcher = asyncio.create_task(sampler(stop))
        started, cpu = time.monotonic(), app.cpu_seconds()
        done = await asyncio.gather(*(session(i) for i in range(n)))
        stop.set()
        await watcher
        views_done = [r for s in done for r in s]
        times = [t for t, err in views_done if t is not None and err is None]
        results[phase] = {
            "views": len(views_done), "errors": [err for _, err in views_done if err],
            "p50": statistics.median(times) if times else float("nan"),
            "p95": statistics.quantiles(times, n=20)[18] if len(times) >= 2 else (times[0] if times else float("nan")),
            "wall": time.monotonic() - started,
            "cpu_per_view": (app.cpu_seconds() - cpu) / max(1, len(views_done)),
        }
    return results


def start_ray(cpus: int) -> str:
    import ray
    from ray import serve

    from workers.ray_serve import build_app

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1",
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    serve.start(proxy_location="Disabled")
    serve.run(build_app(max_models=1, max_runs_per_device=2, device="cpu", replicas=cpus), name="bench-load",
              route_prefix=None)
    return ray.get_runtime_context().gcs_address


def ray_workers_rss() -> int:
    me = psutil.Process()
    total = 0
    for child in me.children(recursive=True):
        try:
            if "ServeReplica" in " ".join(child.cmdline()) or "ray::" in child.name():
                total += child.memory_info().rss
        except psutil.Error:
            pass
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, nargs="+", default=[8, 16], help="N values to run (each <= 32)")
    parser.add_argument("--backend", choices=["local", "ray"], default="local")
    parser.add_argument("--page", default="logit_lens", help="URL path of the page (default: %(default)s)")
    parser.add_argument("--views", type=int, default=2, help="page views per session per phase (<= 5)")
    parser.add_argument("--deadline-s", type=float, default=300, help="bound on each N's run (<= 600)")
    parser.add_argument("--ray-cpus", type=int, default=1, help="Ray CPUs = ModelWorker replicas (ray backend)")
    args = parser.parse_args(argv)
    if any(n < 1 or n > 32 for n in args.sessions) or not 1 <= args.views <= 5 or not 0 < args.deadline_s <= 600:
        parser.error("sessions must be 1..32, views 1..5, deadline-s at most 600")

    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp:
        tmp = Path(tmp)
        ray_address = start_ray(args.ray_cpus) if args.backend == "ray" else None
        app = App(bench_settings(tmp, args.backend, ray_address), tmp / "app.log")
        try:
            idle = app.rss()
            # Warm-up: imports, the model load and the first forward pass are not part of any figure.
            asyncio.run(page_view(app.port, args.page, "Warm up the server.", time.monotonic() + args.deadline_s))
            reference = asyncio.run(run_sessions(app, 1, args.views, args.page, time.monotonic() + args.deadline_s, 1000))
            print(f"backend={args.backend} page={args.page} views/session/phase={args.views} "
                  f"app RSS after start {idle / 2**20:.0f} MiB")
            print(f"{'N':>3} {'phase':>5} {'views':>5} {'errors':>6} {'p50 s':>7} {'p95 s':>7} {'p50/p50(1)':>10} "
                  f"{'wall s':>7} {'app CPU s/view':>14} {'app peak MiB':>12} {'ray MiB':>8}")
            for n, res in [(1, reference)] + [(n, None) for n in args.sessions]:
                if res is None:
                    res = asyncio.run(run_sessions(app, n, args.views, args.page, time.monotonic() + args.deadline_s,
                                                   100 * n))
                for phase in ("cold", "warm"):
                    r = res[phase]
                    ratio = r["p50"] / reference[phase]["p50"] if reference[phase]["p50"] else float("nan")
                    ray_mib = ray_workers_rss() / 2**20 if args.backend == "ray" else 0
                    print(f"{n:>3} {phase:>5} {r['views']:>5} {len(r['errors']):>6} {r['p50']:>7.2f} {r['p95']:>7.2f} "
                          f"{ratio:>10.2f} {r['wall']:>7.1f} {r['cpu_per_view']:>14.3f} "
                          f"{app.peak_rss / 2**20:>12.0f} {ray_mib:>8.0f}")
                    for err in sorted(set(r["errors"]))[:3]:
                        print(f"      error: {err}")
        finally:
            app.stop()
            if ray_address:
                import ray
                from ray import serve

                serve.shutdown()
                ray.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

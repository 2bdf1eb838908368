"""What a route adds to a request whose first target answers, timed in-process.

The wrk runs of `bench/otari.sh route` measure it end to end, but on a busy machine their
noise (tenths of a millisecond) is larger than what is measured; this times the routing
work alone, as otari_server.generation.routed does it for a request whose key has no
allow-list: the target survey (a cached price lookup per target), the plan, the dearest
target and the body copy for admission. The worst case is computed on both paths (admit
takes the route's), so it is left out.

    python bench/route_overhead.py [--runs 20000]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from starlette.testclient import TestClient

from otari_server import settings
from otari_server.access.auth import MASTER
from otari_server.app import create_app
from otari_server.generation.endpoints import CHAT
from otari_server.generation.proxy import worst_case
from otari_server.routing.order import plan
from otari_server.routing.survey import survey
from otari_server.runtime import Runtime
from otari_server.storage.tables import utcnow

RAW = b'{"model":"bench","messages":[{"role":"user","content":"Hello"}],"max_tokens":64}'


async def once(runtime: Runtime) -> float:
    """Seconds the routing work of one request takes."""
    route = runtime.routes.routes["bench"]
    body = {"model": "bench", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 64}
    worst = worst_case(CHAT, RAW, body, 4096)
    started = time.perf_counter()
    found = await survey(runtime, route, CHAT.billing, utcnow(), MASTER)
    laid = plan(route, runtime.cooldowns, time.monotonic(), runtime.routes.rng, found.unusable)
    dearest = max(laid.tries, key=lambda t: found.prices[t.model].cost(worst))  # type: ignore[union-attr]
    dict(body, model=dearest.model)
    return time.perf_counter() - started


async def measure(runtime: Runtime, runs: int) -> list[float]:
    for _ in range(1000):  # warm the price cache and the interpreter
        await once(runtime)
    return [await once(runtime) for _ in range(runs)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        resolved = settings.load(
            None,
            {
                "database_url": f"sqlite:///{tmp}/otari.db",
                "master_key": "sk-bench-master",
                "bootstrap_api_key": False,
                "log_level": "warning",
                "providers": {
                    "mock": {"type": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key": "x"},
                    "mock2": {
                        "type": "openai",
                        "base_url": "http://127.0.0.1:9/v1",
                        "api_key": "x",
                    },
                },
                "routes": {"bench": {"targets": ["mock:gpt-4o-mini", "mock2:gpt-4o-mini"]}},
            },
            environ={},
        )
        headers = {"Authorization": "Bearer sk-bench-master"}
        with TestClient(create_app(resolved)) as client:
            for provider in ("mock", "mock2"):
                client.post(
                    "/v1/pricing",
                    json={
                        "model_key": f"{provider}:gpt-4o-mini",
                        "input_price_per_million": 0.15,
                        "output_price_per_million": 0.6,
                    },
                    headers=headers,
                )
            runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
            timings = client.portal.call(measure, runtime, args.runs)  # type: ignore[union-attr]
    timings.sort()
    print(
        f"route overhead over {args.runs} runs: p50 {statistics.median(timings) * 1e3:.4f} ms, "
        f"p90 {timings[int(len(timings) * 0.9)] * 1e3:.4f} ms, "
        f"min {timings[0] * 1e3:.4f} ms"
    )


if __name__ == "__main__":
    main()

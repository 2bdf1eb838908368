"""Cold start of the `otari` CLI: `otari --help` and `otari keys list -o json` against a gateway.

    python bench/cli_startup.py [--runs 30] [--url URL --master-key KEY]

Without --url it runs `otari init && otari start` in a throwaway HOME and stops it afterwards.
Each command runs as a fresh process (what a user or a shell script pays); prints a Markdown
table of median, p90 and min wall-clock milliseconds, with `python -c pass` as a floor.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def timings(command: list[str], env: dict[str, str], runs: int) -> list[float]:
    """Wall-clock milliseconds of `runs` executions (after one warm-up for the page cache)."""
    result: list[float] = []
    for i in range(runs + 1):
        start = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, timeout=120)
        elapsed = (time.perf_counter() - start) * 1000
        if done.returncode != 0:
            raise SystemExit(f"{command} failed: {done.stderr.decode()}")
        if i:
            result.append(elapsed)
    return result


def row(name: str, values: list[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[max(0, round(0.9 * len(ordered)) - 1)]
    return f"| `{name}` | {statistics.median(ordered):.0f} | {p90:.0f} | {ordered[0]:.0f} |"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def local_gateway(otari: str) -> Iterator[dict[str, str]]:
    """A daemon in a temporary HOME; yields the environment that reaches it."""
    with tempfile.TemporaryDirectory() as root:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTARI_")}
        for name in (
            "HOME",
            "XDG_CONFIG_HOME",
            "XDG_STATE_HOME",
            "XDG_DATA_HOME",
            "XDG_CACHE_HOME",
        ):
            env[name] = str(Path(root) / name.lower())
        for args in (["init", "--port", str(free_port())], ["start"]):
            subprocess.run([otari, *args], env=env, check=True, capture_output=True, timeout=120)
        try:
            yield env
        finally:
            subprocess.run([otari, "stop"], env=env, capture_output=True, timeout=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--url")
    parser.add_argument("--master-key")
    options = parser.parse_args()
    otari = shutil.which("otari")
    if otari is None:
        raise SystemExit("the otari console script is not installed (pip install -e .)")

    @contextmanager
    def gateway() -> Iterator[dict[str, str]]:
        if options.url:
            yield {
                **os.environ,
                "OTARI_URL": options.url,
                "OTARI_MASTER_KEY": options.master_key or "",
            }
        else:
            with local_gateway(otari) as env:
                yield env

    with gateway() as env:
        lines = [
            row("python -c pass", timings([sys.executable, "-c", "pass"], env, options.runs)),
            row("otari --help", timings([otari, "--help"], env, options.runs)),
            row(
                "otari keys list -o json",
                timings([otari, "keys", "list", "-o", "json"], env, options.runs),
            ),
        ]
    print(f"{options.runs} runs each, Python {sys.version.split()[0]}, {sys.platform}\n")
    print("| command | median ms | p90 ms | min ms |\n|---|---|---|---|")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

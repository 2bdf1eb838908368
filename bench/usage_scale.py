"""Production-size usage data: page, summary, CLI export and hot-path timings on both databases.

Builds 1,000 users, 5,000 keys and 1,000,000 usage rows over 90 days (sizes are flags) on a
SQLite file and/or a fresh PostgreSQL schema, starts `otari serve` on it in front of a fake
OpenAI upstream, and prints the median of several runs of:

- the first page of GET /v1/usage, a deep page by cursor (and by skip, for comparison),
- one week of one user's usage,
- a month's summary by user and by day (GET /v1/usage/summary),
- `otari usage --all -o json` to /dev/null: wall time and peak memory (RSS),
- budgeted chat completions p50, alone and while another client loops deep usage reads.

    python bench/usage_scale.py --db sqlite --db postgresql \\
        --pg-url postgresql://otari:otari@127.0.0.1:5432/otari_test

Every wait is bounded (`--deadline` seconds per backend); the created schema is dropped and
the SQLite file deleted at the end.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from otari_server.accounting import usage_totals  # noqa: E402
from otari_server.storage import db  # noqa: E402
from tests.support.fakes import FakeOpenAI  # noqa: E402  (a real OpenAI-wire server on loopback)

MASTER = "sk-bench-master-usage"
UPSTREAM_KEY = "sk-bench-upstream"
MODELS = [f"fake:model-{i:03d}" for i in range(200)]


def timed(call: Callable[[], object], runs: int) -> float:
    """Median milliseconds of `runs` calls (after one warm-up)."""
    call()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def usage_rows(
    rows: int, users: int, keys: int, now: datetime, seed: int = 7
) -> Iterator[tuple[object, ...]]:
    """(id, user, key, timestamp, model, prompt, completion, cost, status) tuples.

    Cost is in 1e-10 units (what SQLite stores): $0.15 and $0.60 per million tokens.
    """
    rng = random.Random(seed)
    span = 90 * 86400
    for i in range(rows):
        key = rng.randrange(keys)
        prompt, completion = rng.randrange(10, 4000), rng.randrange(1, 1000)
        yield (
            f"{i:08d}-{uuid.UUID(int=rng.getrandbits(128)).hex[:16]}",
            f"user-{key % users:04d}",
            f"key-{key:05d}",
            now - timedelta(seconds=rng.random() * span),
            rng.choice(MODELS),
            prompt,
            completion,
            prompt * 1500 + completion * 6000,
            "error" if rng.random() < 0.02 else "success",
        )


def load_sqlite(url: str, rows: int, users: int, keys: int, now: datetime) -> None:
    import sqlite3

    path = str(make_url(url).database)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    _load_people(
        lambda sql, params: conn.executemany(sql, params),
        users,
        keys,
        now,
        lambda ts: ts.strftime("%Y-%m-%d %H:%M:%S.%f"),
        "?",
    )
    batch: list[tuple[object, ...]] = []
    sql = (
        "INSERT INTO usage_logs (id, user_id, api_key_id, timestamp, model, provider, "
        "endpoint, prompt_tokens, completion_tokens, total_tokens, cost, "
        "counts_toward_budget, status) VALUES (?,?,?,?,?,'fake','/v1/chat/completions',"
        "?,?,?,?,1,?)"
    )
    conn.execute("BEGIN")
    for rid, user, key, ts, model, prompt, completion, cost, status in usage_rows(
        rows, users, keys, now
    ):
        batch.append(
            (
                rid,
                user,
                key,
                ts.strftime("%Y-%m-%d %H:%M:%S.%f"),
                model,
                prompt,
                completion,
                prompt + completion,
                cost,
                status,
            )
        )
        if len(batch) == 50_000:
            conn.executemany(sql, batch)
            batch.clear()
    conn.executemany(sql, batch)
    conn.execute("COMMIT")
    conn.execute("ANALYZE")
    conn.close()


def load_postgres(url: str, rows: int, users: int, keys: int, now: datetime) -> None:
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        with conn.cursor() as cur:
            _load_people(
                lambda sql, params: cur.executemany(sql, params),
                users,
                keys,
                now,
                lambda ts: ts,
                "%s",
            )
            with cur.copy(
                "COPY usage_logs (id, user_id, api_key_id, timestamp, model, "
                "provider, endpoint, prompt_tokens, completion_tokens, "
                "total_tokens, cost, counts_toward_budget, status) "
                "FROM STDIN"
            ) as copy:
                for rid, user, key, ts, model, prompt, completion, cost, status in usage_rows(
                    rows, users, keys, now
                ):
                    copy.write_row(
                        (
                            rid,
                            user,
                            key,
                            ts,
                            model,
                            "fake",
                            "/v1/chat/completions",
                            prompt,
                            completion,
                            prompt + completion,
                            Decimal(cost).scaleb(-10),
                            True,
                            status,
                        )
                    )
        conn.commit()
        conn.execute("ANALYZE")


def _load_people(
    many: Callable[[str, list[tuple[object, ...]]], object],
    users: int,
    keys: int,
    now: datetime,
    stamp: Callable[[datetime], object],
    mark: str,
) -> None:
    values = ", ".join([mark] * 4)
    many(
        f"INSERT INTO users (user_id, spend, reserved, blocked, metadata, created_at, "
        f"updated_at) VALUES ({mark}, 0, 0, false, '{{}}', {mark}, {mark})",
        [(f"user-{u:04d}", stamp(now), stamp(now)) for u in range(users)],
    )
    many(
        f"INSERT INTO api_keys (id, key_hash, key_prefix, user_id, is_active, spend, "
        f"reserved, exclude_from_budget, metadata, created_at) VALUES ({values}, true, 0, 0, "
        f"false, '{{}}', {mark})",
        [
            (
                f"key-{k:05d}",
                uuid.uuid4().hex + uuid.uuid4().hex,
                "sk-bench",
                f"user-{k % users:04d}",
                stamp(now),
            )
            for k in range(keys)
        ],
    )


@contextmanager
def gateway(url: str, work: Path, upstream: str) -> Iterator[str]:
    """`otari serve` as its own process on the database; yields its base URL."""
    port = 18300 + random.randrange(500)
    config = work / "config.toml"
    config.write_text(
        f'database_url = "{url}"\nmaster_key = "{MASTER}"\nbootstrap_api_key = false\n'
        f'log_level = "warning"\nport = {port}\n[providers.fake]\ntype = "openai"\n'
        f'base_url = "{upstream}"\napi_key = "{UPSTREAM_KEY}"\n'
    )
    env = {**os.environ, "HOME": str(work), "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "otari_cli", "serve", "--config", str(config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(work / "otari.log", "w"),  # noqa: SIM115  (the daemon's log, for its life)
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/health/readiness", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        else:
            raise RuntimeError(f"gateway did not start; see {work / 'otari.log'}")
        yield base
    finally:
        proc.terminate()
        proc.wait(30)


def cursor_at(url: str, depth: int) -> str:
    """The opaque cursor continuing after the row at `depth` (newest first)."""
    engine = db.create_db_engine(url)
    try:
        with engine.connect() as conn:
            stamp, row_id = conn.execute(
                text(
                    "SELECT timestamp, id FROM usage_logs ORDER BY timestamp DESC, id DESC "
                    "LIMIT 1 OFFSET :depth"
                ),
                {"depth": depth},
            ).one()
    finally:
        engine.dispose()
    if isinstance(stamp, str):
        stamp = datetime.fromisoformat(stamp).replace(tzinfo=UTC)
    raw = json.dumps([stamp.astimezone(UTC).isoformat(), row_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def peak_rss_mib(pid: int) -> float:
    """The process's peak resident memory so far (VmHWM), in MiB; 0 once it has exited.

    Not the rusage of wait4: a child's ru_maxrss starts from its parent's RSS at fork
    (Linux keeps the old mm's high-water mark across exec), and this script is large after
    loading a million rows.
    """
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except FileNotFoundError:
        pass
    return 0.0


def cli_export(base: str, work: Path) -> tuple[float, float, int]:
    """`otari usage --all -o json` to a file: seconds, peak RSS in MiB, rows written."""
    out = work / "usage.json"
    env = {**os.environ, "HOME": str(work), "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    peak = 0.0
    with open(out, "w") as sink:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "otari_cli",
                "--url",
                base,
                "--master-key",
                MASTER,
                "--timeout",
                "60",
                "usage",
                "--all",
                "-o",
                "json",
            ],
            stdout=sink,
            env=env,
        )
        # VmHWM only grows: sampling it until the process exits finds its peak (a zombie's
        # status has no memory lines, so the last sample before exit counts).
        while proc.poll() is None:
            peak = max(peak, peak_rss_mib(proc.pid))
            time.sleep(0.05)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"otari usage --all failed with status {proc.returncode}")
    with open(out) as written:
        rows = sum(1 for line in written if line.startswith("{"))
    out.unlink()
    return seconds, peak, rows


def chat_p50(base: str, key: str, count: int) -> tuple[float, int]:
    """p50 ms of `count` sequential budgeted chat completions, and how many failed."""
    samples, failed = [], 0
    body = {"model": "fake:model-000", "messages": [{"role": "user", "content": "hi"}]}
    with httpx.Client(
        base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60
    ) as client:
        for _ in range(count):
            start = time.perf_counter()
            status = client.post("/v1/chat/completions", json=body).status_code
            samples.append((time.perf_counter() - start) * 1000)
            failed += status != 200
    return statistics.median(samples), failed


def run(kind: str, url: str, args: argparse.Namespace, work: Path) -> dict[str, object]:
    figures: dict[str, object] = {"database": kind}
    db.migrate(url)
    now = datetime.now(UTC)
    start = time.perf_counter()
    (load_sqlite if kind == "sqlite" else load_postgres)(url, args.rows, args.users, args.keys, now)
    figures["load s"] = round(time.perf_counter() - start, 1)
    # Rows loaded in bulk bypass the ledger, which keeps the totals for rows it writes.
    start = time.perf_counter()
    engine = db.create_db_engine(url)
    try:
        with engine.begin() as conn:
            usage_totals.rebuild(conn)
    finally:
        engine.dispose()
    figures["build usage totals s"] = round(time.perf_counter() - start, 1)
    deep = int(args.rows * 0.9)
    after = cursor_at(url, deep)
    master = {"Authorization": f"Bearer {MASTER}"}
    week_start = (now - timedelta(days=14)).isoformat()
    week_end = (now - timedelta(days=7)).isoformat()
    month = (now - timedelta(days=30)).isoformat()
    with (
        FakeOpenAI(api_key=UPSTREAM_KEY) as upstream,
        gateway(url, work, upstream.base_url) as base,
        httpx.Client(base_url=base, headers=master, timeout=120) as admin,
    ):

        def get(path: str, **params: str | int) -> Callable[[], object]:
            def call() -> object:
                response = admin.get(path, params=params)
                assert response.status_code == 200, response.text
                return response

            return call

        runs = args.runs
        figures["first page ms"] = timed(get("/v1/usage", limit=100), runs)
        figures[f"cursor page at {deep:,} ms"] = timed(
            get("/v1/usage", limit=100, after=after), runs
        )
        figures[f"skip page at {deep:,} ms"] = timed(get("/v1/usage", limit=100, skip=deep), 3)
        figures["user week ms"] = timed(
            get(
                "/v1/usage",
                user_id="user-0042",
                limit=1000,
                start_date=week_start,
                end_date=week_end,
            ),
            runs,
        )
        figures["month by user ms"] = timed(
            get("/v1/usage/summary", group_by="user", start_date=month), 5
        )
        figures["month by day ms"] = timed(
            get("/v1/usage/summary", group_by="day", start_date=month), 5
        )
        seconds, mib, rows = cli_export(base, work)
        assert rows == args.rows, (rows, args.rows)
        figures["usage --all s"] = round(seconds, 1)
        figures["usage --all peak MiB"] = round(mib)
        admin.post("/v1/budgets", json={"budget_id": "big", "max_budget": 1_000_000})
        admin.post("/v1/users", json={"user_id": "chatter", "budget_id": "big"})
        admin.post(
            "/v1/pricing",
            json={
                "model_key": "fake:model-000",
                "input_price_per_million": 1,
                "output_price_per_million": 2,
            },
        )
        key = admin.post("/v1/keys", json={"user_id": "chatter"}).json()["key"]
        figures["chat p50 ms (idle)"], _ = chat_p50(base, key, args.chats)
        stop = threading.Event()
        reads = [0, 0]

        def deep_reads() -> None:
            with httpx.Client(base_url=base, headers=master, timeout=120) as reader:
                while not stop.is_set():
                    status = reader.get(
                        "/v1/usage", params={"skip": deep, "limit": 100}
                    ).status_code
                    reads[status != 200] += 1

        reader = threading.Thread(target=deep_reads)
        reader.start()
        try:
            p50, failed = chat_p50(base, key, args.chats)
        finally:
            stop.set()
            reader.join(300)
        figures["chat p50 ms (deep skip reads looping)"] = p50
        figures["chat failures"] = failed
        figures["deep reads done / failed"] = f"{reads[0]} / {reads[1]}"
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", action="append", choices=["sqlite", "postgresql"])
    parser.add_argument("--pg-url", default=os.environ.get("OTARI_TEST_DATABASE_URL"))
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--keys", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--chats", type=int, default=200)
    args = parser.parse_args()
    for kind in args.db or ["sqlite"]:
        work = Path(tempfile.mkdtemp(prefix=f"otari-usage-{kind}-"))
        schema = f"bench_{uuid.uuid4().hex[:8]}"
        try:
            if kind == "sqlite":
                url = f"sqlite:///{work / 'otari.db'}"
            else:
                admin = create_engine(db.normalize_url(args.pg_url))
                with admin.begin() as conn:
                    conn.execute(text(f'CREATE SCHEMA "{schema}"'))
                url = f"{args.pg_url}?options=-csearch_path%3D{schema}"
            figures = run(kind, url, args, work)
            for name, value in figures.items():
                shown = f"{value:.1f}" if isinstance(value, float) else value
                print(f"{kind:10} {name:40} {shown}", flush=True)
        finally:
            if kind == "postgresql":
                with admin.begin() as conn:
                    conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
                admin.dispose()
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

"""The floor otari is measured against: the thinnest FastAPI + aiohttp pass-through.

One POST route that forwards the body to the upstream's /chat/completions with one pooled
aiohttp session and returns the answer: as bytes, or, for `"stream": true`, relayed chunk
by chunk as an event stream. No auth, no budget, no usage: what any Python gateway built
on these libraries pays at the least.

    MOCK_URL=http://127.0.0.1:18000/v1 MOCK_API_KEY=sk-... python bench/floor.py --port 18101

Served by uvicorn with the options otari uses (one process, no access log).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import orjson
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse


def create_floor(upstream: str, api_key: str) -> FastAPI:
    """The pass-through app; `upstream` is the provider's base URL (ending in /v1)."""
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
    url = upstream.rstrip("/") + "/chat/completions"
    sessions: list[aiohttp.ClientSession] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        sessions.append(aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)))
        yield
        await sessions[0].close()

    app = FastAPI(lifespan=lifespan)

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        raw = await request.body()
        stream = bool(orjson.loads(raw).get("stream"))
        answer = await sessions[0].post(url, data=raw, headers=headers)
        if not stream:
            body = await answer.read()
            return Response(body, status_code=answer.status, media_type="application/json")

        async def relay() -> AsyncIterator[bytes]:
            try:
                async for chunk in answer.content.iter_any():
                    yield chunk
            finally:
                answer.release()

        return StreamingResponse(relay(), status_code=answer.status, media_type="text/event-stream")

    @app.get("/health/readiness")
    async def ready() -> dict[str, str]:
        return {"status": "ok"}

    return app


def main() -> None:
    """Serve the floor on 127.0.0.1:PORT in front of $MOCK_URL."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=18101)
    args = parser.parse_args()
    app = create_floor(os.environ["MOCK_URL"], os.environ.get("MOCK_API_KEY", ""))
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
        server_header=False,
    )


if __name__ == "__main__":
    main()

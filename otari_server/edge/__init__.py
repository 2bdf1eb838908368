"""How a request gets in and out before FastAPI.

Lives here: the per-request ASGI middleware (request id, body limits, caching headers), the
fast path (generation endpoints served straight from ASGI, from `generation.endpoints`), the
access log and logging set-up. Connected mode uses the middleware and its own one-endpoint
fast path (`connected.routes.ChatPath`).

May import: `generation/`, `access/`, `errors`, `settings`, `metrics`, `deps`, `jsonio`.
Imported by: `app`, `connected/`, `daemon`, `generation/` (the access log).
"""

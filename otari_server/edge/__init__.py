"""How a request gets in and out before FastAPI.

Lives here: the per-request ASGI middleware (request id, body limits, caching headers), the list of
generation endpoints, the fast-path dispatcher both modes use, the access log and logging set-up.

May import: `settings`, `errors`, `metrics`, and the leaf modules of `generation/` it dispatches to.
Imported by: `app`, `connected.app`, `daemon`.
"""

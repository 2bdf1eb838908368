"""Routes: client-facing model names served by several targets, with fallbacks.

`model` parses and validates a route (config table or API body), `policy` decides when to
move on and how long to wait, `cooldowns` keeps the per-instance failure state, `order`
orders the targets for one request (and explains that order), `survey` finds which targets
can serve it and at what price, `book` holds the routes the app knows, `schemas` are the wire
models of /v1/routes. Serving a routed request is `generation.routed`.

May import: `accounting/`, `access/`, `storage/`, `providers/`, `errors`, `settings`, `runtime`.
Imported by: `generation/` (`routed` serves a request whose model is a route), `api/`,
`runtime`.
"""

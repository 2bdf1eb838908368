"""Routes: client-facing model names served by several targets, with fallbacks.

`model` parses and validates a route (config table or API body), `policy` decides when to
move on and how long to wait, `cooldowns` keeps the per-instance failure state, `plan`
orders the targets for one request (and explains that order), `book` holds the routes
the app knows.
"""

"""HTTP routes, one module per resource; `ROUTERS` is the one list app.py mounts."""

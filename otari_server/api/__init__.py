"""The management HTTP surface: one module per resource, its wire schemas, exact money JSON.

`ROUTERS` is the one list `app.py` mounts (generation routes included, for the OpenAPI document).
May import: `accounting/`, `access/`, `storage/`, `routing/`, `providers/`, `errors`, `deps`.
Imported by: `app`.
"""

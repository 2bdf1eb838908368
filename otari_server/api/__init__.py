"""The management HTTP surface: one module per resource, its wire schemas, exact money JSON.

`app.API_ROUTERS` lists the routers mounted (the generation routes too, for /openapi.json).

May import: `accounting/`, `access/`, `storage/`, `routing/`, `providers/`, `errors`, `deps`,
`runtime`, `metrics`, `settings`, `jsonio`.
Imported by: `app`, `connected/` (its health probes).
"""

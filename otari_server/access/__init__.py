"""Who may call: bearer tokens from the accepted headers, the key cache, key minting.

May import: `accounting/`, `storage/`, `errors`, `settings`, `api/` (only `api.schemas`, the
key's wire form).
Imported by: `edge/`, `generation/`, `routing/`, `tools/`, `api/`, `runtime`, `deps`.
"""

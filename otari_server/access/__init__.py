"""Who may call: bearer tokens from the accepted headers, the key cache, key minting.

May import: `storage/`, `errors`, `settings`.
Imported by: `edge/`, `generation/`, `api/`, `runtime`, `deps`.
"""

"""The client-facing generation APIs: one module per API, I/O only.

Lives here: chat completions, Anthropic messages (and count_tokens), responses (and stored
responses), audio, batches, moderations and the other pass-through JSON endpoints; the one
admission/settlement call every endpoint makes (`proxy`) and the one stream relay (`relay`).

May import: `translate/`, `providers/`, `accounting/`, `access/`, `storage/`, `errors`, `settings`.
Imported by: `edge/`, `api/` (route registration), `routing/`, `tools/`, `connected/`.
"""

"""The client-facing generation APIs: one module per API, I/O only.

Lives here: chat completions, Anthropic messages (and count_tokens), responses (and stored
responses), audio, batches, moderations and the other pass-through JSON endpoints; the one
admission/settlement call every endpoint makes (`proxy`), the one stream relay (`relay`), the
one list of endpoints (`endpoints`) and requests whose model is a route (`routed`).

May import: `translate/`, `providers/`, `accounting/`, `access/`, `storage/`, `routing/`,
`tools/`, `edge/`, `errors`, `settings`, `deps`, `runtime`, `metrics`, `jsonio`.
Imported by: `edge/` (the fast path dispatches here), `app`, `tools/`, `connected/`. (`edge/`
for the access log it annotates; `tools/` for the tool loop chat completions hand over to.)
"""

"""Connected mode: the gateway as a data plane for an otari platform.

May import: `generation/`, `translate/`, `providers/`, `accounting/`, `tools/`, `edge/`, `api/`,
`errors`, `settings`, `metrics`, `jsonio`.
Imported by: `app` (when `[platform]` is configured).
"""

"""What a request may cost and what it cost.

Lives here: prices (and their import from genai-prices), worst-case estimates, validation of the
numbers providers report, the ledger (reserve before, settle after, write-behind with a spool),
holds, budget rules and alerts, rate limits, usage rows, summaries and retention.

May import: `storage/`, `errors`, `settings`, `metrics`, `jsonio`.
Imported by: `generation/`, `api/`, `routing/`, `tools/`, `translate/` (prices, counts),
`access/` (rate-limit rules), `runtime`.
"""

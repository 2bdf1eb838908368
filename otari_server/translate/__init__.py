"""Pure wire-format translators: no I/O, named by direction.

`chat_via_messages` serves OpenAI chat clients from an Anthropic Messages provider,
`messages_via_chat` Anthropic clients from an OpenAI-compatible provider, `responses_via_chat` the
Responses API from a Chat Completions provider; `streams` holds the incremental stream translators
(provider event bytes in, client event bytes out) and `sse` the event-stream parser and writer.

May import: `accounting/`, `errors`, `jsonio`.
Imported by: `generation/`, `tools/`, `connected/`. (`accounting/` for `prices.Consumption` and
`counts`, the rules every provider number passes.)
"""

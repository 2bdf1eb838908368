"""What a translated answer consumed, read from the provider's own usage numbers.

A translation writes a number it cannot carry (text, a fraction, a count past 64 bits) as 0
in the client's `usage`; metering reads what the provider sent, checked by
`accounting.counts` first, so that such an answer is refused (`invalid_usage`) rather than
billed 0. Anthropic usage: https://docs.anthropic.com/en/api/messages (`usage`).
"""

from __future__ import annotations

from dataclasses import replace

from otari_server.accounting import counts
from otari_server.accounting.counts import consumption
from otari_server.accounting.prices import Consumption
from otari_server.translate.chat_via_messages import ChatStreamTranslator, chat_usage


def anthropic_consumption(usage: object) -> Consumption:
    """Consumption from an Anthropic usage object (prompt tokens include cache traffic).

    Each count is checked by counts.count first: chat_usage (made for translation) reads a
    fraction, a boolean or text as 0, which would under-bill a native answer."""
    if usage is None:
        return Consumption()
    if not isinstance(usage, dict):
        return Consumption(invalid=f"usage is not an object ({type(usage).__name__})")
    try:
        for name in _ANTHROPIC_COUNTS:
            counts.count(usage.get(name), name)
    except counts.BadCount as exc:
        return Consumption(invalid=str(exc))
    return consumption(chat_usage(usage))


_ANTHROPIC_COUNTS = (
    "input_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
    "output_tokens",
)


def anthropic_used(
    whole_usage: object, translator: ChatStreamTranslator, deltas: int
) -> Consumption | None:
    """What an Anthropic stream read through `translator` consumed: the usage of a whole
    JSON answer (`whole_usage`, as the provider sent it) when the provider sent one, else the
    stream's own; None when it reported none. The provider's numbers are checked as they
    came (the translated ones read what breaks the rules as 0). A stream cut short, or whose
    message_delta gave no output count, counts at least `deltas` output tokens (one per
    content delta relayed): message_start's output count is only a placeholder."""
    if whole_usage is not None and (
        counts.reports_tokens(whole_usage) or not isinstance(whole_usage, dict)
    ):
        return anthropic_consumption(whole_usage)
    if translator.unreadable is not None:
        return Consumption(invalid=translator.unreadable)
    reported = translator.reported
    if not counts.reports_tokens(reported):
        return None
    used = anthropic_consumption(reported)
    if used.invalid is None and not (translator.done and translator.output_final):
        used = replace(used, completion_tokens=max(used.completion_tokens, deltas))
    return used

"""The tool loop: call the model, run the gateway's tools it asks for, repeat; meter it all."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

import orjson

from otari_server.accounting.budget_rules import Need
from otari_server.accounting.counts import consumption
from otari_server.accounting.prices import Consumption
from otari_server.errors import InvalidRequest, Unprocessable
from otari_server.generation.proxy import Call, worst_case
from otari_server.providers.presets import ANTHROPIC_VERSION
from otari_server.providers.upstream import malformed, parse_upstream, read_upstream, untranslatable
from otari_server.tools.plan import MAX_ITERATIONS, Plan, hints, model_request
from otari_server.tools.toolbox import Toolbox
from otari_server.translate import chat_via_messages as anthropic_wire
from otari_server.translate.chat_via_messages import TranslationError
from otari_server.translate.chat_via_messages_request import to_messages_request
from otari_server.translate.usage import anthropic_consumption


@dataclass(slots=True)
class Meter:
    """What every model call of the loop used so far."""

    used: Consumption = field(default_factory=lambda: Consumption(requests=1))
    calls: int = 0

    def add(self, used: Consumption) -> None:
        """Count one model call's usage."""
        self.used = plus(self.used, used)
        self.calls += 1

    def consumption(self) -> Consumption | None:
        """The total to settle; None when no model call finished."""
        return self.used if self.calls else None


def plus(a: Consumption, b: Consumption) -> Consumption:
    """The token counts of two consumptions added up (one request)."""
    return Consumption(
        prompt_tokens=a.prompt_tokens + b.prompt_tokens,
        completion_tokens=a.completion_tokens + b.completion_tokens,
        cache_read_tokens=a.cache_read_tokens + b.cache_read_tokens,
        cache_write_tokens=a.cache_write_tokens + b.cache_write_tokens,
        invalid=a.invalid or b.invalid,
    )  # a refused number taints the sum


async def run(
    call: Call, upstream_model: str, plan: Plan, toolbox: Toolbox, meter: Meter
) -> dict[str, Any]:
    """The model's last completion: its answer, or the client's own tool calls."""
    messages = list(plan.body["messages"])
    if (hint := hints(plan, toolbox.offered)) is not None:
        messages.insert(0, hint)
    for iteration in range(plan.max_iterations + 1):
        body = model_request(plan, messages, toolbox.functions, first=iteration == 0)
        await cover(call, meter, body)
        completion, used = await complete(call, body, upstream_model)
        meter.add(used)
        message = _message(call, completion)
        calls = message.get("tool_calls") or []
        ours = [tool_call for tool_call in calls if _name(tool_call) in toolbox]
        if not ours:
            return completion
        if len(ours) < len(calls):
            # The client's own tools end the loop; calls to ours would reach a client that
            # cannot answer them, so they are dropped (the model asks again next turn).
            message["tool_calls"] = [c for c in calls if _name(c) not in toolbox]
            return completion
        if iteration == plan.max_iterations:
            raise Unprocessable(
                f"the model still asked for tools after {plan.max_iterations} tool "
                f"iteration(s), the request's max_tool_iterations (at most {MAX_ITERATIONS})",
                param="max_tool_iterations",
                code="tool_iterations_exceeded",
            )
        turn = {"role": "assistant", "content": message.get("content"), "tool_calls": calls}
        if message.get("thinking_blocks"):
            # With thinking on, Anthropic wants the turn's signed thinking back before its calls.
            turn["thinking_blocks"] = message["thinking_blocks"]
        messages.append(turn)
        messages.extend(await toolbox.run_all(ours))
    raise AssertionError("unreachable: the last iteration returns or raises")


async def cover(call: Call, meter: Meter, body: dict[str, Any]) -> None:
    """Before a model call, hold what was spent plus that call's worst case.

    Each top-up is an atomic reservation like the first, so a budget cannot be overspent
    by a loop however long; when it does not fit, the request ends with 402.
    """
    hold = call.hold
    if hold.user_id is None:
        return  # nothing to hold: no budget limit on this request
    worst = worst_case(
        call.endpoint, orjson.dumps(body), body, call.runtime.settings.default_max_tokens
    )
    total = plus(meter.used, worst)
    need = Decimal(0) if call.price is None else call.price.cost(total)
    tokens = total.prompt_tokens + total.completion_tokens if hold.tokens else 0
    if need > hold.amount or tokens > hold.tokens:
        extra = await call.runtime.ledger.reserve(
            hold.user_id,
            Decimal(0),
            need=Need(max(need - hold.amount, Decimal(0)), 0, max(tokens - hold.tokens, 0)),
        )
        call.hold = replace(
            hold, amount=hold.amount + extra.amount, tokens=hold.tokens + extra.tokens
        )


async def complete(
    call: Call, body: dict[str, Any], upstream_model: str
) -> tuple[dict[str, Any], Consumption]:
    """One model call, not streamed: the completion (request and completion in the OpenAI
    chat shape) and what it used, read from the provider's own usage numbers (a translated
    usage has numbers it could not take read as 0)."""
    runtime = call.runtime
    if call.provider.type != "anthropic":
        response = await runtime.upstream.post(
            call.provider, call.endpoint.upstream_path, dict(body, model=upstream_model)
        )
        answer = parse_upstream(call.provider, await read_upstream(call.provider, response))
        return answer, consumption(answer.get("usage"))
    try:
        outgoing = to_messages_request(
            body, model=upstream_model, default_max_tokens=runtime.settings.default_max_tokens
        )
    except TranslationError as exc:
        raise InvalidRequest(str(exc)) from None
    response = await runtime.upstream.post(
        call.provider, "/messages", outgoing, {"anthropic-version": ANTHROPIC_VERSION}
    )
    message = parse_upstream(call.provider, await read_upstream(call.provider, response))
    try:
        completion = anthropic_wire.to_chat_completion(message, model=body["model"])
    except (AttributeError, TypeError) as exc:
        raise untranslatable(call.provider, exc) from None
    return completion, anthropic_consumption(message.get("usage"))


def _message(call: Call, completion: dict[str, Any]) -> dict[str, Any]:
    choices = completion.get("choices")
    first = choices[0] if isinstance(choices, list) and choices else None
    message = first.get("message") if isinstance(first, dict) else None
    if not isinstance(message, dict):
        raise malformed(call.provider)
    calls = message.get("tool_calls")
    if calls is not None and not (
        isinstance(calls, list) and all(isinstance(c, dict) for c in calls)
    ):
        raise malformed(call.provider)
    return message


def _name(tool_call: Mapping[str, Any]) -> object:
    function = tool_call.get("function")
    return function.get("name") if isinstance(function, Mapping) else None

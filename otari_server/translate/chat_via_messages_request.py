"""OpenAI chat clients in front of an Anthropic Messages provider: the request.

A Chat Completions body (https://platform.openai.com/docs/api-reference/chat/create) becomes a
Messages body (https://docs.anthropic.com/en/api/messages): system prompt, conversation,
images, tools and tool choice, reasoning effort as a thinking budget, response_format as an
instruction. Pure: no I/O. Raises TranslationError for what cannot be expressed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from otari_server import jsonio
from otari_server.translate.chat_via_messages import TranslationError, thinking_block

DEFAULT_MAX_TOKENS = 4096


# Anthropic refuses unknown top-level fields, so only these pass through from a chat request:
# Anthropic-native extensions a client may send on purpose.
PASS_THROUGH = ("top_k", "thinking", "container", "mcp_servers", "context_management")


# Extended-thinking budgets standing in for OpenAI's reasoning_effort levels.
THINKING_BUDGETS = {"minimal": 1024, "low": 1024, "medium": 4096, "high": 16384}


MIN_THINKING_BUDGET = 1024


# The refusal of a tool loop whose thinking the client dropped: what to send back, per API.
THINKING_DROPPED = (
    "messages: thinking is enabled, so the last assistant message with tool_calls must keep "
    "its thinking: send back its `thinking_blocks` (each with its `signature`, or `data` for "
    "redacted thinking) exactly as the answer gave them; through the Responses API, send back "
    "its reasoning items with their `encrypted_content` (ask for it with "
    '`include: ["reasoning.encrypted_content"]`)'
)


_DATA_URL = re.compile(r"data:([^;,]+)(?:;[^,;]+)*;base64,(.*)\Z", re.DOTALL)


_EMPTY_SCHEMA = {"type": "object", "properties": {}}


def to_messages_request(
    body: Mapping[str, Any],
    *,
    model: str | None = None,
    default_max_tokens: int = DEFAULT_MAX_TOKENS,
) -> dict[str, Any]:
    """Translate an OpenAI chat completion request into an Anthropic Messages request."""
    if body.get("n") not in (None, 1):
        raise TranslationError("n: anthropic providers return a single choice")
    if body.get("logprobs") or body.get("top_logprobs") is not None:
        # Refused rather than dropped: a client asking for them would get none and not know.
        raise TranslationError(
            "logprobs: unsupported, anthropic providers do not return log probabilities"
        )
    system, messages = _conversation(body.get("messages"))
    instruction = _format_instruction(body.get("response_format"))
    if instruction:
        system.append({"type": "text", "text": instruction})
    request: dict[str, Any] = {
        "model": model or body.get("model"),
        "messages": messages,
        "max_tokens": _max_tokens(body, default_max_tokens),
    }
    if system:
        request["system"] = _system(system)
    if stop := _stop_sequences(body.get("stop")):
        request["stop_sequences"] = stop
    if body.get("temperature") is not None:
        # OpenAI allows 0..2, Anthropic 0..1: clamp rather than fail the request.
        request["temperature"] = min(float(body["temperature"]), 1.0)
    if body.get("top_p") is not None:
        request["top_p"] = body["top_p"]
    request.update({key: body[key] for key in PASS_THROUGH if key in body})
    if tools := _tools(body):
        request["tools"] = tools
        if (choice := _tool_choice(body)) is not None:
            request["tool_choice"] = choice
    if isinstance(body.get("user"), str) and body["user"]:
        request["metadata"] = {"user_id": body["user"]}
    if body.get("stream"):
        request["stream"] = True
    _apply_reasoning(request, body.get("reasoning_effort"))
    _check_thinking(request)
    return request


def _conversation(messages: object) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """System blocks and alternating turns; tool results become user turns, consecutive merge."""
    if not isinstance(messages, list) or not messages:
        raise TranslationError("messages: a non-empty list is required")
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, Mapping):
            raise TranslationError(f"{where}: expected an object")
        role = message.get("role")
        if role in ("system", "developer"):
            system.extend(_blocks(message.get("content"), f"{where}.content"))
            continue
        if role == "user":
            blocks = _blocks(message.get("content"), f"{where}.content")
        elif role == "assistant":
            blocks = _assistant_blocks(message, where)
        elif role == "tool":
            role, blocks = "user", [_tool_result(message, where)]
        else:
            raise TranslationError(f"{where}.role: '{role}' is not supported")
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    return system, turns


def _blocks(content: object, where: str) -> list[dict[str, Any]]:
    """Content blocks for a string or a list of OpenAI content parts; empty text is dropped."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise TranslationError(f"{where}: expected a string or a list of content parts")
    blocks = []
    for i, part in enumerate(content):
        if not isinstance(part, Mapping):
            raise TranslationError(f"{where}[{i}]: expected an object")
        block = _block(part, f"{where}[{i}]")
        if block is not None:
            blocks.append(block)
    return blocks


def _block(part: Mapping[str, Any], where: str) -> dict[str, Any] | None:
    kind = part.get("type")
    if kind in ("text", "refusal"):
        text = part.get(kind)
        if not isinstance(text, str):
            raise TranslationError(f"{where}.{kind}: expected a string")
        if not text:
            return None  # Anthropic refuses empty text blocks
        block: dict[str, Any] = {"type": "text", "text": text}
    elif kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, Mapping) else image
        if not isinstance(url, str):
            raise TranslationError(f"{where}.image_url.url: expected a string")
        block = {"type": "image", "source": _source(url, f"{where}.image_url.url")}
    elif kind == "file":
        file = part.get("file") or {}
        data = file.get("file_data") if isinstance(file, Mapping) else None
        if not isinstance(data, str):
            raise TranslationError(f"{where}.file: only inline file_data is supported")
        block = {"type": "document", "source": _source(data, f"{where}.file.file_data")}
    elif kind == "input_audio":
        raise TranslationError(f"{where}: anthropic providers do not accept audio input")
    else:
        return dict(part)  # an Anthropic-native block the client chose to send
    if "cache_control" in part:
        block["cache_control"] = part["cache_control"]
    return block


def _source(url: str, where: str) -> dict[str, Any]:
    if url.startswith("data:"):
        match = _DATA_URL.match(url)
        if match is None:
            raise TranslationError(f"{where}: expected a base64 data URL")
        return {"type": "base64", "media_type": match.group(1), "data": match.group(2)}
    if url.startswith(("http://", "https://")):
        return {"type": "url", "url": url}
    raise TranslationError(f"{where}: expected an http(s) or data URL")


def _assistant_blocks(message: Mapping[str, Any], where: str) -> list[dict[str, Any]]:
    # Thinking first, as Anthropic wrote it: the blocks go back unchanged and in order.
    blocks = _thinking_blocks(message.get("thinking_blocks"), f"{where}.thinking_blocks")
    blocks += _blocks(message.get("content"), f"{where}.content")
    for i, call in enumerate(message.get("tool_calls") or ()):
        blocks.append(_tool_use(call, f"{where}.tool_calls[{i}]"))
    return blocks


def _thinking_blocks(value: object, where: str) -> list[dict[str, Any]]:
    """The `thinking_blocks` a client sends back: thinking with its signature, or redacted."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise TranslationError(f"{where}: expected a list of thinking blocks")
    blocks = []
    for i, block in enumerate(value):
        at = f"{where}[{i}]"
        kind = block.get("type") if isinstance(block, Mapping) else None
        fields = {"thinking": ("thinking", "signature"), "redacted_thinking": ("data",)}.get(
            str(kind)
        )
        if not isinstance(block, Mapping) or fields is None:
            raise TranslationError(f"{at}: expected a 'thinking' or 'redacted_thinking' block")
        for name in fields:
            if not isinstance(block.get(name), str):
                raise TranslationError(f"{at}.{name}: expected a string")
        # The known fields only: a stream's entries also carry the `index` SDKs merge by.
        blocks.append(thinking_block(block))
    return blocks


def _check_thinking(request: Mapping[str, Any]) -> None:
    """With thinking on, the assistant turn whose tool calls are being answered must start
    with the thinking block it came with; without it Anthropic refuses the request."""
    if (request.get("thinking") or {}).get("type") != "enabled":
        return
    turns = request["messages"]
    position = next(
        (i for i in range(len(turns) - 1, -1, -1) if turns[i]["role"] == "assistant"), None
    )
    if position is None:
        return
    content = turns[position]["content"]
    if not any(block.get("type") == "tool_use" for block in content):
        return
    if content[0].get("type") in ("thinking", "redacted_thinking"):
        return
    raise TranslationError(THINKING_DROPPED)


def _tool_use(call: Mapping[str, Any], where: str) -> dict[str, Any]:
    function = call.get("function") or {}
    arguments = function.get("arguments") or "{}"
    try:
        tool_input = jsonio.parse(arguments) if isinstance(arguments, str) else arguments
    except json.JSONDecodeError:
        raise TranslationError(f"{where}.function.arguments: not valid JSON") from None
    if not isinstance(tool_input, dict):
        raise TranslationError(f"{where}.function.arguments: expected a JSON object")
    return {
        "type": "tool_use",
        "id": call.get("id", ""),
        "name": function.get("name", ""),
        "input": tool_input,
    }


def _tool_result(message: Mapping[str, Any], where: str) -> dict[str, Any]:
    result: dict[str, Any] = {"type": "tool_result", "tool_use_id": message.get("tool_call_id")}
    if not isinstance(result["tool_use_id"], str):
        raise TranslationError(f"{where}.tool_call_id: required for tool messages")
    content = message.get("content")
    if isinstance(content, str):
        if content:
            result["content"] = content
    elif content:
        result["content"] = _blocks(content, f"{where}.content")
    return result


def _system(blocks: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    # Blocks only when needed to keep a client's cache_control; otherwise the plain form.
    if any(set(block) != {"type", "text"} for block in blocks):
        return blocks
    return "\n\n".join(block["text"] for block in blocks)


def _format_instruction(response_format: object) -> str | None:
    # Anthropic has no JSON mode: asking in the system prompt is the portable equivalent.
    if not isinstance(response_format, Mapping):
        return None
    if response_format.get("type") == "json_object":
        return "Respond with a single JSON object and nothing else."
    if response_format.get("type") == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema", {})
        return (
            "Respond with a single JSON object, and nothing else, that conforms to this JSON "
            f"schema: {json.dumps(schema)}"
        )
    return None


def _max_tokens(body: Mapping[str, Any], default: int) -> int:
    value = body.get("max_completion_tokens", body.get("max_tokens"))
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise TranslationError("max_tokens: expected a positive integer")
    return value


def _stop_sequences(stop: object) -> list[str]:
    if stop is None:
        return []
    sequences = [stop] if isinstance(stop, str) else stop
    if not isinstance(sequences, list) or not all(isinstance(s, str) for s in sequences):
        raise TranslationError("stop: expected a string or a list of strings")
    # Anthropic rejects whitespace-only stop sequences that OpenAI accepts.
    return [s for s in sequences if s.strip()]


def _tools(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    tools = list(body.get("tools") or ())
    tools += [{"type": "function", "function": f} for f in body.get("functions") or ()]
    translated = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, Mapping):
            raise TranslationError(f"tools[{i}]: expected an object")
        if tool.get("type") != "function":
            translated.append(dict(tool))  # an Anthropic server tool, sent as is
            continue
        function = tool.get("function") or {}
        if not isinstance(function.get("name"), str):
            raise TranslationError(f"tools[{i}].function.name: required")
        spec: dict[str, Any] = {
            "name": function["name"],
            "input_schema": function.get("parameters") or _EMPTY_SCHEMA,
        }
        if function.get("description"):
            spec["description"] = function["description"]
        if "cache_control" in tool:
            spec["cache_control"] = tool["cache_control"]
        translated.append(spec)
    return translated


def _tool_choice(body: Mapping[str, Any]) -> dict[str, Any] | None:
    choice = body.get("tool_choice", body.get("function_call"))
    result: dict[str, Any] | None
    if choice is None:
        result = None
    elif choice == "auto":
        result = {"type": "auto"}
    elif choice == "none":
        result = {"type": "none"}
    elif choice in ("required", "any"):
        result = {"type": "any"}
    elif isinstance(choice, Mapping):
        name = (choice.get("function") or {}).get("name") or choice.get("name")
        if not isinstance(name, str):
            raise TranslationError("tool_choice.function.name: required")
        result = {"type": "tool", "name": name}
    else:
        raise TranslationError(f"tool_choice: '{choice}' is not supported")
    if body.get("parallel_tool_calls") is False and (result or {}).get("type") != "none":
        result = {**(result or {"type": "auto"}), "disable_parallel_tool_use": True}
    return result


def _apply_reasoning(request: dict[str, Any], effort: object) -> None:
    """Map reasoning_effort to extended thinking, within Anthropic's constraints on it."""
    if "thinking" in request or not isinstance(effort, str) or effort not in THINKING_BUDGETS:
        return
    if (request.get("tool_choice") or {}).get("type") in ("any", "tool"):
        return  # thinking cannot be combined with a forced tool
    budget = min(THINKING_BUDGETS[effort], request["max_tokens"] - 1)
    if budget < MIN_THINKING_BUDGET:
        return
    request["thinking"] = {"type": "enabled", "budget_tokens": budget}
    request.pop("temperature", None)
    request.pop("top_k", None)
    if request.get("top_p", 1.0) < 0.95:
        request.pop("top_p")

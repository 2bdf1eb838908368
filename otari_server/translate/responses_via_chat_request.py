"""Responses API clients in front of a Chat Completions-shaped call: the request.

A Responses body (https://platform.openai.com/docs/api-reference/responses/create) becomes a
Chat Completions body: instructions, input items (messages, function calls and their outputs,
reasoning carried back encrypted), tools, tool choice and text format. Pure: no I/O; raises
InvalidRequest naming the field that cannot be expressed.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

from otari_server.translate.chat_via_messages import TranslationError

# Request fields that need state kept by a Responses API provider.
STATEFUL = ("previous_response_id", "conversation", "prompt")


def to_chat_request(body: Mapping[str, Any], *, model: str | None = None) -> dict[str, Any]:
    """Translate a Responses API request into an OpenAI chat completion request.

    Fields with no chat equivalent that change nothing about the answer (`store`, `include`,
    `truncation`, `metadata`, `service_tier`, ...) are dropped; ones whose meaning would be
    lost raise TranslationError.
    """
    for key in STATEFUL:
        if body.get(key) is not None:
            raise TranslationError(f"{key}: needs a provider that serves the Responses API")
    if body.get("background"):
        raise TranslationError("background: needs a provider that serves the Responses API")
    messages = _instructions(body.get("instructions")) + _input(body.get("input"))
    if not messages:
        raise TranslationError("input: a non-empty string or list of items is required")
    request: dict[str, Any] = {"model": model or body.get("model"), "messages": messages}
    if body.get("max_output_tokens") is not None:
        request["max_completion_tokens"] = body["max_output_tokens"]
    for key in ("temperature", "top_p", "parallel_tool_calls", "user"):
        if body.get(key) is not None:
            request[key] = body[key]
    if tools := _tools(body.get("tools")):
        request["tools"] = tools
        if body.get("tool_choice") is not None:
            request["tool_choice"] = _tool_choice(body["tool_choice"])
    if (response_format := _response_format(body.get("text"))) is not None:
        request["response_format"] = response_format
    include = body.get("include")
    if isinstance(include, list) and "message.output_text.logprobs" in include:
        request["logprobs"] = True  # chat's way to ask; a provider that cannot refuses it
    if body.get("top_logprobs") is not None:
        request.update(logprobs=True, top_logprobs=body["top_logprobs"])
    reasoning = body.get("reasoning")
    if isinstance(reasoning, Mapping) and isinstance(reasoning.get("effort"), str):
        request["reasoning_effort"] = reasoning["effort"]
    if body.get("stream"):
        request["stream"] = True
        request["stream_options"] = {"include_usage": True}
    return request


def decrypt_thinking(content: object) -> dict[str, Any] | None:
    """The thinking block in an `encrypted_content`, None when it holds none of ours (another
    provider's reasoning, which only that provider can read)."""
    if not isinstance(content, str):
        return None
    try:
        block = json.loads(base64.b64decode(content, validate=True))
    except (binascii.Error, ValueError):
        return None
    fields = {"thinking": ("thinking", "signature"), "redacted_thinking": ("data",)}
    kind = block.get("type") if isinstance(block, dict) else None
    if kind not in fields or not all(isinstance(block.get(f), str) for f in fields[kind]):
        return None
    return {"type": kind, **{f: block[f] for f in fields[kind]}}


def _instructions(instructions: object) -> list[dict[str, Any]]:
    if instructions is None or instructions == "":
        return []
    if isinstance(instructions, str):
        return [{"role": "system", "content": instructions}]
    if isinstance(instructions, list):
        return _input(instructions, "instructions")
    raise TranslationError("instructions: expected a string")


def _input(value: object, where: str = "input") -> list[dict[str, Any]]:
    """Chat messages for the input items; a function call joins the assistant turn before it."""
    if isinstance(value, str):
        return [{"role": "user", "content": value}] if value else []
    if not isinstance(value, list):
        raise TranslationError(f"{where}: expected a string or a list of items")
    messages: list[dict[str, Any]] = []
    thinking: list[dict[str, Any]] = []  # from reasoning items, for the next assistant turn
    for i, item in enumerate(value):
        at = f"{where}[{i}]"
        if not isinstance(item, Mapping):
            raise TranslationError(f"{at}: expected an object")
        kind = item.get("type", "message")
        if kind == "message":
            messages.append(_message(item, at))
            if thinking and messages[-1]["role"] == "assistant":
                messages[-1]["thinking_blocks"] = thinking
                thinking = []
        elif kind == "function_call":
            call = {
                "id": _string(item.get("call_id"), f"{at}.call_id"),
                "type": "function",
                "function": {
                    "name": _string(item.get("name"), f"{at}.name"),
                    "arguments": item.get("arguments") or "{}",
                },
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
            else:
                last = {"role": "assistant", "content": None, "tool_calls": [call]}
                messages.append(last)
            if thinking:
                last["thinking_blocks"] = [*last.get("thinking_blocks", ()), *thinking]
                thinking = []
        elif kind == "function_call_output":
            messages.append(
                {
                    "role": "tool",
                    "tool_call_id": _string(item.get("call_id"), f"{at}.call_id"),
                    "content": _tool_output(item.get("output"), f"{at}.output"),
                }
            )
        elif kind == "reasoning":
            # Thinking this gateway returned (encrypted_content) goes back to the provider as
            # the thinking block it was; other reasoning only its own provider can read.
            block = decrypt_thinking(item.get("encrypted_content"))
            if block is not None:
                thinking.append(block)
        elif kind == "item_reference":
            raise TranslationError(f"{at}: item references need a provider that stores items")
        else:
            raise TranslationError(
                f"{at}: '{kind}' items need a provider that serves the Responses API"
            )
    return messages


def _message(item: Mapping[str, Any], where: str) -> dict[str, Any]:
    role = item.get("role")
    content = item.get("content")
    if role == "assistant":
        return {"role": "assistant", "content": _assistant_text(content, f"{where}.content")}
    if role not in ("user", "system", "developer"):
        raise TranslationError(f"{where}.role: '{role}' is not supported")
    if isinstance(content, str):
        return {"role": role, "content": content}
    parts = _parts(content, f"{where}.content")
    if all(part["type"] == "text" for part in parts):
        # Plain strings reach the most OpenAI-compatible servers.
        return {"role": role, "content": "\n\n".join(part["text"] for part in parts)}
    if role != "user":
        raise TranslationError(f"{where}.content: {role} messages take text only")
    return {"role": role, "content": parts}


def _assistant_text(content: object, where: str) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise TranslationError(f"{where}: expected a string or a list of content parts")
    texts = []
    for i, part in enumerate(content):
        if not isinstance(part, Mapping):
            raise TranslationError(f"{where}[{i}]: expected an object")
        if part.get("type") in ("output_text", "input_text", "text"):
            texts.append(_string(part.get("text"), f"{where}[{i}].text"))
        elif part.get("type") == "refusal":
            texts.append(_string(part.get("refusal"), f"{where}[{i}].refusal"))
        else:
            raise TranslationError(f"{where}[{i}]: '{part.get('type')}' is not assistant content")
    return "".join(texts)


def _parts(content: object, where: str) -> list[dict[str, Any]]:
    """Chat content parts for a list of Responses input content parts."""
    if not isinstance(content, list):
        raise TranslationError(f"{where}: expected a string or a list of content parts")
    parts: list[dict[str, Any]] = []
    for i, part in enumerate(content):
        at = f"{where}[{i}]"
        if not isinstance(part, Mapping):
            raise TranslationError(f"{at}: expected an object")
        kind = part.get("type")
        if kind in ("input_text", "output_text", "text"):
            parts.append({"type": "text", "text": _string(part.get("text"), f"{at}.text")})
        elif kind == "input_image":
            if part.get("file_id") is not None or not isinstance(part.get("image_url"), str):
                raise TranslationError(f"{at}: only image_url images are supported, not file ids")
            image: dict[str, Any] = {"url": part["image_url"]}
            if isinstance(part.get("detail"), str):
                image["detail"] = part["detail"]
            parts.append({"type": "image_url", "image_url": image})
        elif kind == "input_file":
            if not isinstance(part.get("file_data"), str):
                raise TranslationError(f"{at}: only inline file_data is supported")
            file: dict[str, Any] = {"file_data": part["file_data"]}
            if isinstance(part.get("filename"), str):
                file["filename"] = part["filename"]
            parts.append({"type": "file", "file": file})
        elif kind == "input_audio":
            parts.append({"type": "input_audio", "input_audio": part.get("input_audio")})
        else:
            raise TranslationError(f"{at}: '{kind}' content is not supported")
    return parts


def _tool_output(output: object, where: str) -> str | list[dict[str, Any]]:
    if isinstance(output, str):
        return output
    parts = _parts(output, where)
    if all(part["type"] == "text" for part in parts):
        return "\n".join(part["text"] for part in parts)
    return parts


def _tools(tools: object) -> list[dict[str, Any]]:
    if not tools:
        return []
    if not isinstance(tools, list):
        raise TranslationError("tools: expected a list")
    converted = []
    for i, tool in enumerate(tools):
        kind = tool.get("type") if isinstance(tool, Mapping) else None
        if not isinstance(tool, Mapping) or kind != "function":
            raise TranslationError(
                f"tools[{i}]: '{kind}' tools need a provider that serves the Responses API"
            )
        function: dict[str, Any] = {"name": _string(tool.get("name"), f"tools[{i}].name")}
        if tool.get("description"):
            function["description"] = tool["description"]
        function["parameters"] = tool.get("parameters") or {"type": "object", "properties": {}}
        if tool.get("strict") is not None:
            function["strict"] = tool["strict"]
        converted.append({"type": "function", "function": function})
    return converted


def _tool_choice(choice: object) -> str | dict[str, Any]:
    if choice in ("auto", "none", "required"):
        return str(choice)
    if isinstance(choice, Mapping) and choice.get("type") == "function":
        name = _string(choice.get("name"), "tool_choice.name")
        return {"type": "function", "function": {"name": name}}
    kind = choice.get("type") if isinstance(choice, Mapping) else choice
    raise TranslationError(f"tool_choice: '{kind}' is not supported by this provider")


def _response_format(text: object) -> dict[str, Any] | None:
    if not isinstance(text, Mapping) or not isinstance(text.get("format"), Mapping):
        return None
    form = text["format"]
    kind = form.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        schema = {
            key: form[key]
            for key in ("name", "schema", "strict", "description")
            if form.get(key) is not None
        }
        return {"type": "json_schema", "json_schema": schema}
    raise TranslationError(f"text.format.type: '{kind}' is not supported")


def _string(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise TranslationError(f"{where}: expected a string")
    return value

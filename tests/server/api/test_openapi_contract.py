"""Our /openapi.json against the reference contract: every operation, parameter and field name."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from otari_server.app import create_app
from tests.support.servers import make_settings, running

# The contract ships with the repository (a copy of the shared reference).
REFERENCE_CANDIDATES = (
    Path(__file__).resolve().parents[3] / "docs" / "reference" / "otari-openapi.json",
)


def load_reference() -> dict[str, Any]:
    """The reference OpenAPI document; missing is an error, never a skip."""
    for path in REFERENCE_CANDIDATES:
        if path.is_file():
            spec: dict[str, Any] = json.loads(path.read_text())
            return spec
    raise FileNotFoundError(f"reference contract not found at {REFERENCE_CANDIDATES[0]}")


REFERENCE = load_reference()
METHODS = frozenset({"get", "put", "post", "patch", "delete", "head", "options"})

# Generation endpoints: not served yet. Strict xfail, so the day one lands its test XPASSes,
# fails the run, and whoever landed it must delete its entry here.
PENDING: frozenset[tuple[str, str]] = frozenset()


def reference_operations() -> list[tuple[str, str]]:
    """(METHOD, path) of every operation in the reference."""
    return [
        (method.upper(), path)
        for path, item in REFERENCE["paths"].items()
        for method in item
        if method in METHODS
    ]


def operation_params() -> Iterator[Any]:
    for method, path in reference_operations():
        marks = []
        if (method, path) in PENDING:
            marks.append(
                pytest.mark.xfail(
                    strict=True, reason="generation endpoints land with issues 4 and 5"
                )
            )
        yield pytest.param(method, path, id=f"{method} {path}", marks=marks)


def resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """Follow local $ref pointers until a concrete schema."""
    while "$ref" in schema:
        node: Any = spec
        for part in schema["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        schema = node
    return schema


def field_names(
    spec: dict[str, Any],
    schema: dict[str, Any],
    prefix: str = "",
    seen: frozenset[str] = frozenset(),
) -> set[str]:
    """Every property name reachable in a schema, nested ones dotted (`data.id`).

    Looks through $ref, anyOf/oneOf/allOf, array items and additionalProperties; a $ref
    already on the current branch is not expanded again (recursive schemas).
    """
    ref = schema.get("$ref")
    if ref is not None:
        if ref in seen:
            return set()
        seen = seen | {ref}
    schema = resolve(spec, schema)
    names: set[str] = set()
    for key in ("anyOf", "oneOf", "allOf"):
        for option in schema.get(key, []):
            names |= field_names(spec, option, prefix, seen)
    if isinstance(schema.get("items"), dict):
        names |= field_names(spec, schema["items"], prefix, seen)
    if isinstance(schema.get("additionalProperties"), dict):
        names |= field_names(spec, schema["additionalProperties"], f"{prefix}*.", seen)
    for name, sub in schema.get("properties", {}).items():
        names.add(prefix + name)
        names |= field_names(spec, sub, f"{prefix}{name}.", seen)
    return names


def parameters(operation: dict[str, Any]) -> set[tuple[str, str]]:
    """(name, location) of an operation's path and query parameters."""
    return {
        (p["name"], p["in"])
        for p in operation.get("parameters", [])
        if p["in"] in ("path", "query")
    }


def missing_fields(
    ref_content: dict[str, Any], our_content: dict[str, Any], where: str, ours: dict[str, Any]
) -> list[str]:
    """Problems for one body: each media type of the reference must carry its field names."""
    problems: list[str] = []
    for media_type, media in ref_content.items():
        if media_type != "application/json" and not media_type.startswith("multipart/"):
            continue
        if media_type not in our_content:
            problems.append(f"{where}: no {media_type} content")
            continue
        wanted = field_names(REFERENCE, media.get("schema", {}))
        have = field_names(ours, our_content[media_type].get("schema", {}))
        if wanted - have:
            problems.append(f"{where} ({media_type}) lacks {sorted(wanted - have)}")
    return problems


@pytest.fixture(scope="module")
def our_spec(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The OpenAPI document our app generates (no server, no database needed)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('contract') / 'otari.db'}"
    spec: dict[str, Any] = create_app(make_settings(url)).openapi()
    return spec


@pytest.mark.parametrize(("method", "path"), list(operation_params()))
def test_operation_matches_reference(our_spec: dict[str, Any], method: str, path: str) -> None:
    ref_op = REFERENCE["paths"][path][method.lower()]
    our_op = our_spec["paths"].get(path, {}).get(method.lower())
    assert our_op is not None, f"{method} {path} is missing from our /openapi.json"

    problems: list[str] = []
    if parameters(ref_op) - parameters(our_op):
        problems.append(f"parameters lack {sorted(parameters(ref_op) - parameters(our_op))}")
    if "requestBody" in ref_op:
        if "requestBody" not in our_op:
            problems.append("no request body")
        else:
            problems += missing_fields(
                ref_op["requestBody"]["content"],
                our_op["requestBody"]["content"],
                "request body",
                our_spec,
            )
    for status, response in ref_op["responses"].items():
        if not status.startswith("2"):
            continue
        if status not in our_op["responses"]:
            problems.append(f"no {status} response (ours: {sorted(our_op['responses'])})")
            continue
        problems += missing_fields(
            response.get("content", {}),
            our_op["responses"][status].get("content", {}),
            f"{status} response",
            our_spec,
        )
    assert problems == [], f"{method} {path}: " + "; ".join(problems)


def test_pending_lists_only_reference_operations() -> None:
    """A typo in PENDING would silently excuse nothing; every entry must name a real operation."""
    assert set(PENDING) <= set(reference_operations())


def test_field_names_sees_nested_and_referenced_fields() -> None:
    """The comparison is only as strong as the walker: check it on the reference itself."""
    models = REFERENCE["paths"]["/v1/models"]["get"]["responses"]["200"]["content"]
    names = field_names(REFERENCE, models["application/json"]["schema"])
    assert {"data", "object", "data.id", "data.owned_by"} <= names
    keys = REFERENCE["paths"]["/v1/keys"]["get"]["responses"]["200"]["content"]
    assert {"id", "key_name", "is_active"} <= field_names(
        REFERENCE, keys["application/json"]["schema"]
    )


def test_openapi_json_is_served(sqlite_url: str, our_spec: dict[str, Any]) -> None:
    with running(make_settings(sqlite_url)) as url:
        response = httpx.get(f"{url}/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    served = response.json()
    assert served["openapi"].startswith("3.")
    assert set(served["paths"]) == set(our_spec["paths"])

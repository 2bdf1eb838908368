"""Names accepted where ids are: a key's name, a user's alias, a budget's name.

A reference is first used as an id, so an id costs no extra call and always wins over a
name. Only when the gateway answers 404 is the list read for items whose name is the
reference: one match is used, several are an error naming their ids, none is the
gateway's own 404 with that said.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from otari_cli.client import Gateway, path
from otari_cli.errors import ApiError, Refused, UsageError

T = TypeVar("T")


@dataclass(frozen=True)
class Kind:
    """A resource whose items have an id and an optional name."""

    noun: str  # "key"
    collection: str  # the list's path segment under /v1
    id_field: str
    name_field: str


KEY = Kind("key", "keys", "id", "key_name")
USER = Kind("user", "users", "user_id", "alias")
BUDGET = Kind("budget", "budgets", "budget_id", "name")


def act(gateway: Gateway, kind: Kind, ref: str, call: Callable[[str], T]) -> tuple[str, T]:
    """`call(ref)` with `ref` as an id; on a 404, `call` again with the id of the one item
    named `ref`. Returns (the id used, what `call` returned).

    Raises Refused (404) when no item has that id or name, UsageError (exit 2) when several
    items have that name, and whatever `call` raises otherwise.
    """
    try:
        return ref, call(ref)
    except Refused as missing:
        if missing.status != 404:
            raise
        found = named(gateway, kind, ref, missing)
    return found, call(found)


def resolve(gateway: Gateway, kind: Kind, ref: str) -> str:
    """The id of the item whose id, or else whose name, is `ref` (errors as in `act`)."""
    return act(
        gateway, kind, ref, lambda item_id: gateway.get(path("v1", kind.collection, item_id))
    )[0]


def named(gateway: Gateway, kind: Kind, ref: str, missing: ApiError) -> str:
    """The id of the one item named `ref`; `missing` is the 404 that `ref` as an id got."""
    try:
        rows = gateway.pages(f"/v1/{kind.collection}", page_size=1000)
    except ApiError:
        raise missing from None  # the listing is no help: the first answer stands
    ids = [
        str(row.get(kind.id_field))
        for row in rows
        if isinstance(row, dict) and row.get(kind.name_field) == ref
    ]
    if not ids:
        raise Refused(404, f"no {kind.noun} has the id or name {ref!r} ({missing.message})")
    if len(ids) > 1:
        raise UsageError(
            f"{len(ids)} {kind.noun}s are named {ref!r} ({', '.join(ids)}): give the id"
        )
    return ids[0]

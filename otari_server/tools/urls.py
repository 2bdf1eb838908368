"""Which tool server URLs a request may make the gateway connect to (SSRF guard).

The address policy (and the parsing of its keys, `allow_loopback` and
`allow_private_networks`) is shared with connected mode's provider addresses
(`otari_server.connected.addresses`), whose keys live in `[platform]`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Mapping
from typing import Any, Protocol
from urllib.parse import urlsplit

from otari_server.errors import InvalidRequest
from otari_server.settings import ConfigError

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Carrier-grade NAT space is neither private nor global to `ipaddress`; it is internal here.
_SHARED = ipaddress.ip_network("100.64.0.0/10")
LOOPBACK, PRIVATE, PUBLIC, RESERVED = "loopback", "private", "public", "reserved"


class AddressPolicy(Protocol):
    """Which non-public addresses may be reached: ToolsConfig, or connected mode's
    PlatformConfig for provider addresses from the platform."""

    @property
    def allow_loopback(self) -> bool: ...

    @property
    def allow_private_networks(self) -> bool: ...

    @property
    def private_networks(self) -> tuple[Network, ...]: ...


# The spellings of a flag a lenient table ([tools]) accepts besides true and false.
_WORDS = {
    "1": True,
    "true": True,
    "yes": True,
    "on": True,
    "0": False,
    "false": False,
    "no": False,
    "off": False,
}


def policy_settings(
    table: Mapping[str, Any], section: str, *, lenient: bool = False
) -> dict[str, Any]:
    """The address policy keys of a config table (`[tools]` or `[platform]`), validated.

    `allow_loopback` is a flag; `allow_private_networks` a flag (every private range) or a
    list of networks such as "10.0.0.0/8" (only those, returned as `private_networks`).
    Returns the AddressPolicy fields the table sets. `lenient` also takes "yes"/"on"/"1"...
    for flags and any value spelling a network (the [tools] table's way). Raises
    ConfigError naming `section.key` when a value is not usable.
    """
    values: dict[str, Any] = {}
    if "allow_loopback" in table:
        values["allow_loopback"] = _flag(
            table["allow_loopback"], section, "allow_loopback", lenient
        )
    if "allow_private_networks" in table:
        allowed = table["allow_private_networks"]
        if isinstance(allowed, list):
            values["private_networks"] = tuple(_network(item, section, lenient) for item in allowed)
        else:
            values["allow_private_networks"] = _flag(
                allowed, section, "allow_private_networks", lenient
            )
    return values


def _flag(value: Any, section: str, key: str, lenient: bool) -> bool:
    if isinstance(value, bool):
        return value
    if lenient and (word := str(value).strip().lower()) in _WORDS:
        return _WORDS[word]
    extra = " or a list of networks" if key == "allow_private_networks" else ""
    raise ConfigError(f"{section}.{key}: expected true or false{extra}, got {value!r}")


def _network(value: Any, section: str, lenient: bool) -> Network:
    try:
        if not lenient and not isinstance(value, str):
            raise ValueError
        return ipaddress.ip_network(str(value), strict=False)
    except ValueError:
        raise ConfigError(
            f"{section}.allow_private_networks: expected true, false or a list "
            f'of networks such as "10.0.0.0/8"; {value!r} is not a network'
        ) from None


class UnsafeUrl(InvalidRequest):
    """A tool server URL the configuration does not let the gateway reach."""

    code = "tool_url_refused"


def kind(address: Address) -> str:
    """loopback, private (RFC 1918, ULA, link-local, CGNAT...), reserved or public."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback:
        return LOOPBACK
    if address.is_multicast or address.is_unspecified or address.is_reserved:
        return RESERVED
    if address.is_global and address not in _SHARED:
        return PUBLIC
    return PRIVATE


def refusal(address: Address, config: AddressPolicy) -> str | None:
    """Why the configuration forbids connecting to `address`; None when it may."""
    found = kind(address)
    if found == PUBLIC:
        return None
    if found == LOOPBACK:
        return (
            None
            if config.allow_loopback
            else "loopback addresses are not allowed (tools.allow_loopback is false)"
        )
    if found == PRIVATE:
        if config.allow_private_networks or any(
            address in network for network in config.private_networks
        ):
            return None
        return "private and link-local addresses are not allowed (see tools.allow_private_networks)"
    return "reserved, multicast and unspecified addresses are never allowed"


def check(url: str, config: AddressPolicy, *, where: str, token: bool) -> str:
    """Refuse, without any I/O, what the URL alone shows is unsafe; returns its host."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise UnsafeUrl(f"{where}: only http and https URLs are allowed", param="mcp_servers")
    host = parts.hostname
    if not host:
        raise UnsafeUrl(f"{where}: the URL has no host", param="mcp_servers")
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise UnsafeUrl(f"{where}: the URL has an invalid port", param="mcp_servers") from None
    literal = _literal(host)
    if literal is not None and (reason := refusal(literal, config)):
        raise UnsafeUrl(f"{where}: {host} refused: {reason}", param="mcp_servers")
    if token and parts.scheme == "http" and not _loopback_name(host, literal):
        raise UnsafeUrl(
            f"{where}: an authorization_token is only sent over https (plain http "
            "only to a loopback address)",
            param="mcp_servers",
        )
    return host


async def resolve(url: str, config: AddressPolicy, *, where: str, token: bool) -> None:
    """Refuse a URL whose host resolves to any address the configuration forbids.

    Every address is checked, not just the first, so a name cannot smuggle a private
    address behind a public one. A name that does not resolve raises OSError.
    """
    host = check(url, config, where=where, token=token)
    parts = urlsplit(url)
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, parts.port or (443 if parts.scheme == "https" else 80), type=socket.SOCK_STREAM
    )
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if reason := refusal(address, config):
            raise UnsafeUrl(
                f"{where}: {host} resolves to {address}, refused: {reason}", param="mcp_servers"
            )
        if token and parts.scheme == "http" and kind(address) != LOOPBACK:
            raise UnsafeUrl(
                f"{where}: an authorization_token is only sent over https (plain "
                "http only to a loopback address)",
                param="mcp_servers",
            )


def _literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None


def _loopback_name(host: str, literal: Address | None) -> bool:
    if literal is not None:
        return kind(literal) == LOOPBACK
    return host.lower() == "localhost" or host.lower().endswith(".localhost")

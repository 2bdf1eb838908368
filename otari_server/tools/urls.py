"""Which tool server URLs a request may make the gateway connect to (SSRF guard)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Protocol
from urllib.parse import urlsplit

from otari_server.errors import InvalidRequest
from otari_server.tools.config import ToolsConfig

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

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
    def private_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]: ...


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
        return None if config.allow_loopback else "loopback addresses are not allowed " \
            "(tools.allow_loopback is false)"
    if found == PRIVATE:
        if config.allow_private_networks or any(address in network
                                                for network in config.private_networks):
            return None
        return "private and link-local addresses are not allowed (see " \
            "tools.allow_private_networks)"
    return "reserved, multicast and unspecified addresses are never allowed"


def check(url: str, config: ToolsConfig, *, where: str, token: bool) -> str:
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
        raise UnsafeUrl(f"{where}: an authorization_token is only sent over https (plain http "
                        "only to a loopback address)", param="mcp_servers")
    return host


async def resolve(url: str, config: ToolsConfig, *, where: str, token: bool) -> None:
    """Refuse a URL whose host resolves to any address the configuration forbids.

    Every address is checked, not just the first, so a name cannot smuggle a private
    address behind a public one. A name that does not resolve raises OSError.
    """
    host = check(url, config, where=where, token=token)
    parts = urlsplit(url)
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, parts.port or (443 if parts.scheme == "https" else 80), type=socket.SOCK_STREAM)
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if reason := refusal(address, config):
            raise UnsafeUrl(f"{where}: {host} resolves to {address}, refused: {reason}",
                            param="mcp_servers")
        if token and parts.scheme == "http" and kind(address) != LOOPBACK:
            raise UnsafeUrl(f"{where}: an authorization_token is only sent over https (plain "
                            "http only to a loopback address)", param="mcp_servers")


def _literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None


def _loopback_name(host: str, literal: Address | None) -> bool:
    if literal is not None:
        return kind(literal) == LOOPBACK
    return host.lower() == "localhost" or host.lower().endswith(".localhost")

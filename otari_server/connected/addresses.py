"""Which provider addresses from the platform the gateway may call with a provider key.

The same policy as gateway-run tools (`otari_server.tools.urls.refusal`), with the
`[platform]` table's `allow_loopback` and `allow_private_networks`; in addition a link-local
address (169.254.0.0/16, fe80::/10: cloud metadata services) is refused unless listed
explicitly in `allow_private_networks`. Names are checked when they are resolved, right
before connecting (every address of the answer, and only the checked addresses are used),
and literal addresses before the attempt.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from otari_server.tools.urls import Address, AddressPolicy, refusal

log = logging.getLogger("otari.connected")


class RefusedAddress(OSError):
    """A provider host that resolves to an address the policy forbids."""


def address_refusal(address: Address, policy: AddressPolicy) -> str | None:
    """Why `address` may not be called; None when it may."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_link_local and not any(address in net for net in policy.private_networks):
        return "link-local addresses (cloud metadata services) are never called"
    reason = refusal(address, policy)
    # The shared reasons name the [tools] keys; for provider addresses the same keys live
    # in [platform].
    return None if reason is None else reason.replace("tools.", "platform.")


def url_refusal(url: str, policy: AddressPolicy) -> str | None:
    """Why a provider URL may not be called, as far as the URL alone shows; None otherwise."""
    parts = urlsplit(url)
    host = parts.hostname
    if parts.scheme not in ("http", "https") or not host:
        return "not an http(s) URL with a host"
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None  # a name: checked when it is resolved (GuardedResolver)
    return address_refusal(address, policy)


class GuardedResolver(AbstractResolver):
    """The default resolver, refusing (OSError) a name with any forbidden address."""

    def __init__(self, policy: AddressPolicy) -> None:
        self._policy = policy
        self._inner: AbstractResolver | None = None  # made in the event loop, on first use

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """Resolve `host`; RefusedAddress when any of its addresses is forbidden."""
        if self._inner is None:
            self._inner = DefaultResolver()
        results = await self._inner.resolve(host, port, family)
        for result in results:
            address = ipaddress.ip_address(str(result["host"]).split("%", 1)[0])
            if reason := address_refusal(address, self._policy):
                log.warning(
                    "provider host %s resolves to %s: not called (%s)", host, address, reason
                )
                raise RefusedAddress(f"{host} resolves to a refused address")
        return results

    async def close(self) -> None:
        """Release the inner resolver."""
        if self._inner is not None:
            await self._inner.close()

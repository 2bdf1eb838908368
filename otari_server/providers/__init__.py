"""Upstream providers: configuration, model addressing, and wire-format translation."""

from otari_server.providers.registry import (
    ModelAddressError,
    Provider,
    ProviderConfigError,
    build_providers,
    resolve,
)

__all__ = ["ModelAddressError", "Provider", "ProviderConfigError", "build_providers", "resolve"]

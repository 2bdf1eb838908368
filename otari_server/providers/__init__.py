"""Who we call and how their failures look: provider registry, presets, the pooled client.

Lives here: `[providers.NAME]` configuration and model addressing (`registry`), built-in presets,
the one pooled aiohttp client (`upstream`), provider error bodies, and the scrubbing of provider
keys from what clients see.

May import: `errors`, `settings`, `jsonio`.
Imported by: `generation/`, `routing/`, `tools/`, `connected/`, `api/`, `runtime`.
"""

from otari_server.providers.registry import (
    ModelAddressError,
    Provider,
    ProviderConfigError,
    build_providers,
    resolve,
)

__all__ = ["ModelAddressError", "Provider", "ProviderConfigError", "build_providers", "resolve"]

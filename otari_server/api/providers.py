"""GET /v1/providers: which providers this gateway forwards to, and where each came from."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from otari_server.deps import MasterDep, RuntimeDep
from otari_server.providers.presets import PRESETS

router = APIRouter(prefix="/v1/providers", tags=["providers"])


class ProviderInfo(BaseModel):
    """One configured provider; never its key, only whether one is set."""

    name: str
    type: str
    base_url: str
    api_key_set: bool
    source: str  # "config" ([providers.NAME]) or "environment (VAR)" (an enabled preset)


class ProviderList(BaseModel):
    """The providers `provider:model` may name."""

    object: str = "list"
    data: list[ProviderInfo]


@router.get("", response_model=ProviderList)
def list_providers(_master: MasterDep, runtime: RuntimeDep) -> ProviderList:
    """Configured providers, and the presets enabled by their environment variables."""
    tables = runtime.settings.providers
    infos = []
    for name, provider in sorted(runtime.providers.items()):
        if name in tables:
            source = "config"
        else:
            preset = PRESETS.get(name)
            variables = ", ".join(preset.key_env) if preset else ""
            source = f"environment ({variables})"
        infos.append(
            ProviderInfo(
                name=name,
                type=provider.type,
                base_url=provider.base_url,
                api_key_set=bool(provider.api_key),
                source=source,
            )
        )
    return ProviderList(data=infos)

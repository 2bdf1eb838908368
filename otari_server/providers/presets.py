"""Built-in presets: naming a well-known provider is enough to configure it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

ProviderType = Literal["openai", "anthropic"]
PROVIDER_TYPES: tuple[ProviderType, ...] = ("openai", "anthropic")

# The Messages API refuses requests without a version header; this is the stable one.
ANTHROPIC_VERSION = "2023-06-01"


@dataclass(frozen=True, slots=True)
class Preset:
    """Defaults for one well-known provider."""

    type: ProviderType
    base_url: str
    # Environment variables that may hold the key, first match wins; empty for local servers.
    key_env: tuple[str, ...] = ()
    headers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


def _hosted(base_url: str, *key_env: str) -> Preset:
    return Preset(type="openai", base_url=base_url, key_env=key_env)


def _local(base_url: str) -> Preset:
    return Preset(type="openai", base_url=base_url)


PRESETS: Mapping[str, Preset] = MappingProxyType(
    {
        "openai": _hosted("https://api.openai.com/v1", "OPENAI_API_KEY"),
        "anthropic": Preset(
            type="anthropic",
            base_url="https://api.anthropic.com/v1",
            key_env=("ANTHROPIC_API_KEY",),
            headers=MappingProxyType({"anthropic-version": ANTHROPIC_VERSION}),
        ),
        "mistral": _hosted("https://api.mistral.ai/v1", "MISTRAL_API_KEY"),
        "groq": _hosted("https://api.groq.com/openai/v1", "GROQ_API_KEY"),
        "together": _hosted("https://api.together.xyz/v1", "TOGETHER_API_KEY"),
        "fireworks": _hosted("https://api.fireworks.ai/inference/v1", "FIREWORKS_API_KEY"),
        "deepseek": _hosted("https://api.deepseek.com/v1", "DEEPSEEK_API_KEY"),
        "openrouter": _hosted("https://openrouter.ai/api/v1", "OPENROUTER_API_KEY"),
        "xai": _hosted("https://api.x.ai/v1", "XAI_API_KEY"),
        # Perplexity serves chat completions at the root, without a /v1 segment.
        "perplexity": _hosted("https://api.perplexity.ai", "PERPLEXITY_API_KEY", "PPLX_API_KEY"),
        "cerebras": _hosted("https://api.cerebras.ai/v1", "CEREBRAS_API_KEY"),
        "gemini": _hosted(
            "https://generativelanguage.googleapis.com/v1beta/openai",
            "GEMINI_API_KEY",
            "GOOGLE_API_KEY",
        ),
        "deepinfra": _hosted("https://api.deepinfra.com/v1/openai", "DEEPINFRA_API_KEY"),
        "sambanova": _hosted("https://api.sambanova.ai/v1", "SAMBANOVA_API_KEY"),
        "nebius": _hosted("https://api.studio.nebius.com/v1", "NEBIUS_API_KEY"),
        "moonshot": _hosted("https://api.moonshot.ai/v1", "MOONSHOT_API_KEY"),
        "huggingface": _hosted("https://router.huggingface.co/v1", "HF_TOKEN"),
        "ollama": _local("http://localhost:11434/v1"),
        "llamafile": _local("http://localhost:8080/v1"),
        "llamacpp": _local("http://localhost:8080/v1"),
        "lmstudio": _local("http://localhost:1234/v1"),
        "vllm": _local("http://localhost:8000/v1"),
    }
)

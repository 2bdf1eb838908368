"""Provider presets, configuration building and model addressing."""

from __future__ import annotations

import pytest

from otari_server.providers import (
    ModelAddressError,
    Provider,
    ProviderConfigError,
    build_providers,
    resolve,
)
from otari_server.providers.presets import PRESETS

REQUIRED_PRESETS = [
    *("openai", "anthropic", "mistral", "groq", "together", "fireworks", "deepseek"),
    *("openrouter", "xai", "perplexity", "cerebras", "ollama", "llamafile", "lmstudio", "vllm"),
]


def test_every_required_preset_exists_with_a_usable_base_url() -> None:
    for name in REQUIRED_PRESETS:
        preset = PRESETS[name]
        assert preset.type in ("openai", "anthropic")
        assert preset.base_url.startswith(("https://", "http://localhost:"))
        assert not preset.base_url.endswith("/")


def test_naming_a_preset_is_enough() -> None:
    providers = build_providers({"openai": {}, "anthropic": {}}, {})
    assert providers["openai"] == Provider(
        name="openai", type="openai", base_url="https://api.openai.com/v1"
    )
    anthropic = providers["anthropic"]
    assert anthropic.type == "anthropic"
    assert anthropic.base_url == "https://api.anthropic.com/v1"
    assert anthropic.headers == {"anthropic-version": "2023-06-01"}


@pytest.mark.parametrize(
    ("name", "variable"),
    [
        ("openai", "OPENAI_API_KEY"),
        ("anthropic", "ANTHROPIC_API_KEY"),
        ("mistral", "MISTRAL_API_KEY"),
        ("groq", "GROQ_API_KEY"),
        ("together", "TOGETHER_API_KEY"),
        ("fireworks", "FIREWORKS_API_KEY"),
        ("deepseek", "DEEPSEEK_API_KEY"),
        ("openrouter", "OPENROUTER_API_KEY"),
        ("xai", "XAI_API_KEY"),
        ("perplexity", "PERPLEXITY_API_KEY"),
        ("perplexity", "PPLX_API_KEY"),
        ("cerebras", "CEREBRAS_API_KEY"),
    ],
)
def test_api_key_comes_from_the_usual_variable(name: str, variable: str) -> None:
    providers = build_providers({name: {}}, {variable: "secret"})
    assert providers[name].api_key == "secret"


def test_local_presets_need_no_key() -> None:
    providers = build_providers({"ollama": {}, "lmstudio": {}, "vllm": {}, "llamafile": {}}, {})
    assert providers["ollama"].base_url == "http://localhost:11434/v1"
    assert providers["lmstudio"].base_url == "http://localhost:1234/v1"
    assert providers["vllm"].base_url == "http://localhost:8000/v1"
    assert providers["llamafile"].base_url == "http://localhost:8080/v1"
    assert all(p.api_key is None for p in providers.values())
    assert providers["ollama"].request_headers() == {}


def test_table_overrides_the_preset() -> None:
    table = {
        "openai": {
            "api_key": "explicit",
            "base_url": "http://127.0.0.1:9999/v1/",
            "headers": {"OpenAI-Organization": "org-1"},
            "timeout": 5,
        }
    }
    provider = build_providers(table, {"OPENAI_API_KEY": "from-env"})["openai"]
    assert provider.api_key == "explicit"
    assert provider.base_url == "http://127.0.0.1:9999/v1"
    assert provider.timeout == 5.0
    assert provider.url("/chat/completions") == "http://127.0.0.1:9999/v1/chat/completions"
    assert provider.request_headers() == {
        "OpenAI-Organization": "org-1",
        "Authorization": "Bearer explicit",
    }


def test_anthropic_authenticates_with_x_api_key_and_keeps_the_version_header() -> None:
    table = {"anthropic": {"headers": {"anthropic-beta": "prompt-caching-2024-07-31"}}}
    provider = build_providers(table, {"ANTHROPIC_API_KEY": "sk-ant"})["anthropic"]
    assert provider.request_headers() == {
        "anthropic-version": "2023-06-01",
        "anthropic-beta": "prompt-caching-2024-07-31",
        "x-api-key": "sk-ant",
    }


def test_environment_references_are_expanded() -> None:
    settings = {"type": "openai", "base_url": "https://llm.example/v1", "api_key": "${K}"}
    table = {"work": {**settings, "headers": {"X-Tenant": "t-${TENANT}"}}}
    provider = build_providers(table, {"K": "k1", "TENANT": "7"})["work"]
    assert provider.api_key == "k1"
    assert provider.headers == {"X-Tenant": "t-7"}


def test_a_custom_provider_needs_type_and_base_url() -> None:
    table = {"corp": {"type": "anthropic", "base_url": "https://proxy.corp/anthropic/v1"}}
    provider = build_providers(table, {})["corp"]
    assert (provider.type, provider.api_key, provider.headers) == ("anthropic", None, {})


def test_the_key_is_not_in_the_repr() -> None:
    provider = build_providers({"openai": {"api_key": "sk-very-secret"}}, {})["openai"]
    assert "sk-very-secret" not in repr(provider)


def test_autodetect_enables_presets_with_a_key_in_the_environment() -> None:
    environ = {"GROQ_API_KEY": "g", "UNRELATED": "x"}
    assert set(build_providers({}, environ, autodetect=True)) == {"groq"}
    assert build_providers({}, environ) == {}


@pytest.mark.parametrize(
    ("table", "environ", "key"),
    [
        ({"corp": {"base_url": "https://x/v1"}}, {}, "providers.corp.type"),
        ({"corp": {"type": "openai"}}, {}, "providers.corp.base_url"),
        ({"openai": {"type": "gemini"}}, {}, "providers.openai.type"),
        ({"openai": {"base_url": "ftp://x"}}, {}, "providers.openai.base_url"),
        ({"openai": {"timeout": 0}}, {}, "providers.openai.timeout"),
        ({"openai": {"timeout": "10"}}, {}, "providers.openai.timeout"),
        ({"openai": {"timeout": True}}, {}, "providers.openai.timeout"),
        ({"openai": {"api_key": 12}}, {}, "providers.openai.api_key"),
        ({"openai": {"api_key": "${MISSING}"}}, {}, "providers.openai.api_key"),
        ({"openai": {"headers": ["x"]}}, {}, "providers.openai.headers"),
        ({"openai": {"headers": {"X": 1}}}, {}, "providers.openai.headers.X"),
        ({"openai": {"apikey": "x"}}, {}, "providers.openai.apikey"),
        ({"openai": "x"}, {}, "providers.openai"),
        ({"a:b": {}}, {}, "providers.a:b"),
    ],
)
def test_invalid_tables_name_the_offending_key(
    table: dict[str, object], environ: dict[str, str], key: str
) -> None:
    with pytest.raises(ProviderConfigError) as caught:
        build_providers(table, environ)
    assert caught.value.key == key
    assert str(caught.value).startswith(f"{key}: ")
    assert "\n" not in str(caught.value)
    assert isinstance(caught.value, ValueError)


@pytest.fixture
def providers() -> dict[str, Provider]:
    return build_providers({"openai": {}, "openrouter": {}, "ollama": {}, "anthropic": {}}, {})


@pytest.mark.parametrize(
    ("model", "provider", "upstream"),
    [
        ("openai:gpt-4o-mini", "openai", "gpt-4o-mini"),
        ("openai/gpt-4o-mini", "openai", "gpt-4o-mini"),
        ("openrouter/meta-llama/llama-3-70b", "openrouter", "meta-llama/llama-3-70b"),
        ("openrouter:meta-llama/llama-3-70b", "openrouter", "meta-llama/llama-3-70b"),
        ("ollama:llama3:8b", "ollama", "llama3:8b"),
        ("ollama/llama3:8b", "ollama", "llama3:8b"),
        ("anthropic:claude-sonnet-4-5", "anthropic", "claude-sonnet-4-5"),
    ],
)
def test_resolve(providers: dict[str, Provider], model: str, provider: str, upstream: str) -> None:
    assert resolve(model, providers) == (providers[provider], upstream)


@pytest.mark.parametrize(
    ("model", "problem"),
    [
        ("", "model is required"),
        ("   ", "model is required"),
        ("gpt-4o", "must be given as 'provider:model'"),
        ("mystery:gpt-4o", "unknown provider 'mystery'"),
        ("meta-llama/llama-3-70b", "unknown provider 'meta-llama'"),
        ("openai:", "names no model"),
        ("openrouter/", "names no model"),
    ],
)
def test_resolve_errors_list_the_configured_providers(
    providers: dict[str, Provider], model: str, problem: str
) -> None:
    with pytest.raises(ModelAddressError) as caught:
        resolve(model, providers)
    message = str(caught.value)
    assert problem in message
    assert message.endswith("configured providers: anthropic, ollama, openai, openrouter")
    assert caught.value.providers == ("anthropic", "ollama", "openai", "openrouter")


def test_resolve_without_providers_says_so() -> None:
    with pytest.raises(ModelAddressError, match="configured providers: none"):
        resolve("openai:gpt-4o", {})

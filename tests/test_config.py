"""Settings parsing: every variable, its default, and the one-line error for a bad value."""

from __future__ import annotations

import pytest

from reranker_template.errors import ConfigError
from reranker_template.settings import (
    DEFAULT_MODEL,
    ParallelMode,
    ProvisioningFailure,
    is_true,
    load_settings,
)


def test_defaults() -> None:
    settings = load_settings({})
    assert settings.model_name == DEFAULT_MODEL == "Qwen/Qwen3-Reranker-0.6B"
    assert settings.served_model_name == DEFAULT_MODEL
    assert settings.vllm_args == ()
    assert settings.use_all_gpus is True
    assert (settings.gateway_host, settings.gateway_port, settings.vllm_port) == ("0.0.0.0", 8000, 18000)
    assert settings.enable_auth and not settings.enable_https and settings.truncate and settings.quality_check
    assert settings.tokens == ()


def test_served_model_name_defaults_to_model_name() -> None:
    assert load_settings({"MODEL_NAME": "BAAI/bge-reranker-base"}).served_model_name == "BAAI/bge-reranker-base"
    assert (
        load_settings({"MODEL_NAME": "BAAI/bge-reranker-base", "SERVED_MODEL_NAME": "bge"}).served_model_name == "bge"
    )


def test_vllm_args_are_shell_split() -> None:
    settings = load_settings({"VLLM_ARGS": "--max-model-len 4096 --hf-overrides '{\"a\": [1, 2]}'"})
    assert settings.vllm_args == ("--max-model-len", "4096", "--hf-overrides", '{"a": [1, 2]}')


@pytest.mark.parametrize(
    "raw,expected", [("true", True), ("1", True), ("YES", True), ("off", False), ("False", False), ("0", False)]
)
def test_booleans(raw: str, expected: bool) -> None:
    assert load_settings({"USE_ALL_GPUS": raw}).use_all_gpus is expected


@pytest.mark.parametrize(
    "raw,expected",
    [
        ("1", True),
        ("true", True),
        ("Yes", True),
        (" ON ", True),
        ("0", False),
        ("", False),
        ("maybe", False),
        (None, False),
    ],
)
def test_is_true_is_the_one_reading_of_a_setting_as_true(raw: str | None, expected: bool) -> None:
    assert is_true(raw) is expected
    if raw is not None and raw.strip():  # a strict setting agrees wherever it accepts the value
        try:
            assert load_settings({"TRUNCATE": raw}).truncate is expected
        except ConfigError:
            assert not expected


def test_choices_are_enums_and_their_message_lists_them() -> None:
    settings = load_settings({"PARALLEL_MODE": "DP", "PROVISIONING_FAILURE": "stop"})
    assert settings.parallel_mode is ParallelMode.DP and settings.provisioning_failure is ProvisioningFailure.STOP
    defaults = load_settings({})
    assert (defaults.parallel_mode, defaults.provisioning_failure) == (ParallelMode.AUTO, ProvisioningFailure.CONTINUE)
    assert f"PARALLEL_MODE={settings.parallel_mode}" == "PARALLEL_MODE=dp"  # messages show the value


def test_empty_values_mean_default() -> None:
    """Vast templates often carry `KEY=` with nothing after it."""
    settings = load_settings({"MODEL_NAME": "", "USE_ALL_GPUS": " ", "GATEWAY_PORT": ""})
    assert settings.model_name == DEFAULT_MODEL and settings.use_all_gpus and settings.gateway_port == 8000


def test_tokens_from_every_source_deduplicated() -> None:
    env = {"OPEN_BUTTON_TOKEN": "open", "API_KEYS": "k1, k2,,open", "WEB_PASSWORD": "pw", "VLLM_API_KEY": "vk"}
    assert set(load_settings(env).tokens) == {"open", "k1", "k2", "pw", "vk"}
    assert len(load_settings(env).tokens) == 5


def test_tokens_never_in_repr() -> None:
    settings = load_settings({"API_KEYS": "secret-key-123", "HF_TOKEN": "hf_secret"})
    assert "secret-key-123" not in repr(settings) and "hf_secret" not in repr(settings)


@pytest.mark.parametrize(
    "env,message",
    [
        ({"USE_ALL_GPUS": "maybe"}, "USE_ALL_GPUS='maybe' is not valid: expected true or false"),
        ({"GATEWAY_PORT": "http"}, "GATEWAY_PORT='http' is not valid: expected a TCP port number between 1 and 65535"),
        ({"VLLM_PORT": "0"}, "VLLM_PORT='0' is not valid"),
        ({"GATEWAY_PORT": "9000", "VLLM_PORT": "9000"}, "a port other than GATEWAY_PORT (9000)"),
        ({"PARALLEL_MODE": "pp"}, "PARALLEL_MODE='pp' is not valid: expected one of auto, tp, dp"),
        ({"VLLM_ARGS": "--x 'open"}, "VLLM_ARGS="),
        ({"MAX_REQUEST_BYTES": "-1"}, "MAX_REQUEST_BYTES='-1' is not valid: expected a positive whole number"),
        ({"PROVISIONING_FAILURE": "explode"}, "expected one of continue, stop"),
        ({"PROVISIONING_SHA256": "abc"}, "64 hexadecimal characters"),
        ({"GPU_COUNT": "two"}, "GPU_COUNT='two' is not valid"),
        ({"WATCHDOG_TIMEOUT": "soon"}, "WATCHDOG_TIMEOUT='soon' is not valid: expected a positive number"),
    ],
)
def test_bad_values_name_variable_value_and_what_is_accepted(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)

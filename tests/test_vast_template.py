"""The Vast pieces that need no server: template.json, generated from README's "Deploy on Vast.ai" section
so the two never disagree; the GPU memory filter and its units; the SDK Protocol against the real SDK and
against the stand-in (tests/support/fake_vast.py). The commands end to end: test_vast.py (search, launch)
and test_vast_instances.py (after the rent).
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest
from support.fake_vast import CLIENT_ROUTES, ROUTES

from reranker_template.cli import main
from reranker_template.errors import VastError
from reranker_template.release import IMAGE_REPOSITORY, IMAGE_TAG
from reranker_template.settings import load_settings
from reranker_template.vast.api import TemplateFields, VastApi
from reranker_template.vast.offers import GpuRamFilter, gpu_ram_filter
from reranker_template.vast.template import readme_section, template_body

REPO = Path(__file__).resolve().parent.parent


def test_template_json_is_the_generated_body(capsys):
    readme = (REPO / "README.md").read_text()
    committed = json.loads((REPO / "template.json").read_text())
    assert committed == template_body(readme_section(readme)), (
        "template.json is stale: run `reranker vast template --write template.json`"
    )
    assert main(["vast", "template", "--dry-run"]) == 0
    assert json.loads(capsys.readouterr().out) == committed


def test_template_readme_is_the_readme_section():
    readme = (REPO / "README.md").read_text()
    section = json.loads((REPO / "template.json").read_text())["readme"]
    assert section.startswith("## Deploy on Vast.ai\n")
    assert section.strip() in readme
    # From pip install to a rerank call, console path and CLI path.
    for needle in (
        "pip install",
        "reranker vast launch",
        "/v1/rerank",
        "**Open**",
        "reranker vast template",
        "API_KEYS",
    ):
        assert needle in section
    assert "<!-- section:" not in section


def test_readme_section_stops_at_the_next_heading_but_not_inside_code():
    text = "# T\n\n## Deploy on Vast.ai\n\nintro\n\n```bash\n## not a heading\n```\n\nend\n\n## Next\nother\n"
    assert readme_section(text) == "## Deploy on Vast.ai\n\nintro\n\n```bash\n## not a heading\n```\n\nend\n"
    with pytest.raises(VastError):
        readme_section("# no such section\n")


def test_template_settings_are_valid_and_keep_the_entrypoint():
    pytest.importorskip("vastai")
    from vastai.utils import parse_env

    body = json.loads((REPO / "template.json").read_text())
    assert (body["image"], body["tag"]) == (IMAGE_REPOSITORY, IMAGE_TAG)
    assert body["runtype"] == "args" and body["onstart"] is None
    env = parse_env(body["env"])  # how Vast reads the docker options
    assert env == {
        "-p 8000:8000": "1",
        "-p 22:22": "1",  # the image's own sshd, which runs only when SSH_PUBLIC_KEY is set
        "OPEN_BUTTON_PORT": "8000",
        "MODEL_NAME": "Qwen/Qwen3-Reranker-0.6B",
        "VLLM_ARGS": "",
        "USE_ALL_GPUS": "true",
        "API_KEYS": "",
        "SSH_PUBLIC_KEY": "",
        "PROVISIONING_SCRIPT": "",
        "ENABLE_HTTPS": "false",
    }
    settings = load_settings({k: v for k, v in env.items() if not k.startswith("-")})
    assert settings.gateway_port == 8000 and settings.use_all_gpus and not settings.enable_https
    assert (
        settings.ssh_public_keys == () and settings.ssh_port == 22
    )  # no key in the template: no sshd until the user adds one
    assert body["extra_filters"]["gpu_ram"] == {"gte": 16000.0}
    assert body["extra_filters"]["compute_cap"] == {"gte": 750}
    assert body["extra_filters"]["reliability2"] == {"gte": 0.95}
    assert body["recommended_disk_space"] == 40.0


@pytest.mark.parametrize(
    "model_need_gib, user_min_gb, expected",
    [
        (None, None, GpuRamFilter(16000, "16 GB", "the 16 GB default: the model's size is unknown")),
        (3.24, None, GpuRamFilter(16000, "16 GB", "the 16 GB minimum; the model needs 3.2 GiB")),
        (17.5, None, GpuRamFilter(17920, "17.5 GiB", "what the model needs per GPU")),
        (None, 24.0, GpuRamFilter(24000, "24 GB", "--min-gpu-ram")),
        (40.0, 12.5, GpuRamFilter(12500, "12.5 GB", "--min-gpu-ram")),  # the user's floor wins
    ],
)
def test_gpu_ram_filter_keeps_mib_and_shows_the_unit_it_came_in(model_need_gib, user_min_gb, expected):
    assert gpu_ram_filter(model_need_gib, user_min_gb) == expected


def protocol_methods() -> set[str]:
    return {name for name, value in vars(VastApi).items() if inspect.isfunction(value) and not name.startswith("_")}


def test_the_vast_api_protocol_is_what_the_sdk_offers():
    """Every method the package calls exists on the real SDK and takes the parameters we pass by name."""
    vastai = pytest.importorskip("vastai")
    assert len(protocol_methods()) == 19
    for name in protocol_methods():
        theirs = inspect.signature(getattr(vastai.VastAI, name)).parameters
        for param in inspect.signature(getattr(VastApi, name)).parameters.values():
            if param.kind is inspect.Parameter.VAR_KEYWORD:  # **fields: TemplateFields, or the SDK's own **kwargs
                if name.endswith("_template"):
                    assert set(TemplateFields.__annotations__) <= set(theirs), name
            else:
                assert param.name in theirs, f"VastAI.{name} has no parameter {param.name!r}"


def test_the_stand_in_serves_every_protocol_method():
    assert set(ROUTES) - CLIENT_ROUTES == protocol_methods()

"""template.json is generated from README's "Deploy on Vast.ai" section, so the two never disagree."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reranker_template import vast
from reranker_template.cli import main
from reranker_template.release import IMAGE_REPOSITORY, IMAGE_TAG
from reranker_template.settings import load_settings

REPO = Path(__file__).resolve().parent.parent


def test_template_json_is_the_generated_body(capsys):
    readme = (REPO / "README.md").read_text()
    committed = json.loads((REPO / "template.json").read_text())
    assert committed == vast.template_body(vast.readme_section(readme)), (
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
    assert vast.readme_section(text) == "## Deploy on Vast.ai\n\nintro\n\n```bash\n## not a heading\n```\n\nend\n"
    with pytest.raises(vast.VastError):
        vast.readme_section("# no such section\n")


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

"""The Vast template: its body (template.json), its readme (README's "Deploy on Vast.ai" section), publishing it.

Rule: template.json is generated, never edited: `reranker vast template --write template.json`, so the
template, the README and what `launch` sends cannot disagree (tests check all three).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reranker_template.errors import VastError
from reranker_template.release import IMAGE_REPOSITORY, IMAGE_TAG
from reranker_template.settings import DEFAULT_MODEL
from reranker_template.vast.api import TemplateFields, VastApi, vast_call
from reranker_template.vast.instances import GATEWAY_PORT, SSH_PORT
from reranker_template.vast.offers import DEFAULT_DISK_GB, OfferQuery, gpu_ram_filter

TEMPLATE_NAME = "vLLM Reranker (reranker-template)"
TEMPLATE_DESC = "vLLM serving a reranker behind token auth: /v1/rerank, /v2/rerank, /v1/score on port 8000"
README_SECTION_HEADING = "## Deploy on Vast.ai"

TEMPLATE_SETTINGS: tuple[tuple[str, str], ...] = (
    ("OPEN_BUTTON_PORT", str(GATEWAY_PORT)),
    ("MODEL_NAME", DEFAULT_MODEL),
    ("VLLM_ARGS", ""),
    ("USE_ALL_GPUS", "true"),
    ("API_KEYS", ""),
    ("SSH_PUBLIC_KEY", ""),
    ("PROVISIONING_SCRIPT", ""),
    ("ENABLE_HTTPS", "false"),
)


def template_env() -> str:
    """Docker options as Vast stores them: the public ports, then the settings with their defaults."""
    parts = [f"-p {GATEWAY_PORT}:{GATEWAY_PORT}", f"-p {SSH_PORT}:{SSH_PORT}"]
    parts += [f"-e {key}={value}" for key, value in TEMPLATE_SETTINGS]
    return " ".join(parts)


def template_filters() -> dict[str, Any]:
    """The offers the console shows for the template (the model is chosen later, so the default floor)."""
    return OfferQuery(gpu_ram_filter(None, None)).filters()


def readme_section(readme_md: str) -> str:
    """The "Deploy on Vast.ai" section of README.md: from its heading to the next `## ` heading."""
    lines = readme_md.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == README_SECTION_HEADING)
    except StopIteration:
        raise VastError(f"README.md has no {README_SECTION_HEADING!r} section") from None
    end = len(lines)
    in_code = False
    for i in range(start + 1, len(lines)):
        if lines[i].lstrip().startswith("```"):
            in_code = not in_code
        elif not in_code and (lines[i].startswith("## ") or lines[i].startswith("<!-- section:")):
            end = i
            break
    return "\n".join(lines[start:end]).strip() + "\n"


def project_readme() -> str:
    """README.md of a checkout, else the installed package's long description (the same file)."""
    candidate = Path(__file__).resolve().parents[2] / "README.md"
    if candidate.is_file():
        text = candidate.read_text()
        if README_SECTION_HEADING in text:
            return text
    from importlib.metadata import PackageNotFoundError, metadata

    try:
        return metadata("reranker-template")["Description"] or ""  # the metadata's body, as a header
    except (PackageNotFoundError, KeyError):
        raise VastError("cannot find README.md (the template's readme comes from it)") from None


def template_body(readme: str) -> dict[str, Any]:
    """The template as Vast's API takes it (and as template.json holds it)."""
    return {
        "name": TEMPLATE_NAME,
        "image": IMAGE_REPOSITORY,
        "tag": IMAGE_TAG,
        "env": template_env(),
        "onstart": None,
        "runtype": "args",  # keeps the image's ENTRYPOINT (`reranker boot`); ssh/jupyter would replace it
        "use_ssh": False,
        "readme": readme,
        "readme_visible": True,
        "desc": TEMPLATE_DESC,
        "extra_filters": template_filters(),
        "recommended_disk_space": DEFAULT_DISK_GB,
        "private": True,
    }


def template_json(body: Mapping[str, Any]) -> str:
    return json.dumps(body, indent=2) + "\n"


@dataclass(frozen=True)
class Published:
    action: str  # "created" or "updated"
    hash_id: str | None
    template_id: int | None


def find_own_template(client: VastApi, name: str) -> dict[str, Any] | None:
    """The caller's own template with this name (public templates by others can share it)."""
    with vast_call("looking up your templates"):
        user_id = client.show_user().get("id")
        matches = client.search_templates({"name": {"eq": name}}) or []
    own = [t for t in matches if t.get("creator_id") == user_id and t.get("name") == name]
    return max(own, key=lambda t: t.get("id") or 0) if own else None


def _fields(body: Mapping[str, Any], public: bool) -> TemplateFields:
    """template.json's body in the SDK's keyword names."""
    return TemplateFields(
        name=body["name"],
        image=body["image"],
        image_tag=body["tag"],
        env=body["env"],
        onstart_cmd=body.get("onstart"),
        runtype=body["runtype"],
        use_ssh=body.get("use_ssh", False),
        readme=body["readme"],
        readme_visible=body.get("readme_visible", True),
        desc=body.get("desc"),
        extra_filters=body["extra_filters"],
        disk_space=body["recommended_disk_space"],
        private=not public,
    )


def publish_template(client: VastApi, body: Mapping[str, Any], public: bool = False) -> Published:
    """Create the template, or update the caller's existing one with the same name."""
    fields = _fields(body, public)
    existing = find_own_template(client, body["name"])
    if existing is None:
        with vast_call("creating the template"):
            reply = client.create_template(**fields)
        action = "created"
    else:
        with vast_call("updating the template"):
            try:
                reply = client.update_template(hash_id=existing["hash_id"], **fields)
            except ValueError as exc:  # the SDK's "no template with this hash_id"
                raise VastError(f"cannot update template {existing.get('hash_id')}: {exc}") from None
        action = "updated"
    if not isinstance(reply, dict):
        reply = {}
    if reply.get("success") is False:
        raise VastError(f"Vast did not save the template: {reply.get('msg') or reply.get('error')}")
    template = reply.get("template", reply)
    return Published(action, template.get("hash_id"), template.get("id"))

"""The Open-button landing page and the token prompt, rendered from templates shipped in the package.

Everything on the page comes from the gateway itself (no CDN: an instance may have no route to one), and
every value is HTML-escaped here; the page's script only talks to its own origin.
"""

from __future__ import annotations

import html
import json
import shlex
from dataclasses import dataclass
from functools import cache
from importlib import resources
from string import Template

from reranker_template.plan.contract import Plan
from reranker_template.protocol import HealthBody, HealthState
from reranker_template.release import PACKAGE_VERSION, VLLM_VERSION

STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@cache
def static_file(name: str) -> bytes:
    """A file from gateway/static (read once: they never change while the gateway runs)."""
    return resources.files(__package__).joinpath("static", name).read_bytes()


def static_assets() -> dict[str, tuple[bytes, str]]:
    """The public assets, by file name: content and Content-Type."""
    return {name: (static_file(name), STATIC_TYPES[ext]) for ext in STATIC_TYPES for name in (f"landing{ext}",)}


@dataclass(frozen=True)
class PageFacts:
    base_url: str  # as the browser reached us, e.g. http://1.2.3.4:41234
    token: str | None  # the token this browser authenticated with (None: auth is off)
    model: str  # served model name: what clients send as "model"
    health: HealthBody
    plan: Plan | None  # None until the stack has written plan.json
    ssh_command: str
    vllm_port: int


def curl_example(base_url: str, token: str | None, model: str) -> str:
    auth = f"  -H 'Authorization: Bearer {token}' \\\n" if token else ""
    body = json.dumps(
        {
            "model": model,
            "query": "What is deep learning?",
            "documents": ["Deep learning is a subset of machine learning.", "I like pizza."],
            "top_n": 2,
        },
        indent=2,
    )
    return f"curl {base_url}/v1/rerank \\\n{auth}  -H 'Content-Type: application/json' \\\n  -d {shlex.quote(body)}"


def python_example(base_url: str, token: str | None, model: str) -> str:
    headers = f'headers={{"Authorization": "Bearer {token}"}},\n    ' if token else ""
    return (
        "import requests\n\n"
        "response = requests.post(\n"
        f'    "{base_url}/v1/rerank",\n'
        f"    {headers}json={{\n"
        f'        "model": {json.dumps(model)},\n'
        '        "query": "What is deep learning?",\n'
        '        "documents": ["Deep learning is a subset of machine learning.", "I like pizza."],\n'
        "    },\n"
        "    timeout=60,\n"
        ")\n"
        "response.raise_for_status()\n"
        'for result in response.json()["results"]:\n'
        "    print(f\"{result['relevance_score']:.4f}  {result['document']['text']}\")"
    )


def cohere_example(base_url: str, token: str | None, model: str) -> str:
    return (
        "import cohere\n\n"
        f'co = cohere.ClientV2({json.dumps(token or "unused")}, base_url="{base_url}")\n'
        "result = co.rerank(\n"
        f"    model={json.dumps(model)},\n"
        '    query="What is deep learning?",\n'
        '    documents=["Deep learning is a subset of machine learning.", "I like pizza."],\n'
        ")\n"
        "for doc in result.results:\n"
        '    print(f"{doc.relevance_score:.4f}  {doc.index}")'
    )


def _gpus_html(plan: Plan | None) -> str:
    if plan is None:
        return '<p class="muted">The plan is not written yet (the stack is still starting).</p>'
    if not plan.gpus:
        return f"<p>No GPU: vLLM runs on the CPU ({html.escape(str(plan.device))} mode).</p>"
    rows = [
        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>".format(
            gpu.index,
            html.escape(gpu.name),
            f"{gpu.memory_mib / 1024:.1f} GiB" if gpu.memory_mib else "?",
            html.escape(str(gpu.compute_capability or "?")),
        )
        for gpu in plan.gpus
    ]
    return (
        "<h3>GPUs</h3><table><thead><tr><th>#</th><th>Model</th><th>Memory</th><th>Compute capability</th></tr>"
        f"</thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _plan_html(plan: Plan | None) -> str:
    if plan is None:
        return ""
    items = [
        ("Model", plan.model),
        ("Served as", plan.served_model_name),
        ("Preset", plan.preset or "none"),
        ("Device", plan.device),
        ("GPUs used", plan.gpus_used),  # the layout's, not the visible count (USE_ALL_GPUS=false: 1)
        ("Tensor parallel", plan.tensor_parallel_size),
        ("Data parallel", plan.data_parallel_size),
    ]
    if plan.quantized_copy is not None:
        items.insert(3, ("Weights", f"int8 copy (CPU_QUANTIZATION=int8): {plan.quantized_copy.measured_error}"))
    if plan.license:
        items.insert(3, ("License", plan.license + (": non-commercial use only" if plan.non_commercial else "")))
    facts = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(str(v))}</dd>" for k, v in items)
    command = shlex.join(plan.vllm_command)
    reasons = "".join(f"<li>{html.escape(reason)}</li>" for reason in plan.reasons)
    parts = [f"<h3>Plan</h3><dl>{facts}</dl>"]
    if command:
        parts.append(
            f"<details><summary>vLLM command</summary><pre><code>{html.escape(command)}</code></pre></details>"
        )
    if reasons:
        parts.append(f"<details><summary>Why these flags</summary><ul>{reasons}</ul></details>")
    return "".join(parts)


def _license_html(plan: Plan | None) -> str:
    """A non-commercial licence is said at the top of the page, where whoever opens it sees it."""
    if plan is None or not plan.non_commercial:
        return ""
    return (
        f'<p class="licence" id="licence"><b>Non-commercial use only:</b> {html.escape(plan.model)} is licensed '
        f"{html.escape(plan.license or 'non-commercially')} by its authors (model card).</p>"
    )


def _status_text(health: HealthBody) -> str:
    text = str(health.status)
    if health.status is HealthState.LOADING and health.phase:
        text += f" ({health.phase})"
    if health.status is not HealthState.READY and health.reason:
        text += f": {health.reason}"
    if health.status is HealthState.READY and health.quality_check:
        text += f" · quality check {health.quality_check}"
    return text


def render_landing(facts: PageFacts) -> str:
    escape = html.escape
    token_note = (
        " · token: the one you opened this page with (it is in the examples below; keep it secret)."
        if facts.token
        else " · <b>auth is off</b> (ENABLE_AUTH=false): anyone who can reach this port can use it."
    )
    template = Template(static_file("landing.html").decode("utf-8"))
    return template.substitute(
        model=escape(facts.model),
        model_attr=escape(facts.model, quote=True),
        status=escape(str(facts.health.status), quote=True),
        status_text=escape(_status_text(facts.health)),
        base_url=escape(facts.base_url),
        token_note=token_note,
        curl_example=escape(curl_example(facts.base_url, facts.token, facts.model)),
        python_example=escape(python_example(facts.base_url, facts.token, facts.model)),
        cohere_example=escape(cohere_example(facts.base_url, facts.token, facts.model)),
        ssh_command=escape(facts.ssh_command),
        vllm_port=facts.vllm_port,
        gpus_html=_gpus_html(facts.plan),
        plan_html=_plan_html(facts.plan),
        license_html=_license_html(facts.plan),
        version=escape(PACKAGE_VERSION),
        vllm_version=escape(VLLM_VERSION),
    )


def render_login(action: str, wrong_token: bool) -> str:
    message = (
        "That token is not valid for this server. Check it and try again."
        if wrong_token
        else "This reranker server needs its access token."
    )
    template = Template(static_file("login.html").decode("utf-8"))
    return template.substitute(message=html.escape(message), action=html.escape(action, quote=True))

"""Each preset's scores equal its authors' scoring method, within 1e-3, on a tiny model of the same format.

For every family a random model of the family's architecture is written here (tests/support/tiny_models.py:
a byte-level BPE tokenizer in Qwen's format, the scored logit spread over the test's prompts), named like
the real checkpoint so that the preset is chosen the way a user's would be, and served through the whole
stack with the plan a user gets. The reference is the authors' method run with transformers: their prompt
built the way their code builds it, the logit their code reads, their calibration. A template that drops a
newline, a wrong scored token or a missing calibration moves a score far more than 1e-3.

Models are served in float32 (VLLM_ARGS wins over the CPU's half-precision default), so 1e-3 measures
correctness, not rounding; the quality check is off (a random model ranks nothing right; the check's default
is covered in test_correctness.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support.scores import CausalLM, assert_close, served_scores
from support.stack_runner import RunningStack, start_stack
from support.tiny_models import (
    WORDS,
    bidirectional_mean_pool,
    make_bpe_tokenizer,
    make_causal_lm_reranker,
    make_llama_nemotron_reranker,
    make_modernbert_cross_encoder,
)
from transformers.utils.chat_template_utils import _compile_jinja_template

from reranker_template.plan.contract import read_plan
from reranker_template.plan.presets import template_path

pytestmark = pytest.mark.vllm

SERVE = {"VLLM_ARGS": "--dtype float32 -O0", "QUALITY_CHECK": "false"}
# No trailing punctuation: Qwen's tokenizer joins "?" and a following newline into one token, so a prompt
# rendered whole (vLLM) and one tokenized piece by piece (mxbai-rerank) differ there; README says so.
QUERY = "what are the health benefits of green tea"
DOCUMENTS = [
    "green tea contains antioxidants that protect cells and the brain",
    "basketball is a popular sport in the united states",
    "drinking green tea is popular in many a country",
    "how to bake bread with flour and water in a hot oven",
    "paris is the capital and largest city of france",
    "deep learning is a machine learning question",
]


def rendered(template: str, query: str, document: str, **kwargs: str) -> str:
    """A score template rendered as vLLM renders it (transformers' Jinja, query/document roles)."""
    text: str = _compile_jinja_template(Path(template_path(template)).read_text()).render(
        messages=[{"role": "query", "content": query}, {"role": "document", "content": document}], **kwargs
    )
    return text


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory, vllm_cache_root: Path) -> Iterator[Callable[[Path], RunningStack]]:
    """Start the stack on a model directory; every stack started is stopped at the end of the module."""
    stacks: list[RunningStack] = []

    def start(model: Path) -> RunningStack:
        stack = start_stack(
            tmp_path_factory.mktemp(model.name),
            str(model),
            served_name=model.name,
            extra_env=SERVE,
            cache_root=vllm_cache_root,
        )
        stacks.append(stack)
        return stack

    yield start
    for stack in stacks:
        stack.stop()


# --- mxbai-rerank-v2 ----------------------------------------------------------------------------------------

# mixedbread's prompt pieces (mxbai-rerank 0.1.6, MxbaiRerankV2): its code tokenizes each piece alone and joins
# the ids; it scores logit("1") - logit("0") and normalises with sigmoid(x - estimated_max / 2), 9 for base.
MXBAI_PREFIX = (
    "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
    "<|im_start|>user\n"
)
MXBAI_TASK = (
    "You are a search relevance expert who evaluates how well documents match search queries. For each "
    "query-document pair, carefully analyze the semantic relationship between them, then provide your binary "
    "relevance judgment (0 for not relevant, 1 for relevant).\nRelevance:"
)
MXBAI_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n"


def mxbai_reference(
    model: CausalLM, query: str, documents: list[str], instruction: str = "", estimated_max: float = 9.0
) -> list[float]:
    lead = f"instruction: {instruction}\n" if instruction else ""  # mxbai-rerank joins them with its separator
    scores = []
    for document in documents:
        ids = [
            *model.ids(MXBAI_PREFIX),
            *model.ids(f"{lead}query: {query}"),
            *model.ids("\n"),
            *model.ids(f"document: {document}"),
            *model.ids("\n"),
            *model.ids(MXBAI_TASK),
            *model.ids(MXBAI_SUFFIX),
        ]
        logits = model.last_logits(ids)
        raw = logits[model.token("1")] - logits[model.token("0")]
        scores.append(model.torch.sigmoid(raw - estimated_max / 2).item())
    return scores


@pytest.fixture(scope="module")
def mxbai_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("models") / "mxbai-rerank-base-v2"
    prompts = [rendered("mxbai_rerank_v2.jinja", QUERY, d) for d in DOCUMENTS]
    corpus = [*prompts, " ".join(WORDS), "instruction: rank by topic only"]
    tokenizer = make_bpe_tokenizer(directory, corpus, whole_tokens=("0", "1"))
    return make_causal_lm_reranker(directory, "qwen2", tokenizer, prompts, "1", "0", mean=4.5, std=2.0)


def test_mxbai_rerank_base_v2_scores_equal_mixedbreads_normalised_score(
    serve: Callable[[Path], RunningStack], mxbai_model: Path
) -> None:
    stack = serve(mxbai_model)
    plan = read_plan(stack.state_dir / "plan.json")
    assert plan.preset == "mxbai-rerank-base-v2" and plan.license == "Apache-2.0"
    model = CausalLM(mxbai_model)
    assert_close(served_scores(stack, QUERY, DOCUMENTS), mxbai_reference(model, QUERY, DOCUMENTS))
    instructed = mxbai_reference(model, QUERY, DOCUMENTS, instruction="rank by topic only")
    assert_close(served_scores(stack, QUERY, DOCUMENTS, instruction="rank by topic only"), instructed)


# --- zerank -------------------------------------------------------------------------------------------------

# Qwen3's chat template for a system and a user turn with the generation prompt (no thinking block).
QWEN3_CHAT = (
    "{%- for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor -%}"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n{% endif -%}"
)


def zerank_reference(model: CausalLM, query: str, documents: list[str]) -> list[float]:
    """zeroentropy's predict: query (stripped) as the system turn, document as the user turn, Qwen3's chat
    template with the generation prompt; sigmoid(logit("Yes") / 5), as the zerank-2 model card scores."""
    scores = []
    for document in documents:
        messages = [{"role": "system", "content": query.strip()}, {"role": "user", "content": document.strip()}]
        text = model.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        logit = model.last_logits(model.ids(text))[model.token("Yes")]
        scores.append(model.torch.sigmoid(logit / 5.0).item())
    return scores


@pytest.fixture(scope="module")
def zerank_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("models") / "zerank-2"
    prompts = [rendered("zerank.jinja", QUERY, d) for d in DOCUMENTS]
    tokenizer = make_bpe_tokenizer(
        directory, [*prompts, " ".join(WORDS)], whole_tokens=("Yes",), chat_template=QWEN3_CHAT
    )
    return make_causal_lm_reranker(directory, "qwen3", tokenizer, prompts, "Yes", mean=0.0, std=10.0)


def test_zerank_scores_equal_sigmoid_of_the_yes_logit_over_five(
    serve: Callable[[Path], RunningStack], zerank_model: Path
) -> None:
    stack = serve(zerank_model)
    plan = read_plan(stack.state_dir / "plan.json")
    assert plan.preset == "zerank-2" and plan.non_commercial  # CC-BY-NC-4.0
    reference = zerank_reference(CausalLM(zerank_model), QUERY, DOCUMENTS)
    assert_close(served_scores(stack, "  " + QUERY + " ", DOCUMENTS), reference)  # stripped, as zerank strips


# --- ctxl-rerank-v2 -----------------------------------------------------------------------------------------


def ctxl_reference(model: CausalLM, query: str, documents: list[str], instruction: str = "") -> list[float]:
    """Contextual AI's model card: their prompt (document first), the raw logit of token id 0 at the end."""
    suffix = f" {instruction}" if instruction else ""
    scores = []
    for document in documents:
        prompt = (
            "Check whether a given document contains information helpful to answer the query.\n"
            f"<Document> {document}\n<Query> {query}{suffix} ??"
        )
        scores.append(model.last_logits(list(model.tokenizer(prompt)["input_ids"]))[0].item())
    return scores


@pytest.fixture(scope="module")
def ctxl_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("models") / "ctxl-rerank-v2-instruct-multilingual-1b"
    prompts = [rendered("ctxl_rerank_v2.jinja", QUERY, d) for d in DOCUMENTS]
    corpus = [*prompts, " ".join(WORDS), "answer briefly in english"]
    tokenizer = make_bpe_tokenizer(directory, corpus, specials=("<|endoftext|>",), whole_tokens=("!",))
    assert tokenizer.convert_ids_to_tokens(0) == "!", "Contextual AI's method reads token id 0"
    return make_causal_lm_reranker(directory, "qwen3", tokenizer, prompts, "!", mean=0.0, std=2.0)


def test_ctxl_rerank_v2_scores_equal_the_raw_logit_of_token_zero(
    serve: Callable[[Path], RunningStack], ctxl_model: Path
) -> None:
    stack = serve(ctxl_model)
    plan = read_plan(stack.state_dir / "plan.json")
    assert plan.preset == "ctxl-rerank-v2" and plan.non_commercial
    model = CausalLM(ctxl_model)
    assert_close(served_scores(stack, QUERY, DOCUMENTS), ctxl_reference(model, QUERY, DOCUMENTS))
    instruction = "answer briefly in english"
    assert_close(
        served_scores(stack, QUERY, DOCUMENTS, instruction=instruction),
        ctxl_reference(model, QUERY, DOCUMENTS, instruction),
    )


# --- llama-nemotron-rerank ----------------------------------------------------------------------------------


def nemotron_reference(directory: Path, query: str, documents: list[str]) -> list[float]:
    """NVIDIA's method: "question:{q} \\n \\n passage:{d}" with the tokenizer's begin-of-text token, Llama layers
    attending both ways, the mean over the tokens, the one-logit head; sigmoid as for every one-logit model."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoTokenizer, LlamaConfig, LlamaModel

    config = LlamaConfig.from_pretrained(directory)
    config._attn_implementation = "eager"
    weights = load_file(str(directory / "model.safetensors"))
    model = LlamaModel(config).eval()
    model.load_state_dict({k.removeprefix("model."): v for k, v in weights.items() if k.startswith("model.")})
    tokenizer = AutoTokenizer.from_pretrained(directory)
    scores = []
    with torch.no_grad():
        for document in documents:
            pooled = bidirectional_mean_pool(model, tokenizer, f"question:{query} \n \n passage:{document}")
            scores.append(torch.sigmoid(pooled @ weights["score.weight"][0]).item())
    return scores


def test_llama_nemotron_rerank_scores_equal_nvidias_method(
    serve: Callable[[Path], RunningStack], tmp_path_factory: pytest.TempPathFactory
) -> None:
    prompts = [rendered("nemotron_rerank.jinja", QUERY, d) for d in DOCUMENTS]
    model = make_llama_nemotron_reranker(tmp_path_factory.mktemp("models") / "llama-nemotron-rerank-1b-v2", prompts)
    stack = serve(model)
    plan = read_plan(stack.state_dir / "plan.json")
    assert plan.preset == "llama-nemotron-rerank" and plan.score_template
    assert_close(served_scores(stack, QUERY, DOCUMENTS), nemotron_reference(model, QUERY, DOCUMENTS))


# --- gte-reranker-modernbert --------------------------------------------------------------------------------


def test_gte_reranker_modernbert_scores_equal_sigmoid_of_the_logit(
    serve: Callable[[Path], RunningStack], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The sentence-transformers CrossEncoder score (sigmoid of the one logit) of a ModernBERT whose sliding
    attention window (8 tokens) is shorter than the pairs."""
    import torch
    from transformers import AutoTokenizer, ModernBertForSequenceClassification

    pairs = [(QUERY, d) for d in DOCUMENTS]
    directory = make_modernbert_cross_encoder(tmp_path_factory.mktemp("models") / "gte-reranker-modernbert-base", pairs)
    stack = serve(directory)
    plan = read_plan(stack.state_dir / "plan.json")
    assert plan.preset == "gte-reranker-modernbert" and plan.license == "Apache-2.0"
    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = ModernBertForSequenceClassification.from_pretrained(directory, dtype=torch.float32).eval()
    with torch.no_grad():
        reference = [torch.sigmoid(model(**tokenizer(q, d, return_tensors="pt")).logits[0, 0]).item() for q, d in pairs]
    assert_close(served_scores(stack, QUERY, DOCUMENTS), reference)


# --- a Sentence-Transformers v6 CrossEncoder ----------------------------------------------------------------

# A chat template in the shape v6 rerankers ship: roles system (the prompt), query and document.
ST_CHAT = (
    "{% for m in messages %}{% if m.role == 'system' %}<|im_start|>system\n{{ m.content }}<|im_end|>\n"
    "{% elif m.role == 'query' %}<|im_start|>user\n<Query>: {{ m.content }}\n"
    "{% elif m.role == 'document' %}<Document>: {{ m.content }}<|im_end|>\n<|im_start|>assistant\n"
    "{% endif %}{% endfor %}"
)
ST_PROMPT = "Judge whether the document answers the query"


@pytest.fixture(scope="module")
def st_v6_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Saved by sentence-transformers itself: a CrossEncoder on a tiny Qwen3 causal LM, with a default prompt
    (named like a real -STv6 conversion, so its own files must win over the qwen3-reranker preset)."""
    from sentence_transformers import CrossEncoder

    base = tmp_path_factory.mktemp("models") / "base"
    template = _compile_jinja_template(ST_CHAT)
    prompts = [
        template.render(
            messages=[
                {"role": "system", "content": ST_PROMPT},
                {"role": "query", "content": QUERY},
                {"role": "document", "content": d},
            ]
        )
        for d in DOCUMENTS
    ]
    corpus = [*prompts, " ".join(WORDS), "rank by topic only"]
    tokenizer = make_bpe_tokenizer(base, corpus, whole_tokens=("yes", "no"), chat_template=ST_CHAT)
    make_causal_lm_reranker(base, "qwen3", tokenizer, prompts, "yes", "no", mean=0.0, std=2.0)
    saved = base.parent / "Qwen3-Reranker-0.6B-STv6"
    CrossEncoder(str(base), prompts={"default": ST_PROMPT}, default_prompt_name="default").save(str(saved))
    return saved


def test_a_sentence_transformers_v6_reranker_scores_as_sentence_transformers_does(
    serve: Callable[[Path], RunningStack], st_v6_model: Path
) -> None:
    from sentence_transformers import CrossEncoder

    stack = serve(st_v6_model)
    plan = read_plan(stack.state_dir / "plan.json")
    assert plan.preset == "sentence-transformers-v6"
    reference = CrossEncoder(str(st_v6_model))
    pairs = [(QUERY, d) for d in DOCUMENTS]
    assert_close(served_scores(stack, QUERY, DOCUMENTS), [float(x) for x in reference.predict(pairs)])
    # A request's instruction replaces the default prompt, as predict(prompt=...) does.
    instructed = reference.predict(pairs, prompt="rank by topic only")
    assert_close(
        served_scores(stack, QUERY, DOCUMENTS, instruction="rank by topic only"), [float(x) for x in instructed]
    )

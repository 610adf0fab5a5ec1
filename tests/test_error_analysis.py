"""The error analysis: each category on hand-made tag sequences, agreement with seqeval, and the files the
scripts write after evaluation and prediction."""

import json
import os
import random

import pytest
from seqeval.metrics import classification_report

import run_ner_no_trainer
from conftest import write_jsonl
from nerkit.error_analysis import CATEGORIES, PREDICTED_CATEGORIES, analyse_errors, analyse_tag_errors
from nerkit.metrics import STRICT_SCHEMES
from test_run_ner import read_json, run

LABELS = ["B-LOC", "B-ORG", "B-PER", "I-LOC", "I-ORG", "I-PER", "O"]


def counts(gold, predicted, mode="default"):
    analysis = analyse_errors([[f"w{i}" for i in range(len(gold))]], [gold], [predicted], LABELS, mode)
    gold_side = {name: n for name, n in analysis["counts"].items() if n}
    predicted_side = {name: n for name, n in analysis["predicted_counts"].items() if n}
    return gold_side, predicted_side


@pytest.mark.parametrize("gold, predicted, gold_side, predicted_side", [
    ("B-PER I-PER O", "B-PER I-PER O", {"correct": 1}, {"correct": 1}),
    ("B-PER I-PER O", "B-LOC I-LOC O", {"wrong_type": 1}, {"wrong_type": 1}),
    ("B-PER I-PER O", "B-PER O O", {"wrong_boundary": 1}, {"wrong_boundary": 1}),
    ("B-PER I-PER O", "O B-LOC I-LOC", {"wrong_boundary_and_type": 1}, {"wrong_boundary_and_type": 1}),
    ("B-PER O O", "O O O", {"missed": 1}, {}),
    ("O O O", "O B-ORG O", {"spurious": 1}, {"spurious": 1}),
    # one gold entity cut in two: one wrong boundary on the gold side, two on the predicted side
    ("B-ORG I-ORG I-ORG", "B-ORG O B-ORG", {"wrong_boundary": 1}, {"wrong_boundary": 2}),
    # two gold entities merged into one prediction
    ("B-PER B-PER O", "B-PER I-PER O", {"wrong_boundary": 2}, {"wrong_boundary": 1}),
    # a prediction over a PER and a LOC: wrong type and boundary for PER, wrong boundary for LOC
    ("B-PER I-PER B-LOC", "O B-LOC I-LOC", {"wrong_boundary_and_type": 1, "wrong_boundary": 1},
     {"wrong_boundary": 1}),
    # everything at once, in one sentence
    ("B-PER O B-LOC O B-ORG I-ORG O B-PER O O", "B-PER O B-ORG O B-ORG O O O O B-LOC",
     {"correct": 1, "wrong_type": 1, "wrong_boundary": 1, "missed": 1, "spurious": 1},
     {"correct": 1, "wrong_type": 1, "wrong_boundary": 1, "spurious": 1}),
])
def test_each_category_counted_by_hand(gold, predicted, gold_side, predicted_side):
    assert counts(gold.split(), predicted.split()) == (gold_side, predicted_side)


def test_strict_mode_reads_entities_as_seqeval_strict_does():
    # I-PER after O: an entity in the lenient default mode, none in strict IOB2
    assert counts(["O", "I-PER"], ["O", "B-PER"]) == ({"correct": 1}, {"correct": 1})
    assert counts(["O", "I-PER"], ["O", "B-PER"], "strict") == ({"spurious": 1}, {"spurious": 1})


def test_per_type_counts_and_type_confusions():
    gold = [["B-PER", "O", "B-PER", "O", "B-LOC"]]
    predicted = [["B-ORG", "O", "B-PER", "O", "O"]]
    analysis = analyse_errors([["a", "b", "c", "d", "e"]], gold, predicted, LABELS)
    assert analysis["per_type"]["PER"]["counts"] == dict.fromkeys(CATEGORIES, 0) | {"correct": 1, "wrong_type": 1}
    assert analysis["per_type"]["LOC"]["counts"]["missed"] == 1
    assert analysis["per_type"]["ORG"]["predicted_counts"]["wrong_type"] == 1
    assert analysis["type_confusions"] == [{"gold": "PER", "predicted": "ORG", "count": 1}]


def test_examples_show_words_in_context_with_both_spans():
    tokens = ["x"] * 10 + ["Acme", "Corp", "said"] + ["y"] * 10
    gold = ["O"] * 10 + ["B-ORG", "I-ORG", "O"] + ["O"] * 10
    predicted = ["O"] * 10 + ["B-ORG", "O", "O"] + ["O"] * 10
    analysis = analyse_errors([tokens], [gold], [predicted], LABELS, where=lambda i, word: f"line {i}, word {word}")
    example, = analysis["examples"]["wrong_boundary"]
    assert example == {"example": 0, "where": "line 0, word 10", "context_start": 5,
                       "context": "x x x x x Acme Corp said y y y y",
                       "gold": [{"type": "ORG", "start": 10, "end": 12, "text": "Acme Corp"}],
                       "predicted": [{"type": "ORG", "start": 10, "end": 11, "text": "Acme"}]}


def test_at_most_twenty_examples_per_category():
    analysis = analyse_errors([["a"]] * 30, [["B-PER"]] * 30, [["O"]] * 30, LABELS)
    assert analysis["counts"]["missed"] == 30 and len(analysis["examples"]["missed"]) == 20


def random_tags(rng, length):
    return [rng.choice(LABELS + ["O", "O", "O"]) for _ in range(length)]


@pytest.mark.parametrize("mode", ["default", "strict"])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_agrees_with_seqeval(mode, seed):
    """correct == seqeval's true positives (overall and per type); the gold categories add up to seqeval's
    gold count and the predicted ones to its predicted count."""
    rng = random.Random(seed)
    gold = [random_tags(rng, rng.randint(1, 12)) for _ in range(60)]
    predicted = [random_tags(rng, len(tags)) for tags in gold]
    options = {"mode": "strict", "scheme": STRICT_SCHEMES["IOB2"]} if mode == "strict" else {}
    report = classification_report(gold, predicted, output_dict=True, zero_division=0, **options)
    analysis = analyse_errors(None, gold, predicted, LABELS, mode, shown=0)
    gold_count = report["micro avg"]["support"]
    true_positives = round(report["micro avg"]["recall"] * gold_count)
    predicted_count = round(true_positives / report["micro avg"]["precision"])
    assert analysis["counts"]["correct"] == true_positives > 0
    assert sum(analysis["counts"][name] for name in CATEGORIES[:5]) == analysis["gold_entities"] == gold_count
    assert sum(analysis["predicted_counts"][name] for name in PREDICTED_CATEGORIES) == predicted_count
    assert analysis["predicted_entities"] == predicted_count
    for kind, tally in analysis["per_type"].items():
        values = report.get(kind, {"recall": 0.0, "support": 0})
        assert tally["counts"]["correct"] == round(values["recall"] * values["support"])
        assert tally["gold_entities"] == values["support"]


def check_errors_file(path, gold_tags, predicted_tags):
    """The file's counts against seqeval on the tags it was made from."""
    analysis = read_json(path)
    report = classification_report(gold_tags, predicted_tags, output_dict=True, zero_division=0)
    gold_count = report["micro avg"]["support"]
    assert analysis["gold_entities"] == gold_count == sum(analysis["counts"][name] for name in CATEGORIES[:5])
    assert analysis["counts"]["correct"] == round(report["micro avg"]["recall"] * gold_count)
    assert set(analysis["examples"]) == set(CATEGORIES)
    return analysis


def test_run_ner_writes_the_analysis_after_evaluation_and_prediction(tiny_bert, ner_files, tmp_path, caplog):
    files = {"train": ner_files["train"], "validation": ner_files["validation"], "test": ner_files["labelled_test"]}
    with caplog.at_level("INFO"):
        run(tiny_bert, tmp_path, "--do_train", "--do_eval", "--do_predict", "--num_train_epochs", "2",
            "--return_entity_level_metrics", files=files)
    results = read_json(tmp_path / "all_results.json")
    records = [json.loads(line) for line in open(tmp_path / "predictions.jsonl", encoding="utf-8")]
    test = check_errors_file(tmp_path / "errors_test.json", [r["labels"] for r in records],
                             [r["predictions"] for r in records])
    assert test["split"] == "test" and test["source"] == ner_files["labelled_test"]
    validation = read_json(tmp_path / "errors_validation.json")
    for kind, tally in validation["per_type"].items():
        assert tally["gold_entities"] == results[f"eval_{kind}_number"]
    correct = validation["counts"]["correct"]
    assert results["eval_recall"] == pytest.approx(correct / validation["gold_entities"])
    for picture in ("errors.png", "errors_test.png", "confusion_matrix.png"):
        with open(tmp_path / picture, "rb") as handle:
            assert handle.read(8) == b"\x89PNG\r\n\x1a\n", picture
    card = (tmp_path / "README.md").read_text(encoding="utf-8")
    assert "## Errors (validation)" in card and "| wrong boundary and type |" in card
    assert f"Errors on validation (seqeval default mode): {validation['gold_entities']} gold" in caplog.text
    assert "Errors on test" in caplog.text


def test_no_trainer_writes_the_same_analysis(tiny_bert, ner_files, tmp_path):
    argv = ["--model_name_or_path", tiny_bert, "--output_dir", str(tmp_path), "--train_file", ner_files["train"],
            "--validation_file", ner_files["validation"], "--test_file", ner_files["labelled_test"],
            "--num_train_epochs", "1", "--learning_rate", "5e-3", "--seed", "7"]
    run_ner_no_trainer.cli(argv)
    records = [json.loads(line) for line in open(tmp_path / "predictions.jsonl", encoding="utf-8")]
    check_errors_file(tmp_path / "errors_test.json", [r["labels"] for r in records],
                      [r["predictions"] for r in records])
    validation = read_json(tmp_path / "errors_validation.json")
    eval_results = read_json(tmp_path / "eval_results.json")
    assert eval_results["eval_recall"] == pytest.approx(validation["counts"]["correct"] / validation["gold_entities"])
    assert os.path.isfile(tmp_path / "errors.png")


# ---- tags that name no entities (POS tags): word by word ----

POS = {"John": "NNP", "Smith": "NNP", "Mary": "NNP", "Peter": "NNP", "Blackburn": "NNP", "works": "VBZ",
       "visited": "VBD", "reported": "VBD", "rejects": "VBZ", "opened": "VBD", "at": "IN", "in": "IN",
       "from": "IN", "to": "TO", "and": "CC", ".": ".", "last": "JJ", "year": "NN", "call": "NN", "lamb": "NN",
       "offices": "NNS", "boycott": "VB", "German": "JJ", "British": "JJ"}


def pos_rows(rows):
    return [(tokens, [POS.get(word, "NNP") for word in tokens]) for tokens, _ in rows]


def test_tag_errors_are_counted_word_by_word():
    tokens = [["The", "cat", "sat", "down"], ["Dogs", "run"], ["It", "sat"]]
    gold = [["DT", "NN", "VBD", "RP"], ["NNS", "VBP"], ["PRP", "VBD"]]
    predicted = [["DT", "NN", "VBN", "IN"], ["NNS", "NN"], ["PRP", "VBN"]]
    analysis = analyse_tag_errors(tokens, gold, predicted, where=lambda example, word: f"line {example}.{word}")
    assert (analysis["words"], analysis["correct"], analysis["accuracy"]) == (8, 4, 0.5)
    assert analysis["per_tag"]["NN"] == {"gold": 1, "correct": 1, "predicted": 2}
    assert analysis["per_tag"]["VBN"] == {"gold": 0, "correct": 0, "predicted": 2}
    # the most frequent first, ties in data order
    assert [(item["gold"], item["predicted"], item["count"]) for item in analysis["tag_confusions"]] == [
        ("VBD", "VBN", 2), ("RP", "IN", 1), ("VBP", "NN", 1)]
    assert len(analysis["tag_confusions"][0]["examples"]) == 2
    example = analysis["tag_confusions"][2]["examples"][0]
    assert example["where"] == "line 1.1" and example["context"] == "Dogs run"
    assert example["gold"] == [{"type": "VBP", "start": 1, "end": 2, "text": "run"}]
    assert example["predicted"][0]["type"] == "NN"


def test_pos_tags_get_a_word_by_word_analysis_not_made_up_entities(tiny_bert, tmp_path, caplog):
    """seqeval reads NNP as an entity of type NP: errors_*.json, the pictures, the log and the model card go
    by word and tag instead."""
    from conftest import examples
    files = {"train": write_jsonl(tmp_path / "train.json", pos_rows(examples(40))),
             "validation": write_jsonl(tmp_path / "validation.json", pos_rows(examples(5, offset=1))),
             "test": write_jsonl(tmp_path / "test.json", pos_rows(examples(5, offset=2)))}
    out = tmp_path / "out"
    with caplog.at_level("INFO"):
        run(tiny_bert, out, "--do_train", "--do_eval", "--do_predict", "--num_train_epochs", "2", files=files)
    results = read_json(out / "all_results.json")
    for split in ("validation", "test"):
        analysis = read_json(out / f"errors_{split}.json")
        assert analysis["unit"] == "word" and "per_type" not in analysis
        assert analysis["words"] == sum(tally["gold"] for tally in analysis["per_tag"].values())
        assert set(analysis["per_tag"]) <= set(POS.values())
    validation = read_json(out / "errors_validation.json")
    assert validation["accuracy"] == pytest.approx(results["eval_accuracy"])
    assert "Errors on validation, word by word" in caplog.text and "seqeval default mode" not in caplog.text
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "## Evaluation (validation, per word: the tags name no entities)" in card
    assert "| NNP |" in card and "| NP |" not in card  # the tag itself, not seqeval's made-up type
    for picture in ("errors.png", "errors_test.png", "confusion_matrix.png"):
        assert (out / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", picture

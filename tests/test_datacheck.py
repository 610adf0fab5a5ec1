"""--check_data: every number of the report on hand-made data with planted defects, the windows against the
encoder's, and end-to-end runs that load no weights and destroy nothing."""

import json

import pytest

import run_ner
import run_ner_no_trainer
from conftest import examples, write_jsonl
from nerkit.data import Split
from nerkit.datacheck import WindowPlan, data_report, report_text, subtoken_lengths, window_counts
from nerkit.tokenization import EncodingSettings, encode_split, load_fast_tokenizer


def split(name, rows):
    """A Split from (words, tags or None, sub-tokens per word) rows, located as JSON Lines lines."""
    return Split(name, f"{name}.json", [words.split() for words, _, _ in rows],
                 None if rows[0][1] is None else [tags.split() for _, tags, _ in rows],
                 [f"line {i + 1}" for i in range(len(rows))])


# Planted: validation line 1 and test line 1 repeat train lines 1 and 2; "Paris" is LOC twice, O once and
# ORG once; B-MISC (and I-PER) occur only in validation; train line 4 has I-LOC after O; the last word of validation
# line 2 becomes no sub-token; train line 4 and test line 2 need two windows of 8 sub-tokens.
TRAIN = [("John lives in Paris .", "B-PER O O B-LOC O", [1, 1, 1, 1, 1]),
         ("Acme hired Mary .", "B-ORG O B-PER O", [3, 1, 1, 1]),
         ("Paris is big .", "O O O O", [1, 1, 1, 1]),
         ("Visit Berlin now", "O I-LOC O", [2, 4, 3])]
VALIDATION = [("John lives in Paris .", "B-PER O O B-LOC O", [1, 1, 1, 1, 1]),
              ("Anna Lee met Bob .", "B-PER I-PER O B-MISC O", [1, 1, 1, 1, 0])]
TEST = [("Acme hired Mary .", "B-ORG O B-PER O", [3, 1, 1, 1]),
        ("Paris rocks", "B-ORG O", [7, 1])]
PLAN = WindowPlan(max_length=8, special_tokens=2, stride=2)


@pytest.fixture(scope="module")
def report():
    rows = {"train": TRAIN, "validation": VALIDATION, "test": TEST}
    splits = {name: split(name, data) for name, data in rows.items()}
    lengths = {name: [row[2] for row in data] for name, data in rows.items()}
    return data_report(splits, lengths, PLAN)


def test_split_figures(report):
    train, validation, test = (report["splits"][name] for name in ("train", "validation", "test"))
    assert (train["examples"], train["words"], train["entities"], train["entity_total"]) == \
        (4, 16, {"PER": 2, "LOC": 2, "ORG": 1}, 5)
    assert validation["entities"] == {"PER": 2, "LOC": 1, "MISC": 1}
    assert [report["splits"][name]["scheme"] for name in ("train", "validation", "test")] == ["IOB2"] * 3
    assert (train["windows"], train["long_examples"], train["words_in_long_examples"],
            train["words_longer_than_window"], train["longest_example"]) == (5, 1, 3, 0, 11)
    assert (test["windows"], test["long_examples"], test["words_in_long_examples"],
            test["words_longer_than_window"], test["longest_example"]) == (3, 1, 2, 1, 10)
    assert train["entity_length_words"] == {"mean": 1.0, "max": 1, "counts": [[1, 5]]}
    assert train["entity_length_subtokens"] == {"mean": 2.0, "max": 4, "counts": [[1, 3], [3, 1], [4, 1]]}
    assert validation["entity_length_words"] == {"mean": 1.25, "max": 2, "counts": [[1, 3], [2, 1]]}
    assert validation["empty_words"] == {"count": 1, "forms": ["."], "first": ["validation.json, line 2, word 4"]}
    assert train["empty_words"]["count"] == 0 and report["stride"] == 2


def test_leakage(report):
    assert report["leakage"] == {
        "validation": {"count": 1, "examples": 2, "first": ["validation.json, line 1 = train.json, line 1"]},
        "test": {"count": 1, "examples": 2, "first": ["test.json, line 1 = train.json, line 2"]},
    }


def test_unseen_entities(report):
    validation, test = report["unseen_entity_ratio"]["validation"], report["unseen_entity_ratio"]["test"]
    assert (validation["entities"], validation["unseen"], validation["ratio"]) == (4, 2, 0.5)  # Anna Lee, Bob
    assert validation["per_type"]["PER"] == {"entities": 2, "unseen": 1, "ratio": 0.5}
    assert (test["entities"], test["unseen"], test["ratio"]) == (3, 1, 0.3333)  # Paris as ORG
    assert test["per_type"]["ORG"] == {"entities": 2, "unseen": 1, "ratio": 0.5}


def test_inconsistent_annotation_labels_and_breaks(report):
    assert report["inconsistent_annotations"] == {
        "count": 1, "forms": [{"text": "Paris", "occurrences": 4, "labels": [["LOC", 2], ["O", 1], ["ORG", 1]]}]}
    assert report["labels_not_in_train"] == {"validation": ["B-MISC", "I-PER"], "test": []}
    none_outside, none_bare = {"count": 0, "prefixes": {}, "first": []}, {"count": 0, "tags": {}, "first": []}
    assert report["scheme_breaks"] == {
        "train": {"count": 1, "first": ["train.json, line 4, word 1"], "outside_scheme": none_outside,
                  "without_prefix": none_bare},
        "validation": {"count": 0, "first": [], "outside_scheme": none_outside, "without_prefix": none_bare},
        "test": {"count": 0, "first": [], "outside_scheme": none_outside, "without_prefix": none_bare}}
    assert report["label_spelling"] is None


def test_tags_without_a_prefix_among_entity_tags_are_found():
    # a lowercase o and a bare DATE: seqeval's default mode scores them as entities of types _ and ATE
    rows = [("John met Mary on Monday", "B-PER O B-PER o DATE", [1] * 5)] + \
        [("Anna Lee met Bob", "B-PER I-PER O B-PER", [1] * 4)] * 4
    found = data_report({"train": split("train", rows)}, {"train": [row[2] for row in rows]}, PLAN)
    assert found["scheme"] == "IOB2"
    assert found["scheme_breaks"]["train"]["without_prefix"] == {
        "count": 2, "tags": {"o": 1, "DATE": 1}, "first": ["train.json, line 1, word 3", "train.json, line 1, word 4"]}
    assert ("tags without an entity prefix in train (seqeval scores them as entities of made-up types: o as _, "
            "DATE as ATE): 2 (o 1, DATE 1), first at train.json, line 1, word 3") in report_text(found)


def test_entity_tags_spelled_another_way_are_named_by_the_data_check():
    rows = [("Anna Lee met Bob", "b-per i-per o b-per", [1] * 4)] * 3
    found = data_report({"train": split("train", rows)}, {"train": [row[2] for row in rows]}, PLAN)
    assert found["scheme"] == "none"
    assert found["label_spelling"].startswith("The labels look like entity tags written with a lowercase prefix")
    assert "label spelling: The labels look like entity tags" in report_text(found)


def test_tags_outside_the_scheme_are_found_where_no_break_shows_them():
    rows = [("Anna Lee met Bob", "B-PER I-PER O B-PER", [1] * 4)] * 4 + [("Anna Lee met Bob", "B-PER E-PER O S-PER",
                                                                            [1] * 4)]
    found = data_report({"train": split("train", rows)}, {"train": [row[2] for row in rows]}, PLAN)
    assert found["scheme"] == "IOB2" and found["scheme_breaks"]["train"]["count"] == 0
    assert found["scheme_breaks"]["train"]["outside_scheme"] == {
        "count": 2, "prefixes": {"E-X": 1, "S-X": 1}, "first": ["train.json, line 5, word 1", "train.json, line 5, word 3"]}
    assert any(line.startswith("tags outside the IOB2 scheme in train (mixed schemes?): 2 (E-X 1, S-X 1)")
               for line in report_text(found).splitlines())


def test_an_occurrence_inside_a_longer_entity_is_not_inconsistent():
    rows = [("New York is big", "B-LOC I-LOC O O", [1] * 4), ("New York Times", "B-ORG I-ORG I-ORG", [1] * 3)]
    found = data_report({"train": split("train", rows)}, {"train": [row[2] for row in rows]}, PLAN)
    assert found["inconsistent_annotations"] == {"count": 0, "forms": []}
    assert found["leakage"] == {} and found["unseen_entity_ratio"] == {}


def test_unlabelled_test_split_is_checked_for_leakage_only(report):
    rows = {"train": TRAIN, "test": [("Acme hired Mary .", None, [3, 1, 1, 1])]}
    splits = {name: split(name, data) for name, data in rows.items()}
    found = data_report(splits, {name: [row[2] for row in data] for name, data in rows.items()}, PLAN)
    assert found["leakage"]["test"]["count"] == 1 and found["splits"]["test"]["labelled"] is False
    assert found["unseen_entity_ratio"] == {} and found["labels_not_in_train"] == {}
    assert "test" not in found["scheme_breaks"]


def test_report_text_names_every_finding(report):
    text = report_text(report)
    for expected in ("leakage: 1 of 2 validation examples", "unseen entities: 50.0% of validation entities",
                     "'Paris': LOC 2, O 1, ORG 1", "labels in validation but never in train: B-MISC, I-PER",
                     "scheme breaks in train: 1 (the run's scheme is IOB2", "validation.json, line 2, word 4"):
        assert expected in text, expected


def test_window_counts_match_the_encoder(tiny_bert):
    tokenizer = load_fast_tokenizer(tiny_bert, {})
    long_example = (" ".join(["Peter Blackburn reported from Brussels ."] * 6)).split()
    rows = [(tokens, tags) for tokens, tags in examples(3)] + [(long_example, ["O"] * len(long_example))]
    data = Split("train", "train.json", [tokens for tokens, _ in rows], [tags for _, tags in rows],
                 ["line 1"] * len(rows))
    plan = WindowPlan(16, tokenizer.num_special_tokens_to_add(), 4)
    counted = window_counts(subtoken_lengths(tokenizer, data.tokens), plan)
    features = encode_split(data, tokenizer, {"O": 0, "B-PER": 1, "I-PER": 2, "B-ORG": 3, "I-ORG": 4, "B-LOC": 5,
                                              "I-LOC": 6, "B-MISC": 7}, EncodingSettings(16, 4))
    assert counted["windows"] == len(features) > len(rows)
    assert counted["long_examples"] == len({example for example in features["example_id"]
                                            if features["example_id"].count(example) > 1})


@pytest.fixture
def no_weights(monkeypatch):
    """Loading any model weights fails: the data check must not need them."""
    import transformers

    def refuse(*args, **kwargs):
        raise AssertionError("model weights were loaded")

    monkeypatch.setattr(transformers.AutoModelForTokenClassification, "from_pretrained", refuse)
    monkeypatch.setattr(run_ner, "load_model", refuse)
    monkeypatch.setattr(run_ner_no_trainer, "load_model", refuse)


def planted_files(folder):
    train = examples(10)
    validation = examples(2) + [("Bob met Anna".split(), "B-PER O B-EVENT".split())]
    return {"train": write_jsonl(folder / "train.json", train),
            "validation": write_jsonl(folder / "validation.json", validation)}


def test_run_ner_check_data_writes_the_report_and_nothing_else(tiny_bert, tmp_path, no_weights, capsys):
    files = planted_files(tmp_path)
    output = tmp_path / "out"
    output.mkdir()
    (output / "notes.txt").write_text("keep me")
    run_ner.cli(["--model_name_or_path", tiny_bert, "--train_file", files["train"], "--validation_file",
                 files["validation"], "--output_dir", str(output), "--check_data", "--do_train",
                 "--max_seq_length", "16"])
    report = json.loads((output / "data_report.json").read_text(encoding="utf-8"))
    for key in ("splits", "leakage", "unseen_entity_ratio", "inconsistent_annotations", "scheme_breaks"):
        assert key in report, key
    assert report["max_length"] == 16 and report["leakage"]["validation"]["count"] == 2
    assert report["labels_not_in_train"] == {"validation": ["B-EVENT"]}
    assert sorted(path.name for path in output.iterdir()) == ["data_report.json", "notes.txt"]
    assert (output / "notes.txt").read_text() == "keep me"
    assert "leakage: 2 of 3 validation examples also occur in train" in capsys.readouterr().out


def test_no_trainer_check_data_uses_its_window_flag(tiny_bert, tmp_path, no_weights):
    files = planted_files(tmp_path)
    run_ner_no_trainer.cli(["--model_name_or_path", tiny_bert, "--train_file", files["train"], "--output_dir",
                            str(tmp_path / "out"), "--check_data", "--max_length", "12"])
    report = json.loads((tmp_path / "out" / "data_report.json").read_text(encoding="utf-8"))
    assert report["max_length"] == 12 and list(report["splits"]) == ["train"]


def test_pos_tags_are_reported_as_tags_not_as_seqevals_entities():
    rows = {"train": [("The cat sat", "DT NN VBD", [1, 1, 1]), ("A dog", "DT NN", [1, 1]),
                      ("call home", "NN NN", [1, 1]), ("I call", "PRP VBP", [1, 1])],
            "validation": [("The dog", "DT NN", [1, 1])]}
    splits = {name: split(name, data) for name, data in rows.items()}
    report = data_report(splits, {name: [row[2] for row in data] for name, data in rows.items()}, PLAN)
    assert report["scheme"] == "none" and report["splits"]["train"]["tags"] == {
        "DT": 2, "NN": 4, "VBD": 1, "PRP": 1, "VBP": 1}
    # a word given more than one tag, with the tags as they are (seqeval would read N and BP, and one entity
    # "call home")
    assert report["inconsistent_annotations"] == {"count": 1, "forms": [
        {"text": "call", "occurrences": 2, "labels": [["NN", 1], ["VBP", 1]]}]}
    assert "entities" not in report["splits"]["train"] and report["unseen_entity_ratio"] == {}
    text = report_text(report)
    assert "5 tags: NN 4, DT 2, VBD 1" in text and "unseen entities" not in text

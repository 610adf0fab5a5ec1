"""The tagging scheme of a run: decided from what the tags do, saved with the model, used by strict scoring."""

import logging
import os

import pytest
from transformers import BertConfig

import run_ner
import run_ner_no_trainer
from conftest import examples, write_jsonl
from nerkit.data import Split
from nerkit.errors import UserError
from nerkit.metrics import check_strict_mode, entity_scores
from nerkit.schemes import decide_scheme, model_scheme, scheme_from_names, scheme_from_tags
from nerkit.summary import log_summary
from test_run_ner import read_json, run

IOB1_TAGS = [["I-PER", "I-PER", "O", "I-LOC"], ["I-ORG", "B-ORG", "O"], ["O", "I-MISC", "I-MISC"]]
IOB2_TAGS = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "B-ORG", "O"], ["O", "B-MISC", "I-MISC"]]
IOBES_TAGS = [["B-PER", "E-PER", "O", "S-LOC"], ["S-ORG", "S-ORG", "O"], ["O", "B-MISC", "I-MISC", "E-MISC"]]
BILOU_TAGS = [["B-PER", "L-PER", "O", "U-LOC"], ["U-ORG", "U-ORG", "O"], ["O", "B-MISC", "I-MISC", "L-MISC"]]
IOE2_TAGS = [["I-PER", "E-PER", "O", "E-LOC"], ["E-ORG", "E-ORG", "O"], ["O", "I-MISC", "I-MISC", "E-MISC"]]
# IOE1: I-X ends entities too; E-X only where another entity of the type follows at once.
IOE1_TAGS = [["I-PER", "I-PER", "O", "I-LOC"], ["E-ORG", "I-ORG", "O"], ["O", "I-MISC", "E-MISC", "I-MISC"]]
# IOB2 data with one stray E- and one stray S- tag: B-X entities stay unclosed, so it is not IOBES.
STRAY_TAGS = IOB2_TAGS * 40 + [["B-PER", "E-PER"], ["S-LOC", "O"]]


def labels_of(tag_lists, extra=()):
    return sorted({tag for tags in tag_lists for tag in tags} | set(extra))


@pytest.mark.parametrize(
    "tag_lists, extra, scheme",
    [
        (IOB1_TAGS, (), "IOB1"),
        (IOB2_TAGS, (), "IOB2"),
        (IOBES_TAGS, (), "IOBES"),
        (BILOU_TAGS, (), "BILOU"),
        (IOE2_TAGS, (), "IOE2"),
        (IOE1_TAGS, (), "IOE1"),
        (IOB2_TAGS * 40 + [["E-PER", "I-PER"]], (), "IOB2"),  # B-X tags: never IOE, whatever a stray E-X does
        (STRAY_TAGS, (), "IOB2"),
        ([["S-PER", "O", "S-LOC"]], (), "IOBES"),  # single words only, closed by definition
        ([["I-PER", "O"], ["I-LOC"]], ("B-PER",), "IOB1"),  # B-X declared but never needed
        ([["B-PER", "O"]], ("I-PER",), "IOB2"),  # one-word entities only
        (IOB2_TAGS, ("X",), "IOB2"),  # an unprefixed tag is free, not a reason to give up the scheme
        ([["DT", "NN", "VB"], ["NN", "-NONE-"]], (), "none"),  # POS tags
        (IOB1_TAGS * 3 + IOB2_TAGS * 3, (), "none"),  # half IOB1, half IOB2: no scheme fits, all allowed
        ([["O", "O"]], ("B-PER", "I-PER"), None),  # no entity tag to tell by
        # IOBES with a few broken entities (more than 1 in 100 tags): still IOBES, not IOB2, where E-X and S-X
        # would be free labels that break nothing
        (IOBES_TAGS * 2 + [["B-PER", "O"], ["O", "E-PER"]], (), "IOBES"),
        ([["B", "I", "O", "B"], ["O", "B"]], (), "IOB2"),  # spans without types (keyphrases)
        ([["B", "I", "E", "O", "S"]], (), "IOBES"),
        ([["N", "V", "I"], ["P", "N"]], (), "none"),  # a coarse POS tag set whose interjection tag is I
    ],
)
def test_scheme_from_tags(tag_lists, extra, scheme):
    assert scheme_from_tags(tag_lists, labels_of(tag_lists, extra)) == scheme


def test_rare_breaks_are_noise_not_another_scheme():
    noisy = IOB2_TAGS * 100 + [["O", "I-PER"]]  # one I-X after O in 800 entity tags
    assert scheme_from_tags(noisy, labels_of(noisy)) == "IOB2"


@pytest.mark.parametrize(
    "labels, scheme",
    [
        (["O", "B-PER", "I-PER"], "IOB2"),
        (["O", "I-PER", "I-LOC"], "IOB1"),
        (["O", "B-X", "I-X", "E-X", "S-X"], "IOBES"),
        (["O", "B-X", "I-X", "L-X", "U-X"], "BILOU"),
        (["O", "I-X", "E-X"], "IOE2"),
        (["O", "B-X", "I-X", "E-X"], "IOBES"),
        (["NN", "VB"], "none"),
        (["O", "B-X", "E-X", "L-X"], "none"),
        (["O", "B", "I"], "IOB2"),
        (["N", "V", "I", "P"], "none"),
    ],
)
def test_scheme_from_names(labels, scheme):
    assert scheme_from_names(labels) == scheme


def split(name, tag_lists):
    return Split(name, f"{name}.json", [["w"] * len(tags) for tags in tag_lists], tag_lists, [""] * len(tag_lists))


def summarised(tags, caplog):
    """(scheme, source, labels) decided from `tags` as the training data, with the data summary logged into
    `caplog` at INFO."""
    labels, splits = labels_of(tags), {"train": split("train", tags)}
    scheme, source = decide_scheme(splits, labels)
    caplog.set_level(logging.INFO)
    log_summary(splits, labels, scheme, source)
    return scheme, source, labels


def test_training_tags_decide_then_the_saved_scheme_then_other_tags_then_names():
    labels = labels_of(IOB1_TAGS + IOB2_TAGS)
    train, validation = split("train", IOB1_TAGS), split("validation", IOB2_TAGS)
    assert decide_scheme({"train": train, "validation": validation}, labels, "IOB2") == ("IOB1", "the training tags")
    assert decide_scheme({"validation": validation}, labels, "IOB1") == ("IOB1", "the model's config.json")
    assert decide_scheme({"validation": validation}, labels) == ("IOB2", "the validation tags")
    unlabelled = Split("test", "test.txt", [["w"]], None, [""])
    assert decide_scheme({"test": unlabelled}, ["O", "I-PER"]) == ("IOB1", "the label names")


def test_a_model_decodes_with_the_scheme_saved_in_its_config():
    config = BertConfig(id2label={0: "O", 1: "B-PER", 2: "I-PER", 3: "E-PER"})
    assert model_scheme(config) == "IOBES"  # names only: a stray E- reads as IOBES
    config.tagging_scheme = "IOB2"
    assert model_scheme(config) == "IOB2"


def test_seqeval_default_mode_reads_iob1():
    gold = [["I-PER", "I-PER", "B-PER", "O", "I-LOC"]]  # PER 0-1, PER 2, LOC 4
    merged = [["I-PER", "I-PER", "I-PER", "O", "I-LOC"]]  # PER 0-2, LOC 4: one of two right
    labels = ["O", "B-PER", "I-PER", "I-LOC"]
    assert entity_scores(gold, gold, labels)["f1"] == 1.0
    assert entity_scores(gold, merged, labels) == pytest.approx(
        {"precision": 1 / 2, "recall": 1 / 3, "f1": 0.4, "accuracy": 4 / 5})


def test_strict_mode_reads_iob1_and_agrees_with_default_on_valid_sequences():
    labels = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    gold = [["I-PER", "I-PER", "B-PER", "O", "I-LOC"]]
    valid = [["I-PER", "I-PER", "I-PER", "O", "I-LOC"]]
    assert entity_scores(gold, gold, labels, "strict", scheme="IOB1")["f1"] == 1.0
    assert entity_scores(gold, valid, labels, "strict", scheme="IOB1") == entity_scores(gold, valid, labels)
    # B-LOC right after O opens nothing in IOB1: strict mode drops it, the lenient default reads an entity
    invalid = [["I-PER", "I-PER", "B-PER", "O", "B-LOC"]]
    assert entity_scores(gold, invalid, labels)["f1"] == 1.0
    assert entity_scores(gold, invalid, labels, "strict", scheme="IOB1")["recall"] == pytest.approx(2 / 3)


IOE_PREDICTED = [["I-PER", "E-PER", "O", "I-LOC"], ["E-ORG", "I-ORG", "E-ORG"], ["O", "E-MISC", "I-MISC", "E-MISC"]]
# The IOE1 tags above written in IOE2 by hand, entity for entity; an E-X that IOE1 does not allow (before O or
# at the end) becomes I-X, which ends no entity in IOE2 either.
IOE1_IN_IOE2 = [["I-PER", "E-PER", "O", "E-LOC"], ["E-ORG", "E-ORG", "O"], ["O", "I-MISC", "E-MISC", "E-MISC"]]
IOE1_PREDICTED_IN_IOE2 = [["I-PER", "I-PER", "O", "E-LOC"], ["E-ORG", "I-ORG", "I-ORG"],
                          ["O", "E-MISC", "I-MISC", "I-MISC"]]


@pytest.mark.parametrize("scheme, gold, reference_gold, reference_predicted", [
    ("IOE2", IOE2_TAGS, IOE2_TAGS, IOE_PREDICTED), ("IOE1", IOE1_TAGS, IOE1_IN_IOE2, IOE1_PREDICTED_IN_IOE2)])
def test_strict_mode_reads_ioe_schemes_as_seqeval_reads_ioe2(scheme, gold, reference_gold, reference_predicted):
    """Scores of IOE data in strict mode equal seqeval's own for the same entities in IOE2 (its IOE1 reader
    loses the one-word ORG that opens the second IOE1 sentence), and the labels are not refused as schemes
    mixed."""
    from seqeval.metrics import f1_score, precision_score, recall_score
    from seqeval.scheme import IOE2

    labels = labels_of(gold + IOE_PREDICTED)
    check_strict_mode(labels, scheme, "the training tags")
    ours = entity_scores(gold, IOE_PREDICTED, labels, "strict", scheme=scheme)
    reference = {"mode": "strict", "scheme": IOE2}
    assert ours["precision"] == pytest.approx(precision_score(reference_gold, reference_predicted, **reference))
    assert ours["recall"] == pytest.approx(recall_score(reference_gold, reference_predicted, **reference))
    assert ours["f1"] == pytest.approx(f1_score(reference_gold, reference_predicted, **reference))
    assert 0 < ours["f1"] < 1


def test_ioe_data_is_summarised_without_warnings_of_mixed_schemes(caplog):
    scheme, _, _ = summarised(IOE2_TAGS * 10, caplog)
    assert scheme == "IOE2" and "Tagging scheme IOE2" in caplog.text
    assert "mix" not in caplog.text and "break" not in caplog.text


@pytest.mark.parametrize(
    "labels, scheme, message",
    [
        (["DT", "NN"], "none", "follow none"),
        (["O", "B-PER", "I-PER", "E-PER"], "IOB2", "cannot read E-PER"),
        (["O", "B-PER", "I-PER", "X"], "IOB2", "cannot read X"),
    ],
)
def test_strict_mode_refuses_labels_seqeval_cannot_read(labels, scheme, message):
    with pytest.raises(UserError, match="--metric_mode") as error:
        check_strict_mode(labels, scheme, "the training tags")
    assert message in str(error.value) and "--metric_mode default" in str(error.value)


def to_iob1(tags):
    """IOB2 tags as the raw CoNLL-2003 files write them: B-X only right after an entity of the same type."""
    iob1, previous = [], "O"
    for tag in tags:
        if tag.startswith("B-") and previous[2:] != tag[2:]:
            tag = "I-" + tag[2:]
        iob1.append(tag)
        previous = tag
    return iob1


@pytest.fixture(scope="module")
def iob1_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("iob1")
    rows = [(words, to_iob1(tags)) for words, tags in examples(40)]
    return {"train": write_jsonl(folder / "train.json", rows),
            "validation": write_jsonl(folder / "validation.json", rows[:5])}


def test_the_scheme_of_the_training_tags_is_logged_saved_and_reused(tiny_bert, iob1_files, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    output = run(tiny_bert, tmp_path / "trained", "--do_train", "--num_train_epochs", "1", files=iob1_files)
    assert "Tagging scheme IOB1, decided from the training tags" in caplog.text
    assert read_json(os.path.join(output, "config.json"))["tagging_scheme"] == "IOB1"
    caplog.clear()
    # the saved model evaluated alone, on data too small to tell (only O tags): the saved scheme decides
    only_o = write_jsonl(tmp_path / "o.json", [(words, ["O"] * len(words)) for words, _ in examples(3)])
    run(str(output), tmp_path / "evaluated", "--do_eval", files={"validation": only_o})
    assert "Tagging scheme IOB1, decided from the model's config.json" in caplog.text


@pytest.mark.parametrize("script", [run_ner, run_ner_no_trainer])
def test_strict_mode_without_a_scheme_stops_before_any_weights_load(script, tiny_bert, tmp_path, monkeypatch):
    def load_model(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(script, "load_model", load_model)
    pos = write_jsonl(tmp_path / "pos.json", [(["The", "dog", "barks"], ["DT", "NN", "VBZ"])] * 4,
                      label_key="pos_tags")
    flags = ["--do_train", "--report_to", "none"] if script is run_ner else []
    with pytest.raises(UserError, match="--metric_mode strict checks entities against a tagging scheme"):
        script.cli(["--model_name_or_path", tiny_bert, "--train_file", pos, "--label_column_name", "pos_tags",
                    "--output_dir", str(tmp_path / "out"), "--metric_mode", "strict", *flags])
    assert not (tmp_path / "out").exists()


def test_entity_tags_that_fit_no_scheme_are_warned_about(tiny_bert, caplog):
    summarised(IOB1_TAGS * 3 + IOB2_TAGS * 3, caplog)
    assert "Tagging scheme none, decided from the training tags" in caplog.text
    assert "no tagging scheme fits them" in caplog.text


def test_data_that_mixes_iob2_and_iobes_is_warned_about(caplog):
    # the IOB2 half leaves B-X entities open, so IOBES does not fit; in IOB2, E-X and S-X are free labels,
    # so no tag breaks it: only their prefixes tell
    scheme, source, _ = summarised(IOB2_TAGS * 3 + IOBES_TAGS * 3, caplog)
    assert scheme == "IOB2"
    assert "train: 15 tags have a prefix the IOB2 scheme does not use (S-X 9, E-X 6)" in caplog.text
    assert "may mix tagging schemes" in caplog.text
    caplog.clear()
    log_summary({"train": split("train", IOBES_TAGS)}, labels_of(IOBES_TAGS), "IOBES", source)
    assert "does not use" not in caplog.text


def test_pos_tags_are_summarised_as_tags_not_as_seqevals_entities(caplog):
    scheme, _, _ = summarised([["DT", "NNP", "VBZ", "NNP", "."], ["NNP", "VBD", "."]], caplog)
    assert scheme == "none" and "5 tags: NNP 3, . 2, DT 1, VBZ 1, VBD 1" in caplog.text
    assert "entities" not in caplog.text  # seqeval would read NNP as an entity of type NP


@pytest.mark.parametrize("tags, how", [
    ([["b-loc", "i-loc", "o", "b-per"]], "a lowercase prefix (b-loc, b-per, i-loc, o)"),
    ([["LOC-B", "LOC-I", "O", "PER-B"]], "the prefix after the type"),
    ([["B_LOC", "I_LOC", "O", "B_PER"]], "an underscore after the prefix"),
])
def test_entity_tags_spelled_another_way_are_warned_about(tags, how, caplog):
    scheme, _, _ = summarised(tags, caplog)
    assert scheme == "none" and f"The labels look like entity tags written with {how}" in caplog.text


def test_tags_without_a_prefix_among_entity_tags_are_warned_about(caplog):
    # a lowercase o among IOB2 tags is scored by seqeval as an entity of type _ before another entity, and a
    # bare DATE as one of type ATE: the scheme stays IOB2, and the summary names both with their first places
    tags = [["B-PER", "I-PER", "O", "B-LOC"]] * 5 + [["B-PER", "o", "B-LOC", "DATE"]]
    scheme, source, labels = summarised(tags, caplog)
    assert scheme == "IOB2"
    assert "train: 2 tags have no entity prefix in the IOB2 scheme (o 1, DATE 1), first at" in caplog.text
    assert "(o as _, DATE as ATE)" in caplog.text
    scores = entity_scores(tags[-1:], tags[-1:], labels, entity_level=True)
    assert scores["__number"] == scores["ATE_number"] == 1  # what the warning says seqeval does
    caplog.clear()
    log_summary({"train": split("train", tags[:5])}, labels_of(tags[:5]), scheme, source)
    assert "no entity prefix" not in caplog.text


def test_pos_tags_are_not_taken_for_entity_tags_spelled_another_way(caplog):
    tags = [["NNP", "VBZ", "-LRB-", "PRP$", "DT", "NN", "."]]
    caplog.set_level(logging.INFO)
    log_summary({"train": split("train", tags)}, labels_of(tags), "none", "the training tags")
    assert "look like entity tags" not in caplog.text


def test_spans_without_types_are_entities_of_one_type_everywhere():
    """B/I/O tags (keyphrase extraction) are what seqeval reads them as, entities of type `_`: Viterbi keeps
    I after B or I, strict mode reads them, a word without sub-tokens inside a span stays in it, the error
    analysis and the confusion matrix count spans, not tags."""
    import numpy as np

    from nerkit.decoding import join_entities
    from nerkit.report import confusion_counts
    from nerkit.schemes import transition_rules
    from nerkit.summary import labels_without_entities

    labels = ["B", "I", "O"]
    rules = transition_rules(labels, "IOB2")
    assert not rules.allowed[2, 1] and not rules.first[1] and rules.allowed[0, 1] and rules.allowed[1, 1]
    gold, predicted = [["B", "I", "O", "B"]], [["B", "I", "O", "O"]]
    strict = entity_scores(gold, predicted, labels, "strict", entity_level=True, scheme="IOB2")
    assert (strict["__number"], strict["recall"], strict["precision"]) == (2, 0.5, 1.0)  # type _, as upstream
    assert not labels_without_entities(labels, "IOB2")
    assert confusion_counts(gold, predicted) == {("_", "_"): 2, ("O", "O"): 1, ("_", "O"): 1}
    # B, a word without sub-tokens (given O), I: the word joins the span
    joined = join_entities(np.array([0, 2, 1]), np.array([True, False, True]), labels)
    assert joined.tolist() == [0, 1, 1]


@pytest.mark.parametrize("scheme, labels, around, expected", [
    ("IOB1", ["B-PER", "I-PER", "O"], ("I-PER", "B-PER"), "I-PER"),  # O then B-PER would open nothing
    ("IOE1", ["E-PER", "I-PER", "O"], ("E-PER", "I-PER"), "I-PER"),  # E-PER before O would close nothing
    ("IOB2", ["B-PER", "I-PER", "O"], ("I-PER", "B-PER"), "O"),  # allowed: left as it is
])
def test_a_word_without_sub_tokens_between_two_entities_keeps_the_scheme(scheme, labels, around, expected):
    import numpy as np

    from nerkit.decoding import join_entities
    from nerkit.schemes import transition_rules

    ids = np.array([labels.index(around[0]), labels.index("O"), labels.index(around[1])])
    joined = join_entities(ids, np.array([True, False, True]), labels, transition_rules(labels, scheme))
    assert labels[joined[1]] == expected

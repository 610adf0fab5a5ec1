import math

import numpy as np
import pytest

from nerkit.data import Split
from nerkit.decoding import WordCollector
from nerkit.metrics import entity_scores
from nerkit.schemes import decide_scheme, transition_rules
from nerkit.tokenization import NO_WORD
from nerkit.viterbi import viterbi_path

IOB2 = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


def log(rows):
    return np.log(np.array(rows, dtype=np.float64))


def test_iob2_rules():
    allowed, first, last = transition_rules(IOB2, "IOB2")
    index = {label: i for i, label in enumerate(IOB2)}
    assert allowed[index["B-PER"], index["I-PER"]] and allowed[index["I-PER"], index["I-PER"]]
    assert not allowed[index["O"], index["I-PER"]] and not allowed[index["B-LOC"], index["I-PER"]]
    assert allowed[index["I-PER"], index["O"]] and allowed[index["O"], index["B-LOC"]]
    assert not first[index["I-PER"]] and first[index["B-PER"]] and last.all()


def test_iob1_rules_open_entities_with_inside_tags():
    labels = ["O", "B-PER", "I-PER", "I-LOC"]
    allowed, first, last = transition_rules(labels, "IOB1")
    assert allowed[0, 2] and allowed[2, 2] and allowed[3, 2] and first[2]  # I-X opens and continues
    assert allowed[2, 1] and allowed[1, 1] and allowed[1, 2]  # B-PER right after PER, then continued
    assert not allowed[0, 1] and not allowed[3, 1] and not first[1]  # B-PER only right after PER
    assert last.all()


def test_iobes_rules_close_entities():
    labels = ["O", "B-X", "I-X", "E-X", "S-X"]
    allowed, first, last = transition_rules(labels, "IOBES")
    assert not allowed[1, 0]  # B-X must continue: not followed by O
    assert allowed[1, 3] and allowed[2, 3] and not allowed[0, 3]
    assert not last[1] and not last[2] and last[3] and not first[3]


def test_ioe_rules_close_entities_at_their_last_word():
    labels = ["O", "I-X", "E-X", "I-Y"]
    allowed, first, last = transition_rules(labels, "IOE2")
    assert allowed[1, 1] and allowed[1, 2] and not allowed[1, 0] and not allowed[1, 3]  # I-X goes on to its end
    assert allowed[0, 2] and allowed[2, 2] and allowed[2, 0] and first[2] and last[2]  # E-X alone is an entity
    assert not last[1] and first[1]
    allowed, first, last = transition_rules(labels, "IOE1")
    assert allowed[1, 0] and last[1]  # in IOE1 I-X may end an entity
    assert allowed[2, 1] and allowed[2, 2] and not allowed[2, 0] and not allowed[2, 3] and not last[2]


def test_labels_outside_the_scheme_stay_reachable():
    labels = ["O", "B-PER", "I-PER", "E-PER", "X"]
    allowed, first, last = transition_rules(labels, "IOB2")
    assert allowed[:, 3].all() and allowed[3, [0, 1, 3, 4]].all() and first[3] and last[3]  # E-PER is free
    assert allowed[:, 4].all() and first[4] and last[4]  # so is X
    assert allowed[1, 0] and last[1]  # IOB2 leaves B-PER open: no closing needed


def test_viterbi_repairs_an_orphan_inside_tag():
    # argmax: O I-PER (invalid). Best valid: O B-PER = 0.6*0.35 = 0.21 beats O O = 0.6*0.2 and B-PER I-PER
    probabilities = [[0.6, 0.3, 0.0, 0.05, 0.05], [0.2, 0.35, 0.4, 0.025, 0.025]]
    path = viterbi_path(log(probabilities), *transition_rules(IOB2, "IOB2"))
    assert [IOB2[i] for i in path] == ["O", "B-PER"]


def test_viterbi_keeps_a_valid_argmax_sequence():
    probabilities = [[0.1, 0.8, 0.05, 0.025, 0.025], [0.1, 0.05, 0.8, 0.025, 0.025], [0.9, 0.025, 0.025, 0.025, 0.025]]
    path = viterbi_path(log(probabilities), *transition_rules(IOB2, "IOB2"))
    assert [IOB2[i] for i in path] == ["B-PER", "I-PER", "O"]


def test_labels_without_a_scheme_decode_as_argmax():
    labels = ["NN", "VB", "DT"]
    probabilities = np.log(np.array([[0.2, 0.7, 0.1], [0.5, 0.1, 0.4]]))
    assert viterbi_path(probabilities, *transition_rules(labels, "none")) == [1, 0]


def test_collector_decodes_whole_examples_with_viterbi():
    collector = WordCollector([2], decoding="viterbi")
    rows = [[0.0] * 5, *log([[0.6, 0.3, 0.0001, 0.05, 0.0499], [0.2, 0.35, 0.4, 0.025, 0.025]]), [0.0] * 5]
    collector.add(0, [NO_WORD, 0, 1, NO_WORD], rows)
    tags, scores, missing = collector.result(IOB2, "O", "IOB2")
    assert tags == [["O", "B-PER"]] and scores[0][1] == pytest.approx(0.35) and missing == 0
    assert math.isclose(scores[0][0], 0.6, rel_tol=1e-6)


# One case per scheme: training tags in that scheme, a label list, and for one validation example its gold
# tags, a hand-made probability table (rows: words, columns: the labels in order) and the path Viterbi must
# find. The scheme is decided from the training tags, as a run decides it.
CASES = {
    # IOB1 (raw CoNLL-2003): a model trained on it gives B-PER almost nothing after O. The issue's example:
    # gold O I-PER O I-PER I-PER must stay itself (IOB2 rules made it all O).
    "IOB1": dict(
        train=[["O", "I-PER", "O", "I-PER", "I-PER"], ["I-LOC", "O", "I-PER", "B-PER", "O"], ["I-PER", "O"]],
        labels=["O", "B-PER", "I-PER", "I-LOC"],
        gold=["O", "I-PER", "O", "I-PER", "I-PER"],
        table=[[0.9, 0.01, 0.07, 0.02], [0.08, 0.01, 0.9, 0.01], [0.9, 0.01, 0.07, 0.02], [0.05, 0.02, 0.9, 0.03],
               [0.05, 0.1, 0.8, 0.05]],
        expected=["O", "I-PER", "O", "I-PER", "I-PER"],
    ),
    # IOB2: argmax continues B-PER with I-LOC (seqeval then reads two wrong entities); Viterbi: I-PER.
    "IOB2": dict(
        train=[["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-LOC", "I-LOC"], ["B-PER", "O"]],
        labels=IOB2,
        gold=["B-PER", "I-PER", "O", "B-LOC"],
        table=[[0.1, 0.8, 0.05, 0.03, 0.02], [0.1, 0.05, 0.4, 0.0, 0.45], [0.9, 0.02, 0.02, 0.03, 0.03],
               [0.2, 0.05, 0.05, 0.6, 0.1]],
        expected=["B-PER", "I-PER", "O", "B-LOC"],
    ),
    # IOBES: argmax leaves B-PER open (O after it, read as a one-word PER); Viterbi closes it with E-PER:
    # B-PER E-PER = 0.6 * 0.45 beats S-PER O = 0.2 * 0.5.
    "IOBES": dict(
        train=[["B-PER", "E-PER", "O", "S-LOC"], ["B-PER", "I-PER", "E-PER"], ["O", "S-PER"]],
        labels=["O", "B-PER", "I-PER", "E-PER", "S-PER", "S-LOC"],
        gold=["B-PER", "E-PER", "O", "S-LOC"],
        table=[[0.1, 0.6, 0.05, 0.05, 0.2, 0.0], [0.5, 0.0, 0.05, 0.45, 0.0, 0.0], [0.9, 0.02, 0.02, 0.02, 0.02, 0.02],
               [0.2, 0.1, 0.0, 0.0, 0.1, 0.6]],
        expected=["B-PER", "E-PER", "O", "S-LOC"],
    ),
    "BILOU": dict(
        train=[["B-PER", "L-PER", "O", "U-LOC"], ["B-PER", "I-PER", "L-PER"], ["O", "U-PER"]],
        labels=["O", "B-PER", "I-PER", "L-PER", "U-PER", "U-LOC"],
        gold=["B-PER", "L-PER", "O", "U-LOC"],
        table=[[0.1, 0.6, 0.05, 0.05, 0.2, 0.0], [0.5, 0.0, 0.05, 0.45, 0.0, 0.0], [0.9, 0.02, 0.02, 0.02, 0.02, 0.02],
               [0.2, 0.1, 0.0, 0.0, 0.1, 0.6]],
        expected=["B-PER", "L-PER", "O", "U-LOC"],
    ),
    # POS tags: no scheme, every sequence allowed, so Viterbi is argmax, mistakes included.
    "none": dict(
        train=[["DT", "NN", "VB"], ["NN", "VB", "-NONE-"]],
        labels=["-NONE-", "DT", "NN", "VB"],
        gold=["DT", "NN", "VB", "NN"],
        table=[[0.0, 0.8, 0.1, 0.1], [0.1, 0.1, 0.7, 0.1], [0.0, 0.1, 0.6, 0.3], [0.1, 0.0, 0.8, 0.1]],
        expected=["DT", "NN", "NN", "NN"],
    ),
}


def labelled(tag_lists, name="train"):
    return Split(name, f"{name}.json", [["word"] * len(tags) for tags in tag_lists], tag_lists, [""] * len(tag_lists))


def decode(case, decoding, scheme):
    """Tags of the case's validation example through the word collector, as a run decodes them."""
    collector = WordCollector([len(case["gold"])], decoding=decoding)
    table = np.array(case["table"], dtype=np.float64)
    rows = np.log(np.maximum(table, 1e-12)) if decoding == "viterbi" else np.stack(
        [table.argmax(axis=1), table.max(axis=1)], axis=1)
    collector.add(0, list(range(len(rows))), rows)
    return collector.result(case["labels"], case["labels"][0], scheme)[0][0]


@pytest.mark.filterwarnings("ignore:.*seems not to be NE tag")  # seqeval, on the POS tags of "none"
@pytest.mark.parametrize("name", list(CASES))
def test_viterbi_finds_the_known_path_and_never_scores_below_argmax(name):
    case = CASES[name]
    scheme, source = decide_scheme({"train": labelled(case["train"])}, case["labels"])
    assert (scheme, source) == (name, "the training tags")
    viterbi, argmax = decode(case, "viterbi", scheme), decode(case, "argmax", scheme)
    assert viterbi == case["expected"]
    gold = [case["gold"]]
    viterbi_scores = entity_scores(gold, [viterbi], case["labels"])
    argmax_scores = entity_scores(gold, [argmax], case["labels"])
    assert viterbi_scores["f1"] >= argmax_scores["f1"] and viterbi_scores["accuracy"] >= argmax_scores["accuracy"]


def test_iob1_example_of_the_issue_is_not_erased():
    case = CASES["IOB1"]
    tags = decode(case, "viterbi", decide_scheme({"train": labelled(case["train"])}, case["labels"])[0])
    assert tags == case["gold"] and entity_scores([case["gold"]], [tags], case["labels"])["f1"] == 1.0


def test_iob1_viterbi_turns_a_b_tag_after_o_into_an_inside_tag():
    labels = ["O", "B-PER", "I-PER"]
    path = viterbi_path(log([[0.9, 0.05, 0.05], [0.1, 0.5, 0.4]]), *transition_rules(labels, "IOB1"))
    assert [labels[i] for i in path] == ["O", "I-PER"]


def test_a_stray_closing_tag_keeps_single_word_entities():
    # IOB2 data where one annotator typed E-PER once and S-LOC once: still IOB2, so a one-word B-LOC followed
    # by O (forbidden in IOBES, where it must be S-LOC) is kept.
    labels = ["O", "B-PER", "I-PER", "E-PER", "B-LOC", "I-LOC", "S-LOC"]
    train = [["B-LOC", "O", "B-PER", "I-PER"], ["O", "B-LOC"], ["B-PER", "E-PER", "O", "S-LOC"]] + [
        ["B-PER", "O", "B-LOC", "I-LOC", "O"]] * 40
    scheme, _ = decide_scheme({"train": labelled(train)}, labels)
    assert scheme == "IOB2"
    table = [[0.05, 0.02, 0.01, 0.01, 0.85, 0.01, 0.05], [0.9, 0.02, 0.02, 0.02, 0.02, 0.01, 0.01]]
    path = viterbi_path(log(table), *transition_rules(labels, scheme))
    assert [labels[i] for i in path] == ["B-LOC", "O"]

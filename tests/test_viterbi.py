import math

import numpy as np
import pytest

from nerkit.decoding import WordCollector
from nerkit.tokenization import NO_WORD
from nerkit.viterbi import transition_rules, viterbi_path

IOB2 = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


def log(rows):
    return np.log(np.array(rows, dtype=np.float64))


def test_iob2_rules():
    allowed, first, last = transition_rules(IOB2)
    index = {label: i for i, label in enumerate(IOB2)}
    assert allowed[index["B-PER"], index["I-PER"]] and allowed[index["I-PER"], index["I-PER"]]
    assert not allowed[index["O"], index["I-PER"]] and not allowed[index["B-LOC"], index["I-PER"]]
    assert allowed[index["I-PER"], index["O"]] and allowed[index["O"], index["B-LOC"]]
    assert not first[index["I-PER"]] and first[index["B-PER"]] and last.all()


def test_iobes_rules_close_entities():
    labels = ["O", "B-X", "I-X", "E-X", "S-X"]
    allowed, first, last = transition_rules(labels)
    assert not allowed[1, 0]  # B-X must continue: not followed by O
    assert allowed[1, 3] and allowed[2, 3] and not allowed[0, 3]
    assert not last[1] and not last[2] and last[3] and not first[3]


def test_viterbi_repairs_an_orphan_inside_tag():
    # argmax: O I-PER (invalid). Best valid: O B-PER = 0.6*0.35 = 0.21 beats O O = 0.6*0.2 and B-PER I-PER
    probabilities = [[0.6, 0.3, 0.0, 0.05, 0.05], [0.2, 0.35, 0.4, 0.025, 0.025]]
    path = viterbi_path(log(probabilities), *transition_rules(IOB2))
    assert [IOB2[i] for i in path] == ["O", "B-PER"]


def test_viterbi_keeps_a_valid_argmax_sequence():
    probabilities = [[0.1, 0.8, 0.05, 0.025, 0.025], [0.1, 0.05, 0.8, 0.025, 0.025], [0.9, 0.025, 0.025, 0.025, 0.025]]
    path = viterbi_path(log(probabilities), *transition_rules(IOB2))
    assert [IOB2[i] for i in path] == ["B-PER", "I-PER", "O"]


def test_labels_without_a_scheme_decode_as_argmax():
    labels = ["NN", "VB", "DT"]
    probabilities = np.log(np.array([[0.2, 0.7, 0.1], [0.5, 0.1, 0.4]]))
    assert viterbi_path(probabilities, *transition_rules(labels)) == [1, 0]


def test_collector_decodes_whole_examples_with_viterbi():
    collector = WordCollector([2], decoding="viterbi")
    rows = [[0.0] * 5, *log([[0.6, 0.3, 0.0001, 0.05, 0.0499], [0.2, 0.35, 0.4, 0.025, 0.025]]), [0.0] * 5]
    collector.add(0, [NO_WORD, 0, 1, NO_WORD], rows)
    tags, scores, missing = collector.result(IOB2, "O")
    assert tags == [["O", "B-PER"]] and scores[0][1] == pytest.approx(0.35) and missing == 0
    assert math.isclose(scores[0][0], 0.6, rel_tol=1e-6)

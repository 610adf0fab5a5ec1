import numpy as np
import pytest

from nerkit.decoding import WordCollector, WordDecoder
from nerkit.errors import UserError
from nerkit.labels import outside_label
from nerkit.metrics import entity_scores, entity_type
from nerkit.tokenization import NO_WORD

LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]


def test_scores_computed_by_hand():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    pred = [["B-PER", "I-PER", "O", "O"], ["B-ORG", "O"]]
    # 3 gold entities (PER, LOC, ORG), 2 predicted, both right; 5 of 6 words right
    scores = entity_scores(gold, pred, LABELS)
    assert scores == pytest.approx({"precision": 1.0, "recall": 2 / 3, "f1": 0.8, "accuracy": 5 / 6})


def test_entity_level_keys_and_counts():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-LOC", "O"]]
    pred = [["B-PER", "O", "O", "B-LOC"], ["B-LOC", "O"]]
    scores = entity_scores(gold, pred, LABELS, entity_level=True)
    assert scores["PER_number"] == 1 and scores["LOC_number"] == 2
    assert scores["PER_f1"] == 0.0 and scores["LOC_f1"] == 1.0
    assert scores["overall_f1"] == scores["f1"] == pytest.approx(2 * (2 / 3) * (2 / 3) / (4 / 3))
    assert set(scores) >= {"overall_precision", "overall_recall", "overall_accuracy", "LOC_precision"}


def test_default_mode_is_lenient_and_strict_mode_follows_the_scheme():
    gold, pred = [["B-PER", "I-PER", "O"]], [["I-PER", "I-PER", "O"]]
    assert entity_scores(gold, pred, LABELS)["f1"] == 1.0  # conlleval: I- starts an entity
    assert entity_scores(gold, pred, LABELS, mode="strict")["f1"] == 0.0  # IOB2: it does not


def test_bilou_entities_are_counted_alike_in_both_modes():
    """seqeval's lenient reader does not know L- and U-: on its own it reads "U-LOC U-LOC" as one entity.
    Both modes, the outputs and predict_ner.py read four LOC and two PER entities here."""
    from nerkit.outputs import prediction_record
    from nerkit.schemes import entity_spans

    labels = ["O", "B-LOC", "I-LOC", "L-LOC", "U-LOC", "B-PER", "I-PER", "L-PER", "U-PER"]
    gold = [["U-LOC", "U-LOC", "O", "B-LOC", "L-LOC", "U-LOC"], ["B-PER", "L-PER", "U-PER"]]
    pred = [["U-LOC", "U-LOC", "O", "B-LOC", "L-LOC", "O"], ["B-PER", "L-PER", "U-PER"]]
    for mode in ("default", "strict"):
        scores = entity_scores(gold, pred, labels, mode=mode, entity_level=True, scheme="BILOU")
        assert (scores["LOC_number"], scores["PER_number"]) == (4, 2)
        assert scores["precision"] == 1.0 and scores["recall"] == pytest.approx(5 / 6)
    assert entity_spans(gold[0]) == [("LOC", 0, 0), ("LOC", 1, 1), ("LOC", 3, 4), ("LOC", 5, 5)]
    record = prediction_record(["Paris", "Berlin", "and", "New", "York", "Tokyo"], gold[0], [1.0] * 6)
    assert [entity["text"] for entity in record["entities"]] == ["Paris", "Berlin", "New York", "Tokyo"]


def test_strict_mode_reads_every_ioe1_entity_and_the_error_analysis_agrees():
    """In IOE1, E-X ends a one-word entity right before another of its type. seqeval's own IOE1 reader loses
    it at the start of a sentence or after O; the same entities in IOE2 are all read, so both spellings
    score alike. An E-X that IOE1 does not allow (before O) still makes no entity in strict mode."""
    from nerkit.error_analysis import entity_spans

    labels = ["O", "E-LOC", "E-PER", "I-LOC", "I-PER"]
    gold_ioe1 = [["E-PER", "I-PER", "O"], ["O", "E-LOC", "I-LOC", "I-LOC"], ["I-PER", "E-PER", "E-PER", "I-PER"]]
    gold_ioe2 = [["E-PER", "E-PER", "O"], ["O", "E-LOC", "I-LOC", "E-LOC"], ["I-PER", "E-PER", "E-PER", "E-PER"]]
    pred_ioe1 = [["O", "I-PER", "O"], ["O", "E-LOC", "I-LOC", "I-LOC"], ["I-PER", "E-PER", "O", "O"]]
    pred_ioe2 = [["O", "E-PER", "O"], ["O", "E-LOC", "I-LOC", "E-LOC"], ["I-PER", "I-PER", "O", "O"]]
    ioe1 = entity_scores(gold_ioe1, pred_ioe1, labels, mode="strict", entity_level=True, scheme="IOE1")
    ioe2 = entity_scores(gold_ioe2, pred_ioe2, labels, mode="strict", entity_level=True, scheme="IOE2")
    assert (ioe1["PER_number"], ioe1["LOC_number"]) == (5, 2)
    assert ioe1["recall"] == pytest.approx(3 / 7) and ioe1["precision"] == 1.0  # the invalid I-PER E-PER O: none
    assert {key: value for key, value in ioe1.items() if "accuracy" not in key} == \
           {key: value for key, value in ioe2.items() if "accuracy" not in key}
    assert entity_spans(gold_ioe1, labels, "strict", "IOE1")[0] == [("PER", 0, 1), ("PER", 1, 2)]
    assert entity_spans(pred_ioe1, labels, "strict", "IOE1")[2] == []


@pytest.mark.filterwarnings("ignore:.*seems not to be NE tag")
def test_entity_type_names_the_per_type_keys_seqeval_reports():
    """--metric_for_best_model is checked against these names before training: POS tags such as DT are
    reported by seqeval under its own reading of them (T), not under the tag."""
    labels = ["O", "B-PER", "I-PER", "DT", "NN", "VBD"]
    tags = [["B-PER", "I-PER", "DT", "NN", "VBD", "O"]]
    scores = entity_scores(tags, tags, labels, entity_level=True)
    reported = {key[:-len("_f1")] for key in scores if key.endswith("_f1") and key != "overall_f1"}
    assert reported == {entity_type(label) for label in labels} - {None} == {"PER", "T", "N", "BD"}


def test_no_entities_at_all_scores_zero_without_failing():
    scores = entity_scores([["O", "O"]], [["O", "O"]], LABELS)
    assert scores["f1"] == 0.0 and scores["accuracy"] == 1.0


def test_strict_mode_without_a_scheme_is_a_user_error():
    with pytest.raises(UserError, match="--metric_mode"):
        entity_scores([["NN"]], [["NN"]], ["NN", "VB"], mode="strict")


def test_word_collector_keeps_the_window_with_most_context():
    collector = WordCollector([6])
    # window A holds words 0-3 (word 3 at its edge), window B words 2-5 (word 3 in its middle)
    collector.add(0, [NO_WORD, 0, 1, 2, 3, NO_WORD], [(0, 1)] + [(0, 0.9)] * 3 + [(1, 0.6), (0, 1)])
    collector.add(0, [NO_WORD, 2, 3, 3, 4, 5, NO_WORD], [(0, 1), (0, 0.9), (3, 0.8), (5, 0.1), (0, 0.9), (0, 0.9),
                                                         (0, 1)])
    tags, scores, missing = collector.result(LABELS, "O", "IOB2")
    assert tags == [["O", "O", "O", "B-LOC", "O", "O"]]  # word 3: B-LOC from window B, not B-PER from A
    assert scores[0][3] == pytest.approx(0.8) and missing == 0


@pytest.mark.parametrize("order", [(0, 1), (1, 0)])
def test_a_tie_in_context_goes_to_the_earlier_window_in_any_order(order):
    # windows A (words 0-3) and B (words 1-4) both read word 2 with one word of context on a side...
    windows = [([NO_WORD, 0, 1, 2, 3, NO_WORD], [(0, 1), (0, 0.9), (1, 0.6), (3, 0.7), (0, 0.9), (0, 1)]),
               ([NO_WORD, 1, 2, 3, 4, NO_WORD], [(0, 1), (3, 0.5), (1, 0.5), (0, 0.9), (0, 0.9), (0, 1)])]
    collector = WordCollector([5])
    for index in order:  # ...and prediction may see B first (longest first), evaluation A first
        collector.add(0, *windows[index])
    tags, scores, _ = collector.result(LABELS, "O", "IOB2")
    assert tags == [["O", "B-PER", "B-LOC", "O", "O"]] and scores[0][1:3] == pytest.approx([0.6, 0.7])


def test_word_without_sub_tokens_gets_the_fallback_and_is_counted():
    collector = WordCollector([3])
    collector.add(0, [NO_WORD, 0, 2, NO_WORD], [(0, 1), (1, 0.9), (3, 0.9), (0, 1)])
    tags, _, missing = collector.result(LABELS, "O", "IOB2")
    assert tags == [["B-PER", "O", "B-LOC"]] and missing == 1


def test_viterbi_gives_a_word_without_sub_tokens_inside_an_entity_the_label_that_joins_it():
    def confident(label, probability=0.9):
        return np.log(np.where(np.arange(len(LABELS)) == LABELS.index(label), probability,
                               (1 - probability) / (len(LABELS) - 1)))

    # John <zero-width space> Smith works ... <zero-width space>: pinned to O, the first would force Smith out
    # of I-PER into the likeliest label allowed after O (B-LOC here) under Viterbi; the last stays O
    rows = [confident("B-PER"), confident("I-PER", 0.6), confident("O"), confident("O")]
    collector = WordCollector([6], decoding="viterbi")
    collector.add(0, [NO_WORD, 0, 2, 3, 4, NO_WORD], [confident("O")] + rows + [confident("O")])
    tags, probabilities, missing = collector.result(LABELS, "O", "IOB2")
    assert tags == [["B-PER", "I-PER", "I-PER", "O", "O", "O"]] and missing == 2
    assert probabilities[0][1] == probabilities[0][5] == 0.0
    argmax = WordCollector([6])
    argmax.add(0, [NO_WORD, 0, 2, 3, 4, NO_WORD], [(0, 1), (1, 0.9), (2, 0.6), (0, 0.9), (0, 0.9), (0, 1)])
    assert argmax.result(LABELS, "O", "IOB2")[0] == [["B-PER", "I-PER", "I-PER", "O", "O", "O"]]
    # IOB1 allows O between two I-PER, so Viterbi alone would split the entity there
    iob1 = WordCollector([3], decoding="viterbi")
    iob1.add(0, [0, 2], [confident("I-PER"), confident("I-PER")])
    assert iob1.result(LABELS, "O", "IOB1")[0] == [["I-PER", "I-PER", "I-PER"]]

def test_without_an_o_label_viterbi_gives_a_word_without_sub_tokens_a_label_its_neighbours_allow():
    labels = ["B-LOC", "E-LOC", "I-LOC", "S-LOC", "S-PER"]  # IOBES chunks that cover every word: no O
    confident = {label: np.log(np.where(np.arange(5) == labels.index(label), 0.96, 0.01)) for label in labels}
    collector = WordCollector([5], decoding="viterbi")
    # words 1 and 4 have no sub-token: before the fix they were pinned to the first label, B-LOC, which
    # opened a LOC entity at word 1 (turning the real B-LOC at word 2 into an inside label) and left one
    # open at the end
    collector.add(0, [NO_WORD, 0, 2, 3, NO_WORD], [confident["S-PER"]] * 1 + [confident["S-PER"], confident["B-LOC"],
                                                                             confident["E-LOC"], confident["S-PER"]])
    tags, probabilities, missing = collector.result(labels, outside_label(labels), "IOBES")
    assert missing == 2 and tags[0][0] == "S-PER" and tags[0][2:4] == ["B-LOC", "E-LOC"]
    assert tags[0][1].startswith("S-") and tags[0][4].startswith("S-")
    assert probabilities[0][1] == probabilities[0][4] == 0.0


def test_decoder_reads_padded_batches_in_feature_order():
    features = {"word_ids": [[NO_WORD, 0, 0, 1, NO_WORD], [NO_WORD, 0, NO_WORD]], "example_id": [0, 1]}
    decoder = WordDecoder(features, [2, 1])
    batch = np.full((2, 5, 2), -100.0)
    batch[0, :5] = [(0, 1), (1, 0.9), (2, 0.5), (2, 0.7), (0, 1)]
    batch[1, :3] = [(0, 1), (3, 0.8), (0, 1)]
    decoder.add_batch([batch[:1], batch[1:, :3]])
    tags, scores = decoder.result(LABELS, "O", "validation", "IOB2")
    assert tags == [["B-PER", "I-PER"], ["B-LOC"]]
    assert scores == [[pytest.approx(0.9), pytest.approx(0.7)], [pytest.approx(0.8)]]


def test_the_score_table_has_a_gold_count_column_only_with_per_type_scores():
    from nerkit.progress import score_table

    overall = {"eval_precision": 0.5, "eval_recall": 0.25, "eval_f1": 1 / 3, "eval_accuracy": 0.9, "eval_loss": 0.4}
    table = score_table(overall, "eval").splitlines()
    assert table[0].split() == ["precision", "recall", "f1"]
    assert table[1].split() == ["overall", "0.5000", "0.2500", "0.3333"]
    per_type = dict(overall, eval_PER_precision=0.5, eval_PER_recall=0.25, eval_PER_f1=1 / 3, eval_PER_number=4)
    table = score_table(per_type, "eval").splitlines()
    assert table[0].split() == ["precision", "recall", "f1", "number"]
    assert table[1].split()[-1] == "4" and table[2].split()[-1] == "4"


@pytest.mark.parametrize("decoding", ["viterbi", "argmax"])
def test_without_an_o_label_a_word_without_sub_tokens_inside_a_chunk_does_not_split_it(decoding):
    # IOB2 chunks that cover every word: between B-NP and I-NP, Viterbi may give the dropped word B-NP (a tie
    # with I-NP, both allowed there) and argmax the first label (B-NP): either opens a second chunk
    labels = ["B-NP", "B-VP", "I-NP", "I-VP"]
    rows = {"viterbi": lambda label: np.log(np.where(np.arange(4) == labels.index(label), 0.97, 0.01)),
            "argmax": lambda label: (labels.index(label), 0.97)}[decoding]
    collector = WordCollector([4], decoding=decoding)
    collector.add(0, [NO_WORD, 0, 2, 3, NO_WORD], [rows(label) for label in ("B-NP", "B-NP", "I-NP", "B-VP", "B-NP")])
    tags, _, missing = collector.result(labels, outside_label(labels), "IOB2")
    assert missing == 1 and tags == [["B-NP", "I-NP", "I-NP", "B-VP"]]

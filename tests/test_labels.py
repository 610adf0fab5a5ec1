import pytest
from transformers import BertConfig

from nerkit.data import Split
from nerkit.errors import UserError
from nerkit.labels import choose_label_list, data_label_list, inside_label_ids, model_label_list, outside_label


def split(name, tags):
    return Split(name, name, [["w"] * len(t) for t in tags], tags, [f"line {i}" for i in range(len(tags))])


def test_label_list_is_the_sorted_union_of_every_split():
    splits = {"train": split("train", [["O", "B-PER"]]), "validation": split("validation", [["B-LOC", "O"]])}
    assert data_label_list(splits) == ["B-LOC", "B-PER", "O"]


def test_a_shortened_split_keeps_the_tags_of_the_whole():
    assert data_label_list({"train": split("train", [["O"], ["B-PER"]]).select(1)}) == ["B-PER", "O"]


def test_declared_names_keep_their_order_and_must_cover_the_data():
    splits = {"train": split("train", [["O", "B-PER"]])}
    assert data_label_list(splits, ["O", "B-PER", "I-PER"]) == ["O", "B-PER", "I-PER"]
    with pytest.raises(UserError, match="B-PER"):
        data_label_list(splits, ["O"])


def test_model_label_list_ignores_placeholders():
    assert model_label_list(BertConfig(num_labels=3)) is None
    config = BertConfig(id2label={0: "O", 1: "B-PER"}, label2id={"O": 0, "B-PER": 1})
    assert model_label_list(config) == ["O", "B-PER"]


def test_same_label_set_reuses_the_head_in_the_model_order():
    assert choose_label_list(["B-PER", "O"], ["O", "B-PER"], False, "m") == (["O", "B-PER"], True)


def test_data_labels_that_the_model_knows_reuse_the_head():
    assert choose_label_list(["O"], ["O", "B-PER"], False, "m") == (["O", "B-PER"], True)


def test_different_label_set_needs_ignore_mismatched_sizes():
    with pytest.raises(UserError, match="--ignore_mismatched_sizes") as error:
        choose_label_list(["O", "B-X"], ["O", "B-PER"], False, "some/model")
    assert "B-X" in str(error.value) and "some/model" in str(error.value)
    assert choose_label_list(["O", "B-X"], ["O", "B-PER"], True, "m") == (["O", "B-X"], False)


def test_base_model_without_labels_takes_the_data_labels():
    assert choose_label_list(["B-X", "O"], None, False, "m") == (["B-X", "O"], False)


def test_inside_labels():
    labels = ["O", "B-PER", "I-PER", "S-LOC", "I-LOC", "B-MISC", "U-ORG", "I-ORG", "E-LOC"]
    inside = inside_label_ids(labels)
    assert [labels[i] for i in inside] == ["O", "I-PER", "I-PER", "I-LOC", "I-LOC", "B-MISC", "I-ORG", "I-ORG",
                                           "E-LOC"]


def test_outside_label():
    assert outside_label(["B-X", "O"]) == "O"
    assert outside_label(["NN", "VB"]) is None  # the decoding chooses (nerkit.decoding)

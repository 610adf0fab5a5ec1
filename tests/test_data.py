import csv
import json

import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, List, Value

from nerkit.arguments import DataTrainingArguments
from nerkit.data import load_splits
from nerkit.errors import UserError

from conftest import examples, write_jsonl

ROWS = examples(3)
NAMES = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC"]


def read(**kwargs):
    splits, declared = load_splits(DataTrainingArguments(**kwargs))
    return splits, declared


def as_pairs(split):
    return list(zip(split.tokens, split.tags))


def write_csv(path, rows, as_python=False):
    encode = repr if as_python else json.dumps
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["tokens", "ner_tags"])
        for tokens, tags in rows:
            writer.writerow([encode(tokens), encode(tags)])
    return str(path)


def test_json_lines(tmp_path):
    splits, declared = read(train_file=write_jsonl(tmp_path / "train.jsonl", ROWS))
    assert as_pairs(splits["train"]) == ROWS and declared is None
    assert splits["train"].where(1).endswith("train.jsonl, line 2")


def test_json_array(tmp_path):
    path = tmp_path / "train.json"
    path.write_text(json.dumps([{"tokens": t, "ner_tags": g} for t, g in ROWS], indent=2))
    assert as_pairs(read(train_file=str(path))[0]["train"]) == ROWS


@pytest.mark.parametrize("as_python", [False, True])
def test_csv_list_cells(tmp_path, as_python):
    path = write_csv(tmp_path / "train.csv", ROWS, as_python)
    assert as_pairs(read(train_file=path)[0]["train"]) == ROWS


def test_columns_found_by_position_and_by_name(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps({"words": t, "labels": g, "id": 1}) + "\n" for t, g in ROWS))
    assert as_pairs(read(train_file=str(path))[0]["train"]) == ROWS  # first and second columns
    path.write_text("".join(json.dumps({"id": 1, "pos": g, "words": t}) + "\n" for t, g in ROWS))
    named = read(train_file=str(path), text_column_name="words", label_column_name="pos")[0]["train"]
    assert as_pairs(named) == ROWS
    tagged = tmp_path / "chunk.jsonl"
    tagged.write_text("".join(json.dumps({"tokens": t, "x": 1, "chunk_tags": g}) + "\n" for t, g in ROWS))
    assert as_pairs(read(train_file=str(tagged), task_name="chunk")[0]["train"]) == ROWS


def test_unlabelled_test_file(tmp_path):
    splits, _ = read(test_file=write_jsonl(tmp_path / "test.json", ROWS, labelled=False))
    assert splits["test"].tags is None and splits["test"].tokens == [t for t, _ in ROWS]


def test_integer_tags_need_names(tmp_path):
    rows = [(tokens, [NAMES.index(tag) for tag in tags]) for tokens, tags in ROWS]
    path = write_jsonl(tmp_path / "train.json", rows)
    with pytest.raises(UserError, match="--label_list"):
        read(train_file=path)
    splits, declared = read(train_file=path, label_list=",".join(NAMES))
    assert as_pairs(splits["train"]) == ROWS and declared == NAMES


def classlabel_dataset():
    features = Features({"tokens": List(Value("string")), "ner_tags": List(ClassLabel(names=NAMES))})
    columns = {"tokens": [t for t, _ in ROWS], "ner_tags": [[NAMES.index(x) for x in g] for _, g in ROWS]}
    return Dataset.from_dict(columns, features=features)


def test_local_dataset_folder_in_hub_layout_with_classlabel(tmp_path):
    folder = tmp_path / "my_dataset" / "data"
    folder.mkdir(parents=True)
    classlabel_dataset().to_parquet(str(folder / "train-00000-of-00001.parquet"))
    classlabel_dataset().to_parquet(str(folder / "validation-00000-of-00001.parquet"))
    splits, declared = read(dataset_name=str(tmp_path / "my_dataset"))
    assert declared == NAMES
    assert as_pairs(splits["train"]) == ROWS and as_pairs(splits["validation"]) == ROWS


def test_saved_dataset_folder(tmp_path):
    DatasetDict({"train": classlabel_dataset(), "test": classlabel_dataset()}).save_to_disk(str(tmp_path / "saved"))
    splits, declared = read(dataset_name=str(tmp_path / "saved"))
    assert declared == NAMES and as_pairs(splits["test"]) == ROWS


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"tokens": ["a", "b"], "ner_tags": ["O"]}\n', "line 1: 2 words but 1 tags"),
        ('{"tokens": ["a"], "ner_tags": ["O"]}\n{"tokens": ["a", ""], "ner_tags": ["O", "O"]}\n', "line 2: word 1"),
        ('{"tokens": ["a"], "ner_tags": ["O"]}\n{"tokens": ["a"],\n', "line 2: not valid JSON"),
        ('{"tokens": "a b", "ner_tags": ["O", "O"]}\n', "must hold a list"),
        ("\n\n", "is empty"),
    ],
)
def test_bad_json_lines_name_the_line(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(UserError, match=message) as error:
        read(train_file=str(path))
    assert str(path) in str(error.value)


def test_missing_file_and_unknown_extension(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        read(train_file=str(tmp_path / "nope.json"))
    other = tmp_path / "data.xlsx"
    other.write_text("x")
    with pytest.raises(UserError, match="extension"):
        read(train_file=str(other))


def test_named_column_must_exist(tmp_path):
    with pytest.raises(UserError, match="--label_column_name"):
        read(train_file=write_jsonl(tmp_path / "t.json", ROWS), label_column_name="tags")


def test_no_data_source_is_refused():
    with pytest.raises(ValueError, match="--dataset_name"):
        DataTrainingArguments()

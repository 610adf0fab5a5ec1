"""Every input format gives the same examples and scores; every bad input gets exit status 2 with the file
and line named, no traceback, and an untouched output folder."""

import os

import pytest
from datasets import ClassLabel, Dataset, Features, List, Value

from conftest import examples, write_jsonl
from nerkit.arguments import DataTrainingArguments
from nerkit.data import load_splits
from nerkit.errors import UserError
from nerkit.summary import break_warning, scheme_breaks
from test_run_ner import read_json, run, run_script, write_rows

ROWS = examples(12)
NAMES = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC"]


def conll_text(rows, columns=2, newline="\n", bom=False, docstart=True):
    lines = ["-DOCSTART- -X- O O", ""] if docstart else []
    for tokens, tags in rows:
        for token, tag in zip(tokens, tags):
            lines.append("\t".join([token, "NNP", tag] if columns == 3 else [token, tag]))
        lines += ["", ""]  # extra blank lines are tolerated
    return ("\ufeff" if bom else "") + newline.join(lines) + newline


def write(path, text):
    with open(path, "w", encoding="utf-8", newline="") as handle:
        handle.write(text)
    return str(path)


def write_parquet(path, rows, classlabel=False):
    if classlabel:
        features = Features({"tokens": List(Value("string")), "ner_tags": List(ClassLabel(names=NAMES))})
        data = {"tokens": [t for t, _ in rows], "ner_tags": [[NAMES.index(x) for x in g] for _, g in rows]}
        Dataset.from_dict(data, features=features).to_parquet(str(path))
    else:
        Dataset.from_dict({"tokens": [t for t, _ in rows], "ner_tags": [g for _, g in rows]}).to_parquet(str(path))
    return str(path)


def write_hub_folder(folder, rows):
    """A local dataset folder in hub layout: data files and a dataset card declaring ClassLabel features."""
    os.makedirs(folder / "data")
    names = "".join(f"          '{i}': {name}\n" for i, name in enumerate(NAMES))
    card = ("---\ndataset_info:\n  features:\n  - name: tokens\n    sequence: string\n  - name: ner_tags\n"
            "    sequence:\n      class_label:\n        names:\n" + names +
            "configs:\n- config_name: default\n  data_files:\n  - split: train\n    path: data/train.jsonl\n"
            "  - split: validation\n    path: data/validation.jsonl\n---\n# A test dataset\n")
    write(folder / "README.md", card)
    ids = [(t, [NAMES.index(x) for x in g]) for t, g in rows]
    write_jsonl(folder / "data" / "train.jsonl", ids)
    write_jsonl(folder / "data" / "validation.jsonl", ids)
    return str(folder)


def test_hub_layout_splits_naming_their_labels_differently_are_each_read_with_their_own(tmp_path):
    """datasets reads every split of a folder with the first split's features: validation's id 1 (B-LOC in
    its own file) would have read as train's B-PER."""
    def save(names, rows, path):
        features = Features({"tokens": List(Value("string")), "ner_tags": List(ClassLabel(names=names))})
        ids = {"tokens": [t for t, _ in rows], "ner_tags": [[names.index(tag) for tag in g] for _, g in rows]}
        Dataset.from_dict(ids, features=features).to_parquet(str(path))

    os.makedirs(tmp_path / "hub" / "data")
    save(["O", "B-PER", "I-PER"], [(["John", "Smith"], ["B-PER", "I-PER"])], tmp_path / "hub" / "data" /
         "train-00000-of-00001.parquet")
    save(["O", "B-LOC", "I-LOC"], [(["Paris", "."], ["B-LOC", "O"])], tmp_path / "hub" / "data" /
         "validation-00000-of-00001.parquet")
    splits, declared = load_splits(DataTrainingArguments(dataset_name=str(tmp_path / "hub")))
    assert splits["validation"].tags == [["B-LOC", "O"]] and splits["train"].tags == [["B-PER", "I-PER"]]
    assert declared == ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    save(["O", "B-ORG", "I-ORG"], [(["EU"], ["B-ORG"])], tmp_path / "hub" / "data" / "train-00001-of-00002.parquet")
    with pytest.raises(UserError, match="the files of the train split name their labels differently"):
        load_splits(DataTrainingArguments(dataset_name=str(tmp_path / "hub")))


def read_train(path, **kwargs):
    splits, declared = load_splits(DataTrainingArguments(train_file=path, **kwargs))
    return list(zip(splits["train"].tokens, splits["train"].tags)), declared


@pytest.mark.parametrize(
    "name, text",
    [
        ("plain.conll", conll_text(ROWS)),
        ("crlf_bom.txt", conll_text(ROWS, newline="\r\n", bom=True)),
        ("three_columns.iob", conll_text(ROWS, columns=3)),
        ("spaces.bio", conll_text(ROWS).replace("\t", "   ")),
        ("trailing.tsv", conll_text(ROWS, docstart=False).replace("\n", " \n")),
    ],
)
def test_conll_variants_read_the_same_examples(tmp_path, name, text):
    assert read_train(write(tmp_path / name, text))[0] == ROWS


def test_conll_comment_lines_are_skipped_and_a_hash_token_is_kept(tmp_path, caplog):
    """MultiCoNER opens each sentence with `# id ... domain=en` in as many columns as its token lines; other
    files write `# sent_id = 1` or `# doc1`. A tweet may open with the token `#`, tagged as tokens are."""
    text = ("# id 6e9e1f domain=en\nJohn _ _ B-PER\nSmith _ _ I-PER\n\n"
            "# id 77aa domain=en\n# sent_id = 2\nParis _ _ B-LOC\n\n"
            "# _ _ O\nlove _ _ O\n")
    with caplog.at_level("INFO"):
        rows = read_train(write(tmp_path / "multiconer.conll", text))[0]
    assert rows == [(["John", "Smith"], ["B-PER", "I-PER"]), (["Paris"], ["B-LOC"]), (["#", "love"], ["O", "O"])]
    assert "3 comment line(s) skipped" in caplog.text and "line 1 first" in caplog.text
    rows = read_train(write(tmp_path / "docs.conll", "# doc1\nJohn B-PER\n\n#hashtag O\nwow O\n"))[0]
    assert rows == [(["John"], ["B-PER"]), (["#hashtag", "wow"], ["O", "O"])]
    # a hashtag tagged with an entity that no other line of the file has is a word all the same
    rows = read_train(write(tmp_path / "rare.conll", "John B-PER\nSmith I-PER\n\n#Avengers B-movie\nrocks O\n"))[0]
    assert rows == [(["John", "Smith"], ["B-PER", "I-PER"]), (["#Avengers", "rocks"], ["B-movie", "O"])]


def test_conll_columns_by_index(tmp_path):
    path = write(tmp_path / "pos.conll", conll_text(ROWS, columns=3))
    pos_rows = [(tokens, ["NNP"] * len(tokens)) for tokens, _ in ROWS]
    assert read_train(path, label_column_name="1")[0] == pos_rows
    with pytest.raises(UserError, match="index"):
        read_train(path, label_column_name="pos")


def test_parquet_with_and_without_classlabel(tmp_path):
    assert read_train(write_parquet(tmp_path / "plain.parquet", ROWS))[0] == ROWS
    rows, declared = read_train(write_parquet(tmp_path / "named.parquet", ROWS, classlabel=True))
    assert rows == ROWS and declared == NAMES


def test_hub_layout_folder_with_a_dataset_card(tmp_path):
    splits, declared = load_splits(DataTrainingArguments(dataset_name=write_hub_folder(tmp_path / "hub", ROWS)))
    assert declared == NAMES and list(zip(splits["validation"].tokens, splits["validation"].tags)) == ROWS


def test_forced_format(tmp_path):
    path = write(tmp_path / "train.data", conll_text(ROWS))
    with pytest.raises(UserError, match="--file_format"):
        read_train(path)
    assert read_train(path, file_format="conll")[0] == ROWS


def test_every_format_gives_the_same_scores(tiny_bert, tmp_path):
    held_out = examples(5, offset=1)
    writers = {
        "json": lambda p, r: write_rows(p, r),
        "csv": lambda p, r: write_rows(p, r),
        "conll": lambda p, r: write(p, conll_text(r)),
        "parquet": write_parquet,
    }
    scores = {}
    for kind, writer in writers.items():
        folder = tmp_path / kind
        folder.mkdir()
        files = {"train": writer(folder / f"train.{kind}", ROWS), "validation": writer(folder / f"dev.{kind}", held_out)}
        output = run(tiny_bert, folder / "out", "--do_train", "--do_eval", "--num_train_epochs", "1", files=files)
        result = read_json(os.path.join(output, "eval_results.json"))
        scores[kind] = {k: v for k, v in result.items() if "runtime" not in k and "per_second" not in k}
        labels = read_json(os.path.join(output, "config.json"))["id2label"]
        scores[kind]["labels"] = labels
    first = scores["json"]
    assert all(value == first for value in scores.values()), scores


def test_scheme_breaks_are_found():
    tags = ["O", "I-PER", "B-LOC", "I-LOC", "I-ORG", "B-X", "E-X", "I-X"]
    assert scheme_breaks([tags], sorted(set(tags)), "IOB2") == [(0, 1), (0, 4), (0, 7)]  # E-X is free in IOB2
    # IOBES also: I-PER and I-ORG are left open (B-LOC, B-X follow them), I-X ends the example open
    assert scheme_breaks([["O"], tags], sorted(set(tags)), "IOBES") == [(1, 1), (1, 2), (1, 4), (1, 5), (1, 7)]
    assert scheme_breaks([["O", "I-PER", "B-PER"]], ["B-PER", "I-PER", "O"], "IOB1") == []
    assert scheme_breaks([["O", "B-PER"]], ["B-PER", "I-PER", "O"], "IOB1") == [(0, 1)]
    assert scheme_breaks([["NN", "IN", "DT"]], ["DT", "IN", "NN"], "none") == []  # POS tags have no scheme


def test_scheme_break_warning_names_the_lines(tmp_path):
    rows = [(["a", "b", "c"], ["O", "I-PER", "O"])] + ROWS[:2] + [(["d", "e"], ["B-LOC", "I-PER"])]
    path = write(tmp_path / "train.conll", conll_text(rows, docstart=False))
    splits, _ = load_splits(DataTrainingArguments(train_file=path))
    warning = break_warning(splits["train"], NAMES, "IOB2")
    # 'b' is on line 2; then 2 blank lines after each sentence: 'a b c' 1-3, 10 words 6-15, 8 words 18-25,
    # 'd' 28 and 'e' 29
    assert warning.startswith("train: 2 tags") and f"{path}, line 2;" in warning and f"{path}, line 29." in warning


BAD_CASES = [
    ("train.json", '{"tokens": ["a", "b"], "ner_tags": ["O", "O"]}\n{"tokens": ["a", "b"], "ner_tags": ["O"]}\n',
     "line 2: 2 words but 1 tags"),
    ("train.json", '{"tokens": ["a"], "ner_tags": ["O"]}\n{"tokens": [""], "ner_tags": ["O"]}\n', "line 2: word 0"),
    ("train.json", '{"tokens": ["a"], "ner_tags": ["O"]}\n{"tokens": ["a"], "ner_tags": [\n', "line 2: not valid JSON"),
    ("train.json", '{"id": 1, "ner_tags": ["O"]}\n', "--text_column_name"),
    ("train.json", '{"tokens": ["a"], "ner_tags": [9]}\n', "--label_list"),
    ("train.csv", 'tokens,ner_tags\n"[""a""]","[""O""]"\n"[""a"", ""b""","[""O""]"\n', "line 3: the 'tokens' cell"),
    ("train.csv", '{"tokens": ["a"], "ner_tags": ["O"]}\n', "looks like JSON"),
    ("train.conll", "a\tO\nb\tB-X\tNN\n", "line 2: 3 column(s)"),
    ("train.conll", "a\tO\n\tB-X\tNN\n", "It has no word before its first tab."),
    ("train.conll", "a O\nb\u3000B-X\n", "It holds U+3000, which separates no columns here"),
    ("train.conll", "", "is empty"),
    ("train.conll", b"caf\xe9\tO\n", "line 1: the file is not valid UTF-8 (the byte at offset 3, 0xe9)"),
    ("train.json", '{"tokens": ["caf\u00e9"], "ner_tags": ["O"]}\n'.encode("utf-16"), "is UTF-16 text"),
    ("train.json", '{"data": [{"tokens": ["a"], "ner_tags": ["O"]}]}\n', "examples in a list under 'data'"),
    ("train.json", '{\n  "data": [\n    {"tokens": ["a"], "ner_tags": ["O"]}\n  ]\n}\n', "under 'data'"),
    ("train.json", '{"tokens": [["a", "b"], ["c"]], "ner_tags": [["O", "O"], ["O"]]}\n',
     "columns (tokens, ner_tags) hold a list per example"),
    ("train.conll", "café\tO\n".encode("utf-16-le"), "iconv -f utf-16 -t utf-8"),  # no byte-order mark
]


def refused(monkeypatch, *argv):
    """The `UserError` run_ner.py raises in-process for `argv` (what the command line prints as one
    paragraph with exit status 2: see the command-line test below), failing if weights load first."""
    import run_ner

    def no_weights(*args, **kwargs):
        raise AssertionError("model weights were loaded before the input was refused")

    monkeypatch.setattr(run_ner, "load_model", no_weights)
    with pytest.raises(UserError) as error:
        run_ner.cli(["--report_to", "none", *argv])
    return str(error.value)


@pytest.mark.parametrize("name, content, message", BAD_CASES)
def test_bad_input_is_refused_naming_file_and_line(tiny_bert, tmp_path, monkeypatch, name, content, message):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    output = tmp_path / "out"
    error = refused(monkeypatch, "--model_name_or_path", tiny_bert, "--train_file", str(path), "--do_train",
                    "--output_dir", str(output))
    assert message in error and str(path) in error and not output.exists()


def test_bad_input_on_the_command_line_exits_2_without_a_traceback(tiny_bert, tmp_path):
    name, content, message = BAD_CASES[0]
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    output = tmp_path / "out"
    result = run_script("--model_name_or_path", tiny_bert, "--train_file", str(path), "--do_train",
                        "--output_dir", str(output), "--report_to", "none")
    assert result.returncode == 2, result.stderr[-2000:]
    assert message in result.stderr and str(path) in result.stderr
    assert "Traceback" not in result.stderr and not output.exists()


def test_label_id_out_of_range_with_names(tiny_bert, tmp_path, monkeypatch):
    path = write_jsonl(tmp_path / "train.json", [(["a", "b"], [0, 12])])
    error = refused(monkeypatch, "--model_name_or_path", tiny_bert, "--train_file", path, "--do_train",
                    "--label_list", ",".join(NAMES), "--output_dir", str(tmp_path / "out"))
    assert "tag id 12 is out of range" in error and "line 1" in error


def test_missing_split_for_do_predict_leaves_an_existing_folder_untouched(tiny_bert, ner_files, tmp_path,
                                                                           monkeypatch):
    (tmp_path / "keep.txt").write_text("x")
    error = refused(monkeypatch, "--model_name_or_path", tiny_bert, "--train_file", ner_files["train"],
                    "--do_predict", "--output_dir", str(tmp_path))
    assert "--do_predict needs a test split" in error and os.listdir(tmp_path) == ["keep.txt"]

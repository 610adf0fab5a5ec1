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


def test_csv_of_numpy_arrays_as_pandas_writes_them(tmp_path):
    """Dataset.to_pandas() holds numpy arrays, which DataFrame.to_csv writes as numpy prints them: items apart
    by spaces (a long one over several lines). Read as a Python literal, the quoted words joined into one."""
    import numpy
    import pandas

    rows = ROWS + [(["word"] * 40, ["O"] * 40)]  # long enough for numpy to break its line
    frame = pandas.DataFrame({"tokens": [numpy.array(t) for t, _ in rows],
                              "ner_tags": [numpy.array(g) for _, g in rows],
                              "ids": [numpy.array([NAMES.index(tag) for tag in g]) for _, g in rows]})
    frame.to_csv(tmp_path / "train.csv", index=False)
    assert "['EU' 'rejects'" in (tmp_path / "train.csv").read_text()
    assert as_pairs(read(train_file=str(tmp_path / "train.csv"))[0]["train"]) == rows
    by_id = read(train_file=str(tmp_path / "train.csv"), label_column_name="ids", label_list=",".join(NAMES))
    assert as_pairs(by_id[0]["train"]) == rows


def test_a_csv_list_with_quoted_words_not_apart_by_a_comma_is_refused(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("tokens,ner_tags\n\"['John', 'Smith' 'x']\",\"['B-PER', 'I-PER']\"\n", encoding="utf-8")
    with pytest.raises(UserError, match="train.csv.*'tokens' cell is not a valid list.*with a comma between items"):
        read(train_file=str(path))


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


def test_a_test_file_whose_first_example_lacks_tags_is_refused_not_read_as_unlabelled(tmp_path):
    path = tmp_path / "test.json"
    rows = [{"tokens": ROWS[0][0]}] + [{"tokens": t, "ner_tags": g} for t, g in ROWS[1:]]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(UserError, match="line 1: this example has no 'ner_tags'"):
        read(test_file=str(path))
    table = tmp_path / "test.csv"  # the same with an empty cell
    table.write_text('tokens,ner_tags\n"[""EU""]",\n"[""Peter""]","[""B-PER""]"\n')
    with pytest.raises(UserError, match="line 2: this example has no 'ner_tags'"):
        read(test_file=str(table))


def test_integer_tags_need_names(tmp_path):
    rows = [(tokens, [NAMES.index(tag) for tag in tags]) for tokens, tags in ROWS]
    path = write_jsonl(tmp_path / "train.json", rows)
    with pytest.raises(UserError, match="--label_list"):
        read(train_file=path)
    splits, declared = read(train_file=path, label_list=",".join(NAMES))
    assert as_pairs(splits["train"]) == ROWS and declared == NAMES


def test_integer_tags_of_a_conll_file_are_named_by_the_label_list(tmp_path):
    path = tmp_path / "train.conll"
    path.write_text("".join(f"{word}\t{NAMES.index(tag)}\n" for word, tag in zip(*ROWS[0])) + "\n")
    splits, _ = read(train_file=str(path), label_list=",".join(NAMES))
    assert as_pairs(splits["train"]) == ROWS[:1]


def test_a_conll_file_whose_first_line_lacks_its_tag_names_that_line(tmp_path):
    path = tmp_path / "train.conll"
    path.write_text("EU\nrejects\tO\n")
    with pytest.raises(UserError, match="line 2: 2 column.* where line 1 .* has 1"):
        read(train_file=str(path))


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


def labelled_dataset(names, rows=ROWS, ids=None):
    """A Dataset of `rows` whose tags are a ClassLabel of `names` (or the ClassLabel ids `ids`)."""
    features = Features({"tokens": List(Value("string")), "ner_tags": List(ClassLabel(names=names))})
    tags = ids or [[names.index(tag) for tag in row_tags] for _, row_tags in rows]
    return Dataset.from_dict({"tokens": [t for t, _ in rows], "ner_tags": tags}, features=features)


def test_a_folder_of_conll_files_is_read_as_conll_files_are(tmp_path):
    folder = tmp_path / "conll_folder"
    folder.mkdir()
    for name, rows in (("train.conll", ROWS), ("en-ud-dev.conll", ROWS[:2])):
        (folder / name).write_text("".join("".join(f"{w}\t{t}\n" for w, t in zip(*row)) + "\n" for row in rows))
    splits, _ = read(dataset_name=str(folder))
    assert as_pairs(splits["train"]) == ROWS and as_pairs(splits["validation"]) == ROWS[:2]  # tags kept
    (folder / "extra.conll").write_text("EU\tB-ORG\n")
    with pytest.raises(UserError, match="extra.conll is a CoNLL file whose split cannot be told"):
        read(dataset_name=str(folder))


def test_classlabel_names_that_differ_between_splits_are_merged(tmp_path):
    other = [(tokens, ["B-DATE" if tag == "B-MISC" else tag for tag in tags]) for tokens, tags in ROWS]
    DatasetDict({"train": labelled_dataset(NAMES), "validation": labelled_dataset(
        [name if name != "B-MISC" else "B-DATE" for name in NAMES], other)}).save_to_disk(str(tmp_path / "saved"))
    splits, declared = read(dataset_name=str(tmp_path / "saved"))
    assert declared == NAMES + ["B-DATE"] and as_pairs(splits["validation"]) == other
    from nerkit.labels import data_label_list

    assert data_label_list(splits, declared) == NAMES + ["B-DATE"]  # it stopped here, asking for --label_list


def test_a_split_the_dataset_lacks_is_not_asked_of_a_file(tmp_path):
    """--dataset_name with --validation_file is refused: the advice must not be to add that file."""
    from types import SimpleNamespace

    from nerkit.workflow import read_data

    DatasetDict({"train": classlabel_dataset()}).save_to_disk(str(tmp_path / "saved"))
    flags = DataTrainingArguments(dataset_name=str(tmp_path / "saved"))
    model = SimpleNamespace(cache_dir=None, token=None)
    with pytest.raises(UserError, match="--do_eval needs a validation split, and the dataset .* has none. Drop "
                                        "--do_eval, or give every split as files") as error:
        read_data(flags, model, {"validation": "--do_eval"}, only_needed=True)
    assert "--validation_file, --test_file) instead of --dataset_name" in str(error.value)


def test_a_label_list_that_contradicts_the_datasets_classlabel_is_refused(tmp_path):
    DatasetDict({"train": labelled_dataset(NAMES)}).save_to_disk(str(tmp_path / "saved"))
    with pytest.raises(UserError, match="--label_list names O, B-PER, .* ClassLabel tags named O, B-PER, I-PER"):
        read(dataset_name=str(tmp_path / "saved"), label_list="O,B-PER,B-LOC")
    assert read(dataset_name=str(tmp_path / "saved"), label_list=",".join(NAMES))[1] == NAMES  # the same: fine


def test_a_split_labelled_minus_one_throughout_is_unlabelled(tmp_path):
    unlabelled = labelled_dataset(NAMES, ids=[[-1] * len(tokens) for tokens, _ in ROWS])
    DatasetDict({"train": labelled_dataset(NAMES), "test": unlabelled}).save_to_disk(str(tmp_path / "saved"))
    splits, _ = read(dataset_name=str(tmp_path / "saved"))
    assert splits["test"].tags is None and splits["train"].tags is not None


def test_other_spellings_of_split_names_are_read_and_unknown_ones_named(tmp_path, caplog):
    DatasetDict({"Training": labelled_dataset(NAMES), "val": labelled_dataset(NAMES),
                 "extra": labelled_dataset(NAMES)}).save_to_disk(str(tmp_path / "saved"))
    with caplog.at_level("WARNING", logger="nerkit.data"):
        splits, _ = read(dataset_name=str(tmp_path / "saved"))
    assert set(splits) == {"train", "validation"}
    assert "has splits that are not read: extra" in caplog.text


def test_dataset_words_that_are_not_strings_are_refused(tmp_path):
    DatasetDict({"train": Dataset.from_dict({"tokens": [[["EU"], ["rejects"]]], "ner_tags": [["B-ORG", "O"]]})}
                ).save_to_disk(str(tmp_path / "saved"))
    with pytest.raises(UserError, match=r"example 0: 'tokens' holds a list \(\"\['EU'\]\"\) where a word should be"):
        read(dataset_name=str(tmp_path / "saved"))


def test_an_empty_data_file_in_a_dataset_folder_is_named(tmp_path):
    (tmp_path / "folder").mkdir()
    write_jsonl(tmp_path / "folder" / "train.json", ROWS)
    (tmp_path / "folder" / "validation.json").write_text("")
    with pytest.raises(UserError, match="its validation split has no examples \\(an empty data file\\)"):
        read(dataset_name=str(tmp_path / "folder"))


def test_an_empty_saved_split_is_named(tmp_path):
    DatasetDict({"train": labelled_dataset(NAMES), "validation": labelled_dataset(NAMES).select([])}).save_to_disk(
        str(tmp_path / "saved"))
    with pytest.raises(UserError, match="the saved split\\(s\\) validation have no examples"):
        read(dataset_name=str(tmp_path / "saved"))


def test_datasets_messages_become_one_paragraph():
    from nerkit.data import dataset_failure

    message = dataset_failure("d6", None, ValueError("Config name is missing.\nPlease pick one among:\n\t['en', 'de']"))
    assert "\n" not in message and "\t" not in message and "Please pick one among: ['en', 'de']" in message


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"tokens": ["a", "b"], "ner_tags": ["O"]}\n', "line 1: 2 words but 1 tags"),
        ('{"tokens": ["a"], "ner_tags": ["O"]}\n{"tokens": ["a", ""], "ner_tags": ["O", "O"]}\n', "line 2: word 1"),
        ('{"tokens": ["a"], "ner_tags": ["O"]}\n{"tokens": ["a"],\n', "line 2: not valid JSON"),
        ('{"tokens": "a b", "ner_tags": ["O", "O"]}\n', "must hold a list"),
        ('{"tokens": ["a"], "ner_tags": ["O"]}\n{"tokens": ["b"]}\n', "line 2: this example has no 'ner_tags'"),
        ("\n\n", "is empty"),
        ('{"tokens": ["a", "b"], "ner_tags": ["O", ""]}\n', "line 1, word 1: the tag '' is empty"),
        ('{"tokens": ["a", "b"], "ner_tags": ["B ORG", "O"]}\n', "line 1, word 0: the tag 'B ORG' is empty or holds"),
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


def test_a_tag_column_split_by_a_space_inside_a_tab_separated_line_is_refused(tmp_path):
    """`EU<TAB>NNP B-ORG` would give the tag "NNP B-ORG", written as two labels in predictions.txt."""
    path = tmp_path / "mixed.conll"
    path.write_text("EU\tNNP B-ORG\nrejects\tVBZ O\n")
    with pytest.raises(UserError, match="the tag 'NNP B-ORG' is empty or holds whitespace"):
        read(train_file=str(path))


def test_columns_come_from_every_row_not_the_first_only(tmp_path):
    path = tmp_path / "train.json"
    path.write_text('{"tokens": ["EU", "rejects"]}\n{"tokens": ["John"], "ner_tags": ["B-PER"]}\n')
    with pytest.raises(UserError, match="line 1: this example has no 'ner_tags'"):
        read(train_file=str(path))


def test_a_label_list_file_that_does_not_exist_is_named(tmp_path):
    from nerkit.data import read_label_names

    with pytest.raises(UserError, match="--label_list file .*labels.txt does not exist"):
        read_label_names(str(tmp_path / "labels.txt"))
    assert read_label_names("O,B-PER,I-PER") == ["O", "B-PER", "I-PER"]


def test_an_empty_name_in_the_label_list_is_refused_as_it_would_shift_the_ids():
    from nerkit.data import read_label_names

    with pytest.raises(UserError, match="--label_list O,,B-PER has an empty name at position 2"):
        read_label_names("O,,B-PER")
    assert read_label_names(" O, B-PER ,I-PER,") == ["O", "B-PER", "I-PER"]  # spaces and a final comma are kept out


def test_named_column_must_exist(tmp_path):
    with pytest.raises(UserError, match="--label_column_name"):
        read(train_file=write_jsonl(tmp_path / "t.json", ROWS), label_column_name="tags")


def test_no_data_source_is_refused():
    with pytest.raises(ValueError, match="--dataset_name"):
        DataTrainingArguments()


# ---------------------------------------------------------------------------------------------------------
# CoNLL-U

CONLLU = (
    "# newdoc id = d1\n"
    "# sent_id = 1\n"
    "# text = Vámonos a Madrid.\n"
    "1-2\tVámonos\t_\t_\t_\t_\t_\t_\t_\t_\n"
    "1\tVamos\tir\tVERB\tVMM\t_\t0\troot\t_\tNER=O\n"
    "2\tnos\tnosotros\tPRON\tPP\t_\t1\tobj\t_\tNER=O\n"
    "3\ta\ta\tADP\tSP\t_\t4\tcase\t_\tNER=O\n"
    "4\tMadrid\tMadrid\tPROPN\tNP\t_\t1\tobl\t_\tNER=B-LOC|SpaceAfter=No\n"
    "4.1\tllegamos\tllegar\tVERB\tVMI\t_\t_\t_\t1:conj\tNER=O\n"
    "5\t.\t.\tPUNCT\tFp\t_\t1\tpunct\t_\tNER=O\n"
    "\n"
    "# sent_id = 2\n"
    "1\tPeter\tPeter\tPROPN\tNP\t_\t2\tnsubj\t_\tNER=B-PER\n"
    "2\tBlackburn\tBlackburn\tPROPN\tNP\t_\t0\troot\t_\tNER=I-PER\n"
    "\n"
)
CONLLU_WORDS = [["Vamos", "nos", "a", "Madrid", "."], ["Peter", "Blackburn"]]


def test_only_ascii_whitespace_separates_conll_columns_and_sentences(tmp_path):
    path = tmp_path / "words.conll"
    path.write_text("New\u00a0York B-LOC\nis O\n", encoding="utf-8")  # a no-break space inside a word
    assert as_pairs(read(train_file=str(path))[0]["train"]) == [(["New\u00a0York", "is"], ["B-LOC", "O"])]
    path.write_text("EU\n\u3000\nrejects\n", encoding="utf-8")  # a word of an ideographic space: not a break
    with pytest.raises(UserError, match=r"line 2: the word is only whitespace \(U\+3000\)"):
        read(test_file=str(path))
    path.write_text("EU\tB-ORG\n\nA\tO\n\u00a0\tO\n", encoding="utf-8")  # not "1 column(s) where line 1 has 2"
    with pytest.raises(UserError, match=r"line 4: the word is only whitespace \(U\+00A0\)"):
        read(train_file=str(path))


def test_a_file_separated_by_no_break_spaces_is_told_why_it_has_no_tags(tmp_path):
    from nerkit.workflow import missing_tags_message

    path = tmp_path / "train.conll"
    path.write_text("John\u00a0B-PER\nSmith\u00a0I-PER\n\nlives\u00a0O\n", encoding="utf-8")
    split = read(test_file=str(path))[0]["test"]
    flags = DataTrainingArguments(test_file=str(path))
    message = missing_tags_message(split, "--do_train", flags)
    assert "what look like tags after U+00A0 (3 of 3 words)" in message and "Replace it with a tab" in message
    path.write_text("New\u00a0York\nis\n", encoding="utf-8")  # a no-break space inside a word says nothing
    assert "U+00A0" not in missing_tags_message(read(test_file=str(path))[0]["test"], "--do_train", flags)


def test_half_a_character_in_a_word_is_refused_with_its_place_before_any_weights_load(tmp_path):
    path = tmp_path / "train.json"
    path.write_text('{"tokens": ["EU"], "ner_tags": ["B-ORG"]}\n'
                    '{"tokens": ["Jo\\ud800hn", "x"], "ner_tags": ["B-PER", "O"]}\n', encoding="utf-8")
    with pytest.raises(UserError, match=r"line 2: word 0 in 'tokens' holds '.ud800', half of a character"):
        read(train_file=str(path))


def test_conllu_reads_form_and_upos_skipping_comments_ranges_and_empty_nodes(tmp_path):
    path = tmp_path / "train.conllu"
    path.write_text(CONLLU, encoding="utf-8")
    split = read(train_file=str(path))[0]["train"]
    assert split.tokens == CONLLU_WORDS
    assert split.tags == [["VERB", "PRON", "ADP", "PROPN", "PUNCT"], ["PROPN", "PROPN"]]
    assert split.where(0).endswith("train.conllu, line 5") and split.where(1).endswith("line 13")


@pytest.mark.parametrize("column, expected", [
    ("NER", [["O", "O", "O", "B-LOC", "O"], ["B-PER", "I-PER"]]),  # a key of the MISC column
    ("xpos", [["VMM", "PP", "SP", "NP", "Fp"], ["NP", "NP"]]),  # a field by name
    ("2", [["ir", "nosotros", "a", "Madrid", "."], ["Peter", "Blackburn"]]),  # a field by index (LEMMA)
])
def test_conllu_tags_from_a_chosen_column(tmp_path, column, expected):
    path = tmp_path / "train.conllu"
    path.write_text(CONLLU, encoding="utf-8")
    split = read(train_file=str(path), label_column_name=column)[0]["train"]
    assert split.tokens == CONLLU_WORDS and split.tags == expected


def test_conllu_errors_name_the_line(tmp_path):
    path = tmp_path / "train.conllu"
    path.write_text(CONLLU.replace("NER=I-PER", "_"), encoding="utf-8")
    with pytest.raises(UserError, match=r"line 14: the MISC column '_' has no 'NER=' entry"):
        read(train_file=str(path), label_column_name="NER")
    path.write_text(CONLLU.replace("1\tPeter\tPeter", "1 Peter\tPeter"), encoding="utf-8")
    with pytest.raises(UserError, match="line 13: 9 tab-separated column"):
        read(train_file=str(path))


def test_conllu_without_tags_is_unlabelled(tmp_path):
    path = tmp_path / "test.conllu"
    path.write_text("# text = a b\n1\ta\t_\t_\t_\t_\t_\t_\t_\t_\n2\tb\t_\t_\t_\t_\t_\t_\t_\t_\n", encoding="utf-8")
    split = read(test_file=str(path))[0]["test"]
    assert split.tokens == [["a", "b"]] and split.tags is None


# ---------------------------------------------------------------------------------------------------------
# Content sniffing


def test_conll_tokens_that_look_like_json_or_csv_are_read_as_conll(tmp_path):
    bracket = tmp_path / "train.conll"
    bracket.write_text("[\tO\nEU\tB-ORG\n]\tO\n\n{\tO\n", encoding="utf-8")
    expected = [(["[", "EU", "]"], ["O", "B-ORG", "O"]), (["{"], ["O"])]
    assert as_pairs(read(train_file=str(bracket), file_format="conll")[0]["train"]) == expected
    assert as_pairs(read(train_file=str(bracket))[0]["train"]) == expected  # by extension too
    # a first line of two name-like cells, as a CSV header has, then bracketed tokens that are no list
    for second in ("[", "[NAME]", "[SEP]", "[1]", "[]"):
        after_header = tmp_path / "valid.conll"
        after_header.write_text(f"Hi\tO\n{second}\tB-PER\n", encoding="utf-8")
        rows = as_pairs(read(validation_file=str(after_header))[0]["validation"])
        assert rows == [(["Hi", second], ["O", "B-PER"])]
    number = tmp_path / "test.conll"
    number.write_text("1,000\npeople\n\nWashington,\nD.C.\n", encoding="utf-8")
    assert read(test_file=str(number))[0]["test"].tokens == [["1,000", "people"], ["Washington,", "D.C."]]


@pytest.mark.parametrize("content, message", [
    ('{"tokens": ["a"], "ner_tags": ["O"]}\n', "looks like JSON"),
    ('[\n  {"tokens": ["a"], "ner_tags": ["O"]}\n]\n', "looks like JSON"),
    ('tokens,ner_tags\n"[""a""]","[""O""]"\n', "looks like CSV"),
    ('tokens\tner_tags\n["John", "Smith"]\t["B-PER", "I-PER"]\n', "looks like CSV.*tab-separated tables are read"),
    ("id,tokens,ner_tags\n0,['John' 'Smith'],[1 2]\n",
     "looks like CSV.*if it is a CoNLL file, pass --file_format conll"),
])
def test_other_formats_behind_a_conll_extension_are_still_caught(tmp_path, content, message):
    path = tmp_path / "train.conll"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(UserError, match=message):
        read(train_file=str(path))


def test_a_tab_separated_table_reads_as_csv(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_text('tokens\tner_tags\n["John", "Smith"]\t["B-PER", "I-PER"]\n'
                    '"[\'EU\', \'rejects\']"\t"[\'B-ORG\', \'O\']"\n', encoding="utf-8")
    rows = as_pairs(read(train_file=str(path), file_format="csv")[0]["train"])
    assert rows == [(["John", "Smith"], ["B-PER", "I-PER"]), (["EU", "rejects"], ["B-ORG", "O"])]


# ---------------------------------------------------------------------------------------------------------
# Datasets the user cannot edit


def test_dataset_with_empty_examples_and_blank_words_is_repaired_with_a_warning(tmp_path, caplog):
    rows = {"tokens": [["EU", "rejects"], [], ["Peter", " ", "Blackburn"], None, ["a", "\xa0"]],
            "ner_tags": [["B-ORG", "O"], [], ["B-PER", "O", "I-PER"], [], ["O", "O"]]}
    DatasetDict({"train": Dataset.from_dict(rows), "validation": Dataset.from_dict(rows)}).save_to_disk(
        str(tmp_path / "saved"))
    with caplog.at_level("WARNING", logger="nerkit"):
        splits, _ = read(dataset_name=str(tmp_path / "saved"))
    train = splits["train"]
    assert train.tokens == [["EU", "rejects"], ["Peter", " ", "Blackburn"], ["a", "\xa0"]]
    assert train.tags == [["B-ORG", "O"], ["B-PER", "O", "I-PER"], ["O", "O"]]
    assert train.where(1).endswith("split train, example 2")  # places keep the dataset's own numbering
    warnings = [record.getMessage() for record in caplog.records if "split train" in record.getMessage()]
    assert any("skipped 2 example(s)" in w and "example 1; example 3" in w for w in warnings), warnings
    assert any("2 word(s)" in w and "example 2, word 1; example 4, word 1" in w for w in warnings), warnings


def test_local_files_keep_their_clear_errors_for_blank_words(tmp_path):
    path = write_jsonl(tmp_path / "train.json", [(["Peter", " "], ["B-PER", "O"])])
    with pytest.raises(UserError, match="line 1: word 1"):
        read(train_file=path)


# ---------------------------------------------------------------------------------------------------------
# Problems the user can fix: unreadable files, tags written as digits or with spaces, --dataset_name misuse


def refuse_to_open(monkeypatch, path):
    """Make `open` fail for `path` as for a file without read permission (root reads any file, so a chmod
    would not do in a test run as root)."""
    import builtins

    real_open = builtins.open

    def fake_open(file, *args, **kwargs):
        if str(file) == str(path):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", fake_open)


@pytest.mark.parametrize("name", ["train.json", "train.csv", "train.conll", "train.parquet"])
def test_an_unreadable_data_file_is_named_with_the_os_reason(tmp_path, monkeypatch, name):
    path = tmp_path / name
    if name.endswith(".parquet"):
        classlabel_dataset().to_parquet(str(path))
    elif name.endswith(".csv"):
        write_csv(path, ROWS)
    elif name.endswith(".conll"):
        path.write_text("EU\tB-ORG\n")
    else:
        write_jsonl(path, ROWS)
    refuse_to_open(monkeypatch, path)
    with pytest.raises(UserError, match=f"Cannot read the data file {path}: Permission denied") as error:
        read(train_file=str(path))
    assert "--train_file" in str(error.value)


def test_an_unreadable_label_list_file_is_named(tmp_path, monkeypatch):
    path = tmp_path / "labels.txt"
    path.write_text("O\nB-PER\n")
    refuse_to_open(monkeypatch, path)
    with pytest.raises(UserError, match=f"Cannot read the --label_list file {path}: Permission denied"):
        read(train_file=write_jsonl(tmp_path / "train.json", ROWS), label_list=str(path))


def conll_with_ids(path, rows):
    path.write_text("".join("".join(f"{word}\t{tag}\n" for word, tag in zip(words, tags)) + "\n"
                            for words, tags in rows))
    return str(path)


def test_digit_tags_of_a_conll_file_without_names_are_refused(tmp_path):
    """`John 1`: the tags are ids, not label names; without --label_list they would train labels '0', '1', ..."""
    path = conll_with_ids(tmp_path / "train.conll", [(t, [NAMES.index(x) for x in g]) for t, g in ROWS])
    with pytest.raises(UserError, match=r"train.conll, line 1: the tag '1' is a number") as error:
        read(train_file=path)
    assert "--label_list" in str(error.value)
    assert as_pairs(read(train_file=path, label_list=",".join(NAMES))[0]["train"]) == ROWS


def test_a_digit_tag_among_named_tags_is_refused_with_its_line(tmp_path):
    path = conll_with_ids(tmp_path / "train.conll", [(["EU", "rejects", "German"], ["B-ORG", "O", "7"])])
    with pytest.raises(UserError, match=r"train.conll, line 3: the tag '7' is a number"):
        read(train_file=path)


def test_digits_that_are_the_tag_names_themselves_are_listed_with_the_label_list(tmp_path):
    path = conll_with_ids(tmp_path / "train.conll", [(["a", "b", "c"], ["0", "1", "0"])])
    splits, declared = read(train_file=path, label_list="0,1")
    assert splits["train"].tags == [["0", "1", "0"]] and declared == ["0", "1"]


@pytest.mark.parametrize("name, content, options, place", [
    ("train.json", '{"tokens": ["John", "Smith"], "ner_tags": ["B-PER ", "I-PER"]}\n', {}, "line 1, word 0"),
    ("train.csv", 'tokens,ner_tags\n"[""John"", ""Smith""]","[""B-PER"", "" I-PER""]"\n', {}, "line 2, word 1"),
])
def test_a_tag_with_spaces_around_it_is_refused(tmp_path, name, content, options, place):
    """'B-PER ' would be a label of its own beside 'B-PER', and split in two in predictions.txt."""
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(UserError, match="has whitespace around it") as error:
        read(train_file=str(path), **options)
    assert f"{path}, {place}:" in str(error.value)


@pytest.mark.parametrize("name, content, place, said", [
    ("train.conll", "John\tB-PER\u200b\nSmith\tI-PER\n", "line 1", "U+200B (zero width space)"),
    ("train.json", '{"tokens": ["Dan"], "ner_tags": ["B-PER\\u200e"]}\n', "line 1, word 0",
     "U+200E (left-to-right mark)"),
    ("train.json", '{"tokens": ["Dan", "Ng"], "ner_tags": ["B-PER", "\\ud83d"]}\n', "line 1, word 1",
     "half of a character"),
])
def test_a_tag_with_an_invisible_character_is_refused(tmp_path, name, content, place, said):
    """A direction mark or zero-width space after B-PER made a label of its own that every report printed
    as B-PER; half a surrogate pair failed with a traceback when the first checkpoint was written."""
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(UserError, match="the tag") as error:
        read(train_file=str(path))
    assert f"{path}, {place}:" in str(error.value) and said in str(error.value)


@pytest.mark.parametrize("given, said", [("O,B-PER\u200e", "U+200E (left-to-right mark)"),
                                         ("O,B-P\udcffER", "a byte that is not UTF-8")])
def test_a_label_list_name_with_an_invisible_character_is_refused(given, said):
    from nerkit.data import read_label_names

    with pytest.raises(UserError, match="--label_list: name 2") as error:
        read_label_names(given)
    assert said in str(error.value)


def test_files_joined_with_their_byte_order_marks_read_as_the_files_do(tmp_path):
    """`cat a.conll b.conll` keeps b's byte-order mark at a line's start: -DOCSTART- and '#' comments after
    it are still what they are, not a sentence or a token line."""
    one = "\ufeff-DOCSTART-\tO\n\nJohn\tB-PER\nSmith\tI-PER\n\n"
    (tmp_path / "a.conll").write_text(one + one, encoding="utf-8")
    (tmp_path / "a.conllu").write_text(("\ufeff# sent_id = 1\n1\tJohn\tJohn\tPROPN\t_\t_\t0\troot\t_\t_\n\n") * 2,
                                       encoding="utf-8")
    for name in ("a.conll", "a.conllu"):
        split = read(train_file=str(tmp_path / name))[0]["train"]
        assert split.tokens == [["John", "Smith"]] * 2 if name == "a.conll" else [["John"]] * 2, name


def test_spaces_beside_a_tab_pad_the_columns(tmp_path):
    """'John \tB-PER' kept 'John ' as the word: no leakage found against 'John', entities read 'Smith  lives '."""
    path = tmp_path / "train.conll"
    path.write_text("John \tB-PER\nSmith\t I-PER\nlives  \tO\n", encoding="utf-8")
    assert as_pairs(read(train_file=str(path))[0]["train"]) == [(["John", "Smith", "lives"], ["B-PER", "I-PER", "O"])]


def test_a_data_file_name_that_is_not_utf8_is_refused_before_anything_is_written(tmp_path):
    """Its name reached the results and reports, whose UTF-8 cannot hold it: a traceback after training."""
    import os

    path = os.path.join(os.fsencode(tmp_path), b"caf\xe9.conll")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("John\tB-PER\n")
    with pytest.raises(UserError, match="is not UTF-8") as error:
        read(train_file=os.fsdecode(path))
    assert f"The data file name {path!r} is not UTF-8" in str(error.value)


def test_a_dataset_downloaded_only_into_the_hub_cache_is_read_offline(tmp_path, monkeypatch):
    """`hf download --repo-type dataset` leaves the files in the hub cache, which datasets does not read
    offline: it said the dataset was not in the local cache."""
    from huggingface_hub import constants

    repo = tmp_path / "hub" / "datasets--nerkit-tests--downloaded"
    snapshot = repo / "snapshots" / ("9" * 40) / "data"
    snapshot.mkdir(parents=True)
    names = ["O", "B-PER", "I-PER"]
    features = Features({"tokens": List(Value("string")), "ner_tags": List(ClassLabel(names=names))})
    Dataset.from_dict({"tokens": [["John", "Smith"]], "ner_tags": [[1, 2]]}, features=features).to_parquet(
        str(snapshot / "train-00000-of-00001.parquet"))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("9" * 40)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    splits, declared = read(dataset_name="nerkit-tests/downloaded")
    assert as_pairs(splits["train"]) == [(["John", "Smith"], ["B-PER", "I-PER"])] and declared == names
    with pytest.raises(UserError, match="it could only come from the local cache, where it was not found"):
        read(dataset_name="nerkit-tests/not-downloaded")


def test_a_dataset_name_that_is_a_file_points_to_the_file_flags(tmp_path):
    path = write_jsonl(tmp_path / "good.json", ROWS)
    with pytest.raises(UserError, match="takes a dataset name or a folder") as error:
        read(dataset_name=path)
    assert "is a file" in str(error.value) and "--train_file" in str(error.value)


def test_a_dataset_name_spelled_as_a_missing_folder_is_not_looked_up_on_the_hub(tmp_path):
    with pytest.raises(UserError, match="the folder ./nope_ds does not exist"):
        read(dataset_name="./nope_ds")


@pytest.mark.parametrize("offline, reason", [("1", "offline mode is set \\(HF_HUB_OFFLINE=1\\)"),
                                             (None, "the Hugging Face Hub could not be reached")])
def test_a_dataset_name_not_in_the_cache_offline_says_why_and_names_the_file_flags(monkeypatch, offline, reason):
    """Offline mode comes from the user's environment, or from nerkit.hub when the hub does not answer (the
    tests' process is offline either way: datasets read the setting when it was imported)."""
    import datasets
    from huggingface_hub import constants

    for variable in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(variable, raising=False)
    if offline:
        monkeypatch.setenv("HF_HUB_OFFLINE", offline)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(UserError, match=reason) as error:
        read(dataset_name="nerkit-tests/no-such-dataset")
    message = str(error.value)
    assert "'nerkit-tests/no-such-dataset'" in message and "local cache" in message
    assert "--train_file" in message and "OfflineModeIsEnabled" not in message


def test_a_broken_parquet_file_gets_one_message_and_no_library_log_line(tmp_path, capfd, caplog):
    path = tmp_path / "bad.parquet"
    path.write_bytes(b"not a parquet file\n")
    with pytest.raises(UserError, match="not a readable Parquet file"):
        read(train_file=str(path))
    assert "Failed to read schema" not in capfd.readouterr().err
    assert not [record for record in caplog.records if "Failed to read schema" in record.getMessage()]


def test_a_run_reads_only_the_splits_it_uses(tmp_path):
    from types import SimpleNamespace

    from nerkit.workflow import read_data

    train, broken = write_jsonl(tmp_path / "train.json", ROWS), tmp_path / "validation.json"
    broken.write_text('{"tokens": ["EU"], "ner_tags": ["B-ORG", "O"]}\n')  # two tags for one word
    data_args = DataTrainingArguments(train_file=train, validation_file=str(broken))
    model_args = SimpleNamespace(cache_dir=None, token=None)
    splits, _ = read_data(data_args, model_args, {"train": "--do_train"}, only_needed=True)  # run_ner.py --do_train
    assert set(splits) == {"train"}
    with pytest.raises(UserError, match="1 words but 2 tags"):  # the loop evaluates any validation split it gets
        read_data(data_args, model_args, {"train": "training"})


def test_the_tag_column_is_never_the_words_and_a_named_task_reads_its_own():
    from nerkit.data import Columns, find_columns

    # upstream takes the second column; after an 'id' column that is the words
    assert find_columns(["id", "tokens", "tags"], Columns(), "d") == ("tokens", "tags")
    assert find_columns(["tokens", "labels", "id"], Columns(), "d") == ("tokens", "labels")
    assert find_columns(["words", "iob"], Columns(), "d") == ("words", "iob")
    with pytest.raises(UserError, match="--label_column_name tokens names the column of words too"):
        find_columns(["tokens", "ner_tags"], Columns(label="tokens"), "d")
    with pytest.raises(UserError, match="--task_name pos reads the column 'pos_tags', which is not there "
                                        r"\(columns: id, tokens, ner_tags\)"):
        find_columns(["id", "tokens", "ner_tags"], Columns(task_name="pos"), "d")


def test_a_column_file_reads_its_tags_whatever_the_task_name(tmp_path):
    path = tmp_path / "train.conll"
    path.write_text("EU NNP\nrejects VBZ\n", encoding="utf-8")
    assert read(train_file=str(path), task_name="pos")[0]["train"].tags == [["NNP", "VBZ"]]


def test_a_one_example_file_with_a_list_of_objects_beside_its_words_is_read():
    from nerkit.data import check_one_object

    check_one_object("train.json", {"tokens": ["EU"], "ner_tags": ["B-ORG"], "spans": [{"start": 0, "end": 2}]})


def test_a_label_list_file_with_a_blank_line_between_names_or_in_json_is_refused(tmp_path):
    from nerkit.data import read_label_names

    path = tmp_path / "labels.txt"
    path.write_text("O\nB-PER\nI-PER\n\n", encoding="utf-8")
    assert read_label_names(str(path)) == ["O", "B-PER", "I-PER"]
    path.write_text("O\nB-PER\n\nI-PER\n", encoding="utf-8")
    with pytest.raises(UserError, match="labels.txt, line 3: a blank line between label names"):
        read_label_names(str(path))
    path.write_text('{"names": ["O", "B-PER"]}\n', encoding="utf-8")
    with pytest.raises(UserError, match="labels.txt is JSON"):
        read_label_names(str(path))


def test_a_file_listing_its_tags_first_is_refused_naming_both_columns(tmp_path):
    path = tmp_path / "train.json"
    path.write_text('{"labels": ["B-ORG", "O"], "words": ["EU", "rejects"]}\n', encoding="utf-8")
    with pytest.raises(UserError, match="--text_column_name words --label_column_name labels"):
        read(train_file=str(path))
    assert read(train_file=str(path), text_column_name="words", label_column_name="labels")[0]["train"].tags == [
        ["B-ORG", "O"]]

"""Reading token-classification data into plain lists: one `Split` per train/validation/test.

Local files are read by our own small readers so that every problem can be reported with its file and
line; `--dataset_name` goes through `datasets` (a hub id, a local folder in hub layout, or a folder saved
with `save_to_disk`). Whatever the source, a split ends up as lists of words and lists of string tags.
"""

import ast
import csv
import json
import logging
import os
from dataclasses import dataclass

from .errors import UserError

logger = logging.getLogger(__name__)

CONLL_EXTENSIONS = {".conll", ".iob", ".bio", ".txt", ".tsv", ".conllu"}
JSON_EXTENSIONS = {".json", ".jsonl"}
SPLIT_ALIASES = {"train": ("train",), "validation": ("validation", "valid", "dev"), "test": ("test",)}


@dataclass
class Split:
    """One split as plain lists. `tags` is None for unlabelled data (a test file of tokens only)."""

    name: str
    source: str
    tokens: list
    tags: list | None
    locations: list

    def where(self, index):
        """Where example `index` is, for messages: 'data/train.json, line 7'."""
        return f"{self.source}, {self.locations[index]}"

    def select(self, count):
        """The first `count` examples (the upstream `max_*_samples` behaviour)."""
        if count is None or count >= len(self.tokens):
            return self
        tags = None if self.tags is None else self.tags[:count]
        return Split(self.name, self.source, self.tokens[:count], tags, self.locations[:count])


@dataclass
class Columns:
    """Which columns hold the words and the tags, as the user named them or as upstream finds them."""

    text: str | None = None
    label: str | None = None
    task_name: str = "ner"


def load_splits(data_args, cache_dir=None, token=None, wanted=("train", "validation", "test")):
    """Read the requested splits. Returns ({split name: Split}, declared label names or None): the names
    of a `ClassLabel` tag column, else those of --label_list."""
    columns = Columns(data_args.text_column_name, data_args.label_column_name, data_args.task_name or "ner")
    label_names = read_label_names(data_args.label_list)
    if data_args.dataset_name is not None:
        records = read_dataset(data_args.dataset_name, data_args.dataset_config_name, cache_dir, token, wanted)
    else:
        files = {"train": data_args.train_file, "validation": data_args.validation_file, "test": data_args.test_file}
        records = {name: read_file(path) for name, path in files.items() if path and name in wanted}
    splits, declared = {}, None
    for name, (source, rows, locations, column_names, features) in records.items():
        split, names = build_split(name, source, rows, locations, column_names, features, columns, label_names)
        splits[name] = split
        declared = declared or names
    return splits, declared or label_names


# ---------------------------------------------------------------------------------------------------------
# Local files


def read_file(path):
    """Read one local file by its extension. Returns (source, rows, locations, column names, features)."""
    if not os.path.isfile(path):
        raise UserError(f"The data file {path} does not exist. Check the path given to --train_file, "
                        "--validation_file or --test_file.")
    extension = os.path.splitext(path)[1].lower()
    text = read_text(path)
    if not text.strip():
        raise UserError(f"The data file {path} is empty. Give a file with at least one example.")
    if extension in JSON_EXTENSIONS:
        rows, locations = parse_json_records(path, text)
    elif extension == ".csv":
        rows, locations = parse_csv_records(path, text)
    elif extension in CONLL_EXTENSIONS:
        rows, locations = parse_conll(path, text)
    else:
        known = ", ".join(sorted(JSON_EXTENSIONS | CONLL_EXTENSIONS | {".csv"}))
        raise UserError(f"Cannot tell the format of {path} from its extension '{extension}'. "
                        f"Use one of: {known}.")
    column_names = list(rows[0].keys()) if rows else []
    return path, rows, locations, column_names, None


def read_text(path):
    """The file's text as UTF-8 (a byte-order mark is dropped, Windows line ends become '\\n')."""
    with open(path, "rb") as handle:
        raw = handle.read()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise UserError(f"{path}, line {line}: the file is not valid UTF-8 (byte {error.start}). "
                        "Convert it to UTF-8, for example with `iconv -f latin1 -t utf-8`.") from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def parse_json_records(path, text):
    """JSON Lines (one object per line) or a single JSON array of objects."""
    if text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as error:
            raise UserError(f"{path}, line {error.lineno}: not valid JSON ({error.msg}). The file starts with '[' "
                            "so it is read as one JSON array of examples.") from None
        locations = [f"record {i + 1}" for i in range(len(records))]
    else:
        records, locations = [], []
        for number, line in enumerate(text.split("\n"), start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise UserError(f"{path}, line {number}: not valid JSON ({error.msg}). A .json/.jsonl file must "
                                "hold one JSON object per line (JSON Lines) or a single JSON array.") from None
            locations.append(f"line {number}")
    for record, location in zip(records, locations):
        if not isinstance(record, dict):
            raise UserError(f"{path}, {location}: expected a JSON object such as "
                            '{"tokens": [...], "ner_tags": [...]}, got ' + type(record).__name__ + ".")
    return records, locations


def parse_csv_records(path, text):
    """CSV with a header; list cells are JSON or Python lists (parsed later, per column)."""
    reader = csv.DictReader(text.split("\n"))
    if not reader.fieldnames:
        raise UserError(f"{path}: the CSV file has no header line naming its columns.")
    records, locations = [], []
    for record in reader:
        if None in record:
            raise UserError(f"{path}, line {reader.line_num}: this row has more cells than the header has "
                            "columns. Quote cells that contain commas.")
        if all(value in ("", None) for value in record.values()):
            continue
        records.append(record)
        locations.append(f"line {reader.line_num}")
    return records, locations


def parse_conll(path, text):
    """CoNLL/IOB column files: token first, tag last, blank line between sentences, -DOCSTART- skipped."""
    records, locations = [], []
    tokens, tags, start, width = [], [], None, None
    lines = text.split("\n") + [""]
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            if tokens:
                records.append({"tokens": tokens, "tags": tags} if width > 1 else {"tokens": tokens})
                locations.append(f"line {start}")
            tokens, tags, start = [], [], None
            continue
        cells = line.rstrip().split("\t") if "\t" in line else line.split()
        if cells[0] == "-DOCSTART-":
            continue
        width = width or len(cells)
        if (len(cells) > 1) != (width > 1):
            raise UserError(f"{path}, line {number}: expected {width} column(s) like the lines before, got "
                            f"{len(cells)}. Every token line needs the token and, in a labelled file, its tag.")
        tokens.append(cells[0])
        tags.append(cells[-1])
        start = start or number
    if not records:
        raise UserError(f"{path}: no sentences found. A CoNLL file has one token per line, the tag in the last "
                        "column, and a blank line between sentences.")
    return records, locations


# ---------------------------------------------------------------------------------------------------------
# Datasets through the `datasets` library


def read_dataset(name, config_name, cache_dir, token, wanted):
    """A hub dataset, a local folder in hub layout, or a folder written by `save_to_disk`."""
    import datasets

    try:
        if os.path.isdir(name) and is_saved_dataset(name):
            loaded = datasets.load_from_disk(name)
        else:
            loaded = datasets.load_dataset(name, config_name, cache_dir=cache_dir, token=token)
    except Exception as error:  # datasets raises many types; the user needs the name and the reason
        raise UserError(f"Could not load the dataset '{name}'"
                        + (f" (config '{config_name}')" if config_name else "")
                        + f": {type(error).__name__}: {error}. Check the name, or give a local folder; when "
                        "offline, only local folders and already cached datasets can be read.") from None
    if isinstance(loaded, datasets.Dataset):
        loaded = datasets.DatasetDict({"train": loaded})
    records = {}
    for split in wanted:
        key = next((alias for alias in SPLIT_ALIASES[split] if alias in loaded), None)
        if key is None:
            continue
        dataset = loaded[key]
        locations = [f"example {i}" for i in range(len(dataset))]
        source = f"dataset {name}, split {key}"
        records[split] = (source, dataset, locations, dataset.column_names, dataset.features)
    return records


def is_saved_dataset(folder):
    return os.path.isfile(os.path.join(folder, "dataset_dict.json")) or os.path.isfile(
        os.path.join(folder, "state.json")
    )


# ---------------------------------------------------------------------------------------------------------
# From rows to a Split


def build_split(name, source, rows, locations, column_names, features, columns, label_names):
    """Find the columns, convert tags to strings, check every example. Returns (Split, declared names)."""
    text_column, label_column = find_columns(column_names, columns, source)
    declared = class_label_names(features, label_column) if label_column else None
    names = declared or label_names
    tokens_column = column_values(rows, text_column)
    tags_column = column_values(rows, label_column) if label_column else None
    if name == "test" and tags_column is not None and columns.label is None and not looks_like_tags(tags_column):
        tags_column = None  # the second column of an unlabelled test file is not a tag column
    tokens_list, tags_list = [], None if tags_column is None else []
    for index, raw_tokens in enumerate(tokens_column):
        where = f"{source}, {locations[index]}"
        words = as_list(raw_tokens, text_column, where)
        check_words(words, text_column, where)
        tokens_list.append([str(word) for word in words])
        if tags_list is not None:
            tags = as_list(tags_column[index], label_column, where)
            tags_list.append(tags_as_strings(tags, words, names, label_column, where))
    if not tokens_list:
        raise UserError(f"{source}: the {name} split has no examples.")
    return Split(name, source, tokens_list, tags_list, list(locations)), declared


def find_columns(column_names, columns, source):
    """Upstream rule: text = named, else 'tokens', else the first column; label = named, else
    '{task}_tags', else the second column. Returns (text column, label column or None)."""
    text = columns.text or ("tokens" if "tokens" in column_names else (column_names[0] if column_names else None))
    if text not in column_names:
        raise UserError(f"{source}: there is no column '{text}' (columns: {', '.join(column_names)}). "
                        "Name the column of words with --text_column_name.")
    if columns.label is not None:
        if columns.label not in column_names:
            raise UserError(f"{source}: there is no column '{columns.label}' (columns: {', '.join(column_names)}). "
                            "Name the column of tags with --label_column_name.")
        return text, columns.label
    if f"{columns.task_name}_tags" in column_names:
        return text, f"{columns.task_name}_tags"
    others = [name for name in column_names if name != text]
    if len(column_names) > 1 and column_names[1] != text:
        return text, column_names[1]
    return text, (others[0] if others else None)


def class_label_names(features, label_column):
    """The names of a `ClassLabel` tag column (List(ClassLabel) or Sequence(ClassLabel)), else None."""
    if features is None or label_column not in features:
        return None
    feature = getattr(features[label_column], "feature", None)
    names = getattr(feature, "names", None)
    return list(names) if names else None


def column_values(rows, column):
    """All values of one column: `rows` is a list of dicts or a `datasets.Dataset`."""
    if isinstance(rows, list):
        return [row.get(column) for row in rows]
    return rows[column]


def looks_like_tags(values):
    """Whether a column holds per-word lists (or list-like strings from a CSV)."""
    sample = values[0]
    return isinstance(sample, list) or (isinstance(sample, str) and sample.lstrip().startswith("["))


def as_list(value, column, where):
    """A cell as a Python list: lists stay, CSV cells are parsed as JSON, then as a Python literal."""
    if isinstance(value, list):
        return value
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, str) and value.lstrip().startswith("["):
        for parse in (json.loads, ast.literal_eval):
            try:
                parsed = parse(value)
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                continue
            if isinstance(parsed, (list, tuple)):
                return list(parsed)
        raise UserError(f"{where}: the '{column}' cell is not a valid list: {value[:80]!r}. Write it as a JSON "
                        "list (\"[\"\"EU\"\", \"\"rejects\"\"]\" in CSV) or a Python list.")
    raise UserError(f"{where}: the '{column}' column must hold a list per example, got "
                    f"{type(value).__name__} {str(value)[:80]!r}. Name the right column with --text_column_name "
                    "or --label_column_name.")


def check_words(words, column, where):
    if not words:
        raise UserError(f"{where}: the example has no words in '{column}'. Remove empty examples.")
    for position, word in enumerate(words):
        if not isinstance(word, str) or not word.strip():
            raise UserError(f"{where}: word {position} in '{column}' is {word!r}; every word must be a non-empty "
                            "string. Remove it or replace it with a placeholder.")


def tags_as_strings(tags, words, names, column, where):
    """Check one tag list against its words and return the tags as strings."""
    if len(tags) != len(words):
        raise UserError(f"{where}: {len(words)} words but {len(tags)} tags in '{column}'. Every word needs "
                        "exactly one tag.")
    strings = []
    for position, tag in enumerate(tags):
        if isinstance(tag, bool) or not isinstance(tag, (str, int)):
            raise UserError(f"{where}: tag {position} is {tag!r}; tags must be strings or integer ids.")
        if isinstance(tag, str):
            strings.append(tag)
        elif names is None:
            raise UserError(f"{where}: the tags are integer ids but the data does not say what they mean. Give "
                            "their names in id order with --label_list (O,B-PER,I-PER,... or a file with one "
                            "name per line), or write the tags as strings.")
        elif not 0 <= tag < len(names):
            raise UserError(f"{where}: tag id {tag} is out of range: there are {len(names)} label names "
                            f"(ids 0 to {len(names) - 1}).")
        else:
            strings.append(names[tag])
    return strings


def read_label_names(value):
    """--label_list: a comma-separated list, or a file with one name per line."""
    if not value:
        return None
    if os.path.isfile(value):
        names = [line.strip() for line in read_text(value).split("\n") if line.strip()]
    else:
        names = [name.strip() for name in value.split(",") if name.strip()]
    if len(set(names)) != len(names):
        raise UserError(f"--label_list lists a name twice: {names}.")
    return names

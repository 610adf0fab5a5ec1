"""Reading token-classification data into plain lists: one `Split` per train/validation/test.

Local files are read by our own small readers so that every problem can be reported with its file and
line; `--dataset_name` goes through `datasets` (a hub id, a local folder in hub layout, or a folder saved
with `save_to_disk`), except a folder of CoNLL files, which the readers of local files read. Whatever the
source, a split ends up as lists of words and lists of string tags.
"""

import ast
import csv
import io
import itertools
import json
import logging
import os
import re
import shlex
import tokenize
import unicodedata
from contextlib import contextmanager
from dataclasses import dataclass

from .errors import UserError
from .hub import LOCAL_SPELLINGS
from .labels import one_word
from .schemes import split_label

logger = logging.getLogger(__name__)

CONLL_EXTENSIONS = {".conll", ".iob", ".bio", ".txt", ".tsv"}
JSON_EXTENSIONS = {".json", ".jsonl"}
FORMATS = ("auto", "conll", "conllu", "json", "csv", "parquet")
# CoNLL-U word lines have these ten tab-separated fields; words are FORM, tags UPOS unless told otherwise.
CONLLU_FIELDS = ("id", "form", "lemma", "upos", "xpos", "feats", "head", "deprel", "deps", "misc")
CSV_COLUMN_NAME = re.compile(r"^[A-Za-z_][\w .-]*$")  # a header cell; `1` and `000` of `1,000` are not
SHOWN_PLACES = 3  # places named in a warning about repaired examples
# the names a dataset's splits go by (any case), in the order they are looked for
SPLIT_ALIASES = {"train": ("train", "training"), "validation": ("validation", "valid", "dev", "val", "eval"),
                 "test": ("test", "testing")}
DATA_FILE_FLAGS = "--train_file, --validation_file or --test_file"
TRUE_VALUES = ("1", "ON", "YES", "TRUE")  # what huggingface_hub and datasets read as set in an environment variable


@dataclass
class Split:
    """One split as plain lists. `tags` is None for unlabelled data (a test file of tokens only)."""

    name: str
    source: str
    tokens: list
    tags: list | None
    locations: list
    line_per_word: bool = False  # CoNLL files: word i of an example is on its first line + i
    # Every tag of the split as read, kept by `select`: the label list covers the whole split, as upstream's
    # covers the whole train split, also when --max_*_samples keeps fewer examples.
    tag_set: frozenset | None = None

    def __post_init__(self):
        if self.tag_set is None and self.tags is not None:
            self.tag_set = frozenset(tag for tags in self.tags for tag in tags)

    def where(self, index):
        """Where example `index` is, for messages: 'data/train.json, line 7'."""
        return f"{self.source}, {self.locations[index]}"

    def where_word(self, index, word):
        """Where word `word` of example `index` is: 'train.conll, line 12' or 'train.json, line 3, word 4'."""
        return word_place(self.where(index), word, self.line_per_word)

    def select(self, count):
        """The first `count` examples (the upstream `max_*_samples` behaviour)."""
        if count is None or count >= len(self.tokens):
            return self
        tags = None if self.tags is None else self.tags[:count]
        return Split(self.name, self.source, self.tokens[:count], tags, self.locations[:count], self.line_per_word,
                     self.tag_set)


def word_place(where, word, line_per_word=False):
    """Where word `word` of the example at `where` ('train.conll, line 10') is: in a CoNLL file its own line
    (word i of an example is on the example's first line + i), elsewhere the example's place and the word."""
    if line_per_word:
        source, line = where.rsplit(", line ", 1)
        return f"{source}, line {int(line) + word}"
    return f"{where}, word {word}"


@dataclass
class Records:
    """What a reader found, before columns are chosen: rows (dicts, or a `datasets.Dataset`), where each
    row is, the column names in order, and the `datasets` features when the source declares them."""

    source: str
    rows: object
    locations: list
    column_names: list
    features: object = None
    line_per_word: bool = False  # CoNLL: word i of an example is on line start + i
    columns_chosen: bool = False  # CoNLL and CoNLL-U: the reader already picked the words and the tags
    editable: bool = True  # a local file the user can fix; a --dataset_name is repaired where it can be


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
        records = read_dataset(data_args.dataset_name, data_args.dataset_config_name, cache_dir, token, wanted,
                               columns)
    else:
        files = {"train": data_args.train_file, "validation": data_args.validation_file, "test": data_args.test_file}
        records = {name: read_file(path, data_args.file_format, columns)
                   for name, path in files.items() if path and name in wanted}
    splits, declared = {}, None
    for name, found in records.items():
        split_columns = Columns() if found.columns_chosen else columns  # a column file's own: tokens, tags
        split, names = build_split(name, found, split_columns, label_names)
        if names and label_names and names != label_names:
            raise UserError(f"--label_list names {', '.join(label_names)}, but {split.source} has ClassLabel tags "
                            f"named {', '.join(names)}, which say what its label ids mean. Drop --label_list.")
        splits[name] = split
        # splits whose ClassLabels name other labels: the first split's names, then the others' new ones
        declared = names if declared is None else declared + [n for n in names or () if n not in declared]
    return splits, declared or label_names


# ---------------------------------------------------------------------------------------------------------
# Local files


def file_format_of(path, forced="auto"):
    """The reader for `path`: --file_format when given, else the extension's."""
    if forced and forced != "auto":
        return forced
    extension = os.path.splitext(path)[1].lower()
    if extension in JSON_EXTENSIONS:
        return "json"
    if extension in (".csv", ".parquet", ".conllu"):
        return extension[1:]
    if extension in CONLL_EXTENSIONS:
        return "conll"
    known = ", ".join(sorted(JSON_EXTENSIONS | CONLL_EXTENSIONS | {".csv", ".parquet", ".conllu"}))
    raise UserError(f"Cannot tell the format of {path} from its extension '{extension}'. Use one of: {known}, "
                    "or name the format with --file_format conll|conllu|json|csv|parquet.")


def read_file(path, forced_format="auto", columns=None):
    """Read one local file into `Records`."""
    if os.path.isdir(path):
        raise UserError(f"The data file {path} is a folder, not a file. Give the file itself to --train_file, "
                        "--validation_file or --test_file (a saved dataset folder goes to --dataset_name).")
    if not os.path.isfile(path):
        raise UserError(f"The data file {path} does not exist. Check the path given to --train_file, "
                        "--validation_file or --test_file.")
    if half_character(path) is not None:  # a byte the file system holds that UTF-8 cannot (os.fsdecode)
        raise UserError(f"The data file name {os.fsencode(path)!r} is not UTF-8, and the results, reports and model "
                        "card name their data files in UTF-8. Rename the file, or give a link to it with a UTF-8 "
                        "name.")
    kind = file_format_of(path, forced_format)
    if kind == "parquet":
        return read_parquet(path)
    text = read_text(path)
    if not text.strip():
        raise UserError(f"The data file {path} is empty. Give a file with at least one example.")
    if forced_format in (None, "auto"):  # an explicit --file_format is what the user says the file is
        check_content_matches(path, text, kind)
    columns = columns or Columns()
    if kind in ("conll", "conllu"):
        if kind == "conll":
            rows, locations = parse_conll(path, text, conll_index(columns.text, 0, "--text_column_name"),
                                          conll_index(columns.label, -1, "--label_column_name"))
        else:
            rows, locations = parse_conllu(path, text, conllu_field(columns.text, "form"),
                                           conllu_field(columns.label, "upos"))
        return Records(path, rows, locations, list(rows[0]), line_per_word=kind == "conll", columns_chosen=True)
    rows, locations = parse_json_records(path, text) if kind == "json" else parse_csv_records(path, text)
    if not rows:
        raise UserError(f"The data file {path} holds no examples.")
    # the columns of every row, not the first's only: a first example without tags must not hide them
    return Records(path, rows, locations, list(dict.fromkeys(key for row in rows for key in row)))


def check_content_matches(path, text, kind):
    """Catch a file whose content is not the format its extension says, before it is misread. Only the
    unmistakable is caught: a CoNLL token such as `[`, `{` or `1,000` is no sign of JSON or CSV."""
    lines = [line.strip() for line in text.split("\n") if line.strip()][:2]
    if kind in ("conll", "conllu", "csv") and looks_like_json(lines):
        raise UserError(f"{path}, line 1: the file looks like JSON but is read as {kind.upper()} because of its "
                        "extension. Rename it to .json/.jsonl or pass --file_format json.")
    if kind in ("conll", "conllu") and looks_like_csv(lines):
        raise UserError(f"{path}, line 1: the file looks like CSV (a header of column names, then list cells) but is "
                        "read as a CoNLL column file because of its extension. Rename it to .csv or pass --file_format "
                        "csv (tab-separated tables are read too); if it is a CoNLL file, pass --file_format conll.")


def looks_like_json(lines):
    """A first line that is a JSON object or array, opens one with an object or string inside (`{"`,
    `[{`, `["`), or is a lone `[`/`{` followed by a line that continues it."""
    first = lines[0]
    if first.startswith(('{"', "[{", '["')):
        return True
    if first in ("[", "{"):
        return len(lines) > 1 and lines[1].startswith(("{", '"'))
    if first.startswith(("{", "[")):
        try:
            return isinstance(json.loads(first), (dict, list))
        except json.JSONDecodeError:
            return False
    return False


def looks_like_csv(lines):
    """A header of two or more column names separated by commas (or by tabs: `csv_delimiter`), then a row of
    as many cells, one of them a list of words or tags. A CoNLL file's first line can pass for such a
    header (`John B-PER`), but its next line's bracketed tokens (`[`, `[NAME]`, a citation `[1]`) are no
    such list."""
    if len(lines) < 2:
        return False
    delimiter = csv_delimiter(lines[0])
    names = next(csv.reader([lines[0]], delimiter=delimiter))
    if len(names) < 2 or not all(CSV_COLUMN_NAME.match(name.strip()) for name in names):
        return False
    cells = next(csv.reader([lines[1]], delimiter=delimiter))
    return len(cells) == len(names) and any(is_list_cell(cell) for cell in cells)


def is_list_cell(cell):
    """A CSV cell holding a list of words or tags: a string among its items, or several items."""
    items = python_list(cell) if cell.strip().startswith("[") else None
    return items is not None and (len(items) > 1 or any(isinstance(item, str) for item in items))


def csv_delimiter(header):
    """Commas, or tabs for a header with tabs and no comma (a table saved with sep="\\t")."""
    return "\t" if "\t" in header and "," not in header else ","


def read_parquet(path):
    """A Parquet file; `ClassLabel` features written by `datasets` come along with it."""
    import datasets

    read_bytes(path, size=0)  # the OS's refusal (permission denied) gets its own message, not "not Parquet"
    try:
        # datasets logs the schema error of a broken file before raising it: the user would read it twice
        with logger_silenced("datasets.packaged_modules.parquet.parquet"):
            dataset = datasets.Dataset.from_parquet(path)
    except Exception as error:  # pyarrow raises several types for a broken file
        raise UserError(f"{path}: not a readable Parquet file ({type(error).__name__}: {error}).") from None
    if len(dataset) == 0:
        raise UserError(f"The data file {path} is empty. Give a file with at least one example.")
    locations = [f"row {i + 1}" for i in range(len(dataset))]
    return Records(path, dataset, locations, dataset.column_names, dataset.features)


def conll_index(name, default, flag):
    """CoNLL columns are named by position: 0 is the first, -1 the last."""
    if name is None:
        return default
    try:
        return int(name)
    except ValueError:
        raise UserError(f"{flag} {name}: the columns of a CoNLL file have no names; give the column's index "
                        "(0 for the first, -1 for the last).") from None


@contextmanager
def logger_silenced(name):
    """Hold back what the logger `name` says for a moment (restoring its level after)."""
    library_logger = logging.getLogger(name)
    level = library_logger.level
    library_logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        library_logger.setLevel(level)


def read_bytes(path, what="data file", flag=DATA_FILE_FLAGS, size=-1):
    """The first `size` bytes of `path` (all by default). The OS's refusal to open or read it (permission
    denied, an I/O error) is the user's to fix, so it is a `UserError` naming the file and the reason."""
    try:
        with open(path, "rb") as handle:
            return handle.read(size)
    except OSError as error:
        reason = error.strerror or str(error)
        fix = ("Give this user read permission (e.g. `chmod a+r` on it) or copy the file somewhere readable"
               if isinstance(error, PermissionError) else "Check the file and the disk it is on")
        raise UserError(f"Cannot read the {what} {path}: {reason}. {fix}, or give {flag} another file.") from None


def read_text(path, what="data file", flag=DATA_FILE_FLAGS):
    """The file's text as UTF-8 (a byte-order mark is dropped, Windows line ends become '\\n')."""
    return unix_line_ends(decode_utf8(read_bytes(path, what, flag), path))


def decode_utf8(raw, name):
    """`raw` bytes as UTF-8 text, a byte-order mark dropped; else a UserError naming `name` (a path, or
    'standard input'), the line, the byte and the conversion, UTF-16 (Windows' 'Unicode') named as such."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        if raw.startswith((b"\xff\xfe", b"\xfe\xff")) or raw[:200].count(b"\x00") * 4 > len(raw[:200]):
            raise UserError(f"{name}: the file is UTF-16 text (as Windows tools save 'Unicode'), not UTF-8. Convert "
                            "it, for example with `iconv -f utf-16 -t utf-8`.") from None
        line = raw[: error.start].count(b"\n") + 1
        raise UserError(f"{name}, line {line}: the file is not valid UTF-8 (the byte at offset {error.start}, "
                        f"0x{raw[error.start]:02x}). Convert it to UTF-8 from its encoding, for example with "
                        "`iconv -f latin1 -t utf-8` for Latin-1.") from None


def unix_line_ends(text):
    """Windows ("\r\n") and old Mac ("\r") line ends as "\n"."""
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
                check_one_object(path, whole_json(text))  # a pretty-printed object is not JSON Lines
                raise UserError(f"{path}, line {number}: not valid JSON ({error.msg}). A .json/.jsonl file must "
                                "hold one JSON object per line (JSON Lines) or a single JSON array.") from None
            locations.append(f"line {number}")
    if len(records) == 1:
        check_one_object(path, records[0])
    for record, location in zip(records, locations):
        if not isinstance(record, dict):
            raise UserError(f"{path}, {location}: expected a JSON object such as "
                            '{"tokens": [...], "ner_tags": [...]}, got ' + type(record).__name__ + ".")
    return records, locations


def whole_json(text):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


def check_one_object(path, record):
    """A file that is one JSON object holding every example is refused with what it is: the examples under
    a key ({"data": [{...}, ...]}), or column-wise ({"tokens": [[...], ...], "ner_tags": [[...], ...]})."""
    if not isinstance(record, dict) or any(isinstance(value, list) and value and all(
            isinstance(item, str) for item in value) for value in record.values()):  # an example with its words
        return
    for key, value in record.items():
        if isinstance(value, list) and len(value) > 0 and all(isinstance(item, dict) for item in value):
            raise UserError(f"{path}: the file is one JSON object with the examples in a list under '{key}'. Write "
                            "them one object per line (JSON Lines) or as a JSON array of objects, for example with "
                            f"`jq -c '.{key}[]' {shlex.quote(path)}`.")
    if record and all(isinstance(value, list) and value and all(isinstance(item, list) for item in value)
                      for value in record.values() if isinstance(value, list)) and \
            any(isinstance(value, list) for value in record.values()):
        raise UserError(f"{path}: the file is one JSON object whose columns ({', '.join(record)}) hold a list per "
                        "example. Write one object per example instead (JSON Lines, {\"tokens\": [...], "
                        "\"ner_tags\": [...]} on each line), for example with `datasets.Dataset.from_dict(...)"
                        ".to_json(path)`.")


def parse_csv_records(path, text):
    """CSV with a header, comma- or tab-separated (`csv_delimiter`); list cells are JSON or Python lists
    (parsed later, per column)."""
    lines = text.split("\n")
    delimiter = csv_delimiter(lines[0])
    reader = csv.DictReader(lines, delimiter=delimiter)
    if not reader.fieldnames:
        raise UserError(f"{path}: the CSV file has no header line naming its columns.")
    records, locations = [], []
    for record in reader:
        if None in record:
            raise UserError(f"{path}, line {reader.line_num}: this row has more cells than the header has "
                            f"columns. Quote cells that contain {'tabs' if delimiter == chr(9) else 'commas'}.")
        if all(value in ("", None) for value in record.values()):
            continue
        records.append(record)
        locations.append(f"line {reader.line_num}")
    return records, locations


# What separates a CoNLL line's columns and pads it: ASCII spaces, tabs and line ends only. A word may be any
# other character, a no-break or ideographic space included, which is then checked as every word is (a word
# of whitespace alone is refused with its line) instead of reading as a sentence break or a column break.
LINE_SPACE = " \t\r\f\v"
BYTE_ORDER_MARK = "\ufeff"


def parse_conll(path, text, text_index=0, label_index=-1, empty_ok=False):
    """CoNLL/IOB column files: token first and tag last (or the columns at the given indexes), columns
    separated by a tab or spaces, a blank line between sentences, -DOCSTART- lines and comment lines
    (conll_comments) skipped. A file without a sentence is refused unless `empty_ok` (text to tag)."""
    records, locations = [], []
    tokens, tags, start, width, width_line = [], [], None, None, None
    lines = [conll_line(line) for line in text.split("\n")] + [""]
    rows = [conll_cells(line) if line.strip(LINE_SPACE) else None for line in lines]  # None: a blank line
    comments = conll_comments(rows, label_index)
    if comments:
        logger.info("%s: %d comment line(s) skipped (a '#' line opening a sentence whose columns or tag no token "
                    "line has; line %s first).", path, len(comments), min(comments))
    for number, (line, cells) in enumerate(zip(lines, rows), start=1):
        if cells is None:
            if tokens:
                records.append({"tokens": tokens, "tags": tags} if width > 1 else {"tokens": tokens})
                locations.append(f"line {start}")
            tokens, tags, start = [], [], None
            continue
        if cells[0] == "-DOCSTART-" or number in comments:
            continue
        width, width_line = (width, width_line) if width else (len(cells), number)
        if len(cells) != width:
            raise UserError(f"{path}, line {number}: {len(cells)} column(s) where line {width_line} (the file's first "
                            f"token line) has {width}.{column_hint(line, cells)} Every token line needs the same "
                            "columns: the token and, in a labelled file, its tag.")
        for index, flag in ((text_index, "--text_column_name"), (label_index, "--label_column_name")):
            if width > 1 and not -width <= index < width:
                raise UserError(f"{path}, line {number}: {flag} {index} is out of range for {width} columns.")
        tokens.append(cells[text_index if width > 1 else 0])
        tags.append(cells[label_index] if width > 1 else None)
        start = start or number
    if not records and not empty_ok:
        raise UserError(f"{path}: no sentences found. A CoNLL file has one token per line, the tag in the last "
                        "column, and a blank line between sentences.")
    return records, locations


def conll_line(line):
    # a tab before the first cell is an empty word, not padding: only spaces pad a line's start. A byte-order
    # mark may open any line, not only the file's first: files joined with `cat` each keep their own.
    return line.removeprefix(BYTE_ORDER_MARK).rstrip(LINE_SPACE).lstrip(" ")


def conll_cells(line):
    if "\t" in line:  # spaces beside a tab pad the columns (an export that aligns them), as the README reads
        return [cell.strip(" ") for cell in line.split("\t")]
    return [cell for cell in line.split(" ") if cell]


def conll_comments(rows, label_index):
    """Numbers of the comment lines of a CoNLL file, given the cells of its lines (None for a blank one):
    lines that open a sentence with a cell starting with '#' (`# id 3f2a... domain=en` in MultiCoNER,
    `# sent_id = 1`, `# doc1`) and have another number of columns than the token lines, or a last cell that
    no token line has and that is not shaped as an entity tag. A '#' token that opens a tweet, tagged as
    other tokens are (`# O`), stays a token, and so does a hashtag whose entity is rare (`#Avengers B-movie`
    in a test file without another movie)."""
    candidates, widths, tags, opening = {}, set(), set(), True
    for number, cells in enumerate(rows, start=1):
        if cells is None:
            opening = True
            continue
        if opening and cells[0].startswith("#"):
            candidates[number] = cells
            continue  # a comment may be followed by another; the sentence opens after them
        opening = False
        if cells[0] != "-DOCSTART-":
            widths.add(len(cells))
            if len(cells) > 1 and -len(cells) <= label_index < len(cells):
                tags.add(cells[label_index])
    return {number for number, cells in candidates.items()
            if len(cells) not in widths or len(cells) > 1 and cells[label_index] not in tags
            and cells[label_index] != "O" and split_label(cells[label_index])[0] is None}


def column_hint(line, cells):
    """What is odd about a CoNLL line of the wrong width, where something is: no word before its first tab,
    or a character that looks like a space but separates no columns (only tabs and ASCII spaces do)."""
    if cells and cells[0] == "":
        return " It has no word before its first tab."
    odd = sorted({character for character in line if character.isspace() and character not in " \t"})
    if odd:
        return (f" It holds {', '.join(f'U+{ord(character):04X}' for character in odd)}, which separates no columns "
                "here: only tabs and ASCII spaces do.")
    return ""


def conllu_field(name, default):
    """A CoNLL-U column as an index: a field name (form, lemma, upos, xpos, ..., case-insensitive) or a
    position (0 for ID, -1 for MISC); any other name is a key of the MISC column (`NER` reads `NER=B-PER`)."""
    name = default if name is None else name
    if name.lower() in CONLLU_FIELDS:
        return CONLLU_FIELDS.index(name.lower())
    try:
        return int(name)
    except ValueError:
        return name


def conllu_value(cells, field, path, number):
    """One field of a CoNLL-U word line; a MISC key must be on every word."""
    if isinstance(field, int):
        if not -len(CONLLU_FIELDS) <= field < len(CONLLU_FIELDS):
            raise UserError(f"{path}: column {field} is out of range; a CoNLL-U line has 10 columns (0 to 9, or "
                            f"{', '.join(CONLLU_FIELDS)} by name).")
        return cells[field]
    misc = dict(item.split("=", 1) for item in cells[-1].split("|") if "=" in item)
    if field not in misc:
        raise UserError(f"{path}, line {number}: the MISC column '{cells[-1]}' has no '{field}=' entry. Every word "
                        f"needs one when the tags are read from MISC ({field}); otherwise name a column with "
                        "--label_column_name (upos, xpos, deprel, ... or its index).")
    return misc[field]


def parse_conllu(path, text, text_field=1, label_field=3, format_flag="--file_format", empty_ok=False):
    """CoNLL-U (Universal Dependencies): ten tab-separated columns per word, `#` comment lines, a blank line
    after each sentence. Words are FORM and tags UPOS unless other fields are given; multiword-token
    ranges (`1-2`) and empty nodes (`1.1`) are skipped, so the words are the syntactic words of the tree. A
    file whose tags are all `_` is unlabelled. A file without a sentence is refused unless `empty_ok`."""
    records, locations, tokens, tags, start = [], [], [], [], None
    for number, line in enumerate(text.split("\n") + [""], start=1):
        line = line.removeprefix(BYTE_ORDER_MARK)  # files joined with `cat` each keep their own
        if not line.strip():
            if tokens:
                records.append({"tokens": tokens, "tags": tags})
                locations.append(f"line {start}")
            tokens, tags, start = [], [], None
            continue
        if line.startswith("#"):
            continue
        cells = line.split("\t")
        if len(cells) != len(CONLLU_FIELDS):
            raise UserError(f"{path}, line {number}: {len(cells)} tab-separated column(s) where a CoNLL-U word line "
                            "has 10 (ID FORM LEMMA UPOS XPOS FEATS HEAD DEPREL DEPS MISC). Read other column "
                            f"files with {format_flag} conll.")
        if "-" in cells[0] or "." in cells[0]:
            continue  # a multiword token's surface form, or an empty node: not a word of its own
        tokens.append(conllu_value(cells, text_field, path, number))
        tags.append(conllu_value(cells, label_field, path, number))
        start = start or number
    if not records and not empty_ok:
        raise UserError(f"{path}: no sentences found. A CoNLL-U file has one word per line in 10 tab-separated "
                        "columns and a blank line after each sentence.")
    if all(tag == "_" for record in records for tag in record["tags"]):
        records = [{"tokens": record["tokens"]} for record in records]
    return records, locations


# ---------------------------------------------------------------------------------------------------------
# Datasets through the `datasets` library


def read_dataset(name, config_name, cache_dir, token, wanted, columns=None):
    """A hub dataset, a local folder in hub layout, a folder written by `save_to_disk`, or a folder of CoNLL or
    CoNLL-U files (`conll_folder_files`)."""
    import datasets

    path = os.path.expanduser(name)  # `--dataset_name=~/data` reaches us unexpanded, as nerkit.hub expects
    check_dataset_name(name, path)
    conll_files = conll_folder_files(path) if os.path.isdir(path) and not is_saved_dataset(path) else None
    if conll_files:
        return {split: read_file(file, "auto", columns) for split, file in conll_files.items() if split in wanted}
    by_split = files_with_own_labels(path) if os.path.isdir(path) and not is_saved_dataset(path) else None
    try:
        if os.path.isdir(path) and is_saved_dataset(path):
            loaded = datasets.load_from_disk(path)
        elif by_split:  # each split with its own label names, as separate data files are read
            loaded = datasets.DatasetDict({split: datasets.Dataset.from_parquet(files, cache_dir=cache_dir)
                                           for split, files in by_split.items()})
        else:
            loaded = datasets.load_dataset(path, config_name, cache_dir=cache_dir, token=token)
    except Exception as error:  # datasets raises many types; the user needs the name and the reason
        empty = empty_saved_splits(path) if is_saved_dataset(path) else []
        if empty:  # datasets (5.2) fails to load a saved split of no rows, with an IndexError
            raise UserError(f"--dataset_name {name}: the saved split(s) {', '.join(empty)} have no examples. Save "
                            "the dataset again without them, or with examples in them.") from None
        download = hub_cache_download(name, cache_dir) if isinstance(error, ConnectionError) else None
        if download:  # offline, datasets reads only its own prepared cache, not the hub's download of the files
            logger.info("The dataset %s is not in datasets' cache, but its files are in the hub cache (a download "
                        "such as `hf download --repo-type dataset`): reading %s.", name, download)
            return read_dataset(download, config_name, cache_dir, token, wanted, columns)
        raise UserError(dataset_failure(name, config_name, error)) from None
    if isinstance(loaded, datasets.Dataset):
        loaded = datasets.DatasetDict({"train": loaded})
    records, by_name = {}, {key.lower(): key for key in loaded}
    unread = [key for key in loaded if not any(key.lower() in aliases for aliases in SPLIT_ALIASES.values())]
    if unread:
        logger.warning("The dataset %s has splits that are not read: %s. Only train, validation (or %s) and test are; "
                       "rename a split to one of these to use it.", name, ", ".join(unread),
                       ", ".join(SPLIT_ALIASES["validation"][1:]))
    for split in wanted:
        key = next((by_name[alias] for alias in SPLIT_ALIASES[split] if alias in by_name), None)
        if key is None:
            continue
        dataset = loaded[key]
        locations = [f"example {i}" for i in range(len(dataset))]
        source = f"dataset {name}, split {key}"
        records[split] = Records(source, dataset, locations, dataset.column_names, dataset.features,
                                 editable=False)
    return records


def files_with_own_labels(folder):
    """{split: Parquet files} of a local folder in hub layout whose splits' files name different labels
    (`ClassLabel` names), else None. datasets reads every split of a folder with one set of features, the
    first split's, so the same ids would silently become other labels. Shards of one split that disagree
    are refused."""
    from datasets.data_files import DataFilesDict, get_data_patterns

    try:
        files = DataFilesDict.from_patterns(get_data_patterns(folder), base_path=folder)
    except Exception:  # noqa: BLE001 -- no data files datasets would find: load_dataset says why
        return None
    names = {}
    for split, paths in files.items():
        if not paths or not all(str(file).endswith(".parquet") for file in paths):
            return None
        found = {json.dumps(parquet_label_names(file), sort_keys=True) for file in paths}
        if len(found) > 1:
            raise UserError(f"--dataset_name {folder}: the files of the {split} split name their labels differently "
                            "(the ClassLabel names saved in each Parquet file), so the same ids would mean other "
                            "labels. Save them again with one list of label names.")
        names[split] = found.pop()
    if len(set(names.values())) < 2:
        return None
    logger.info("The splits of %s name their labels differently: each split is read with its own names.", folder)
    return {split: list(paths) for split, paths in files.items()}


def parquet_label_names(path):
    """{column: ClassLabel names} that `datasets` saved in a Parquet file's metadata (for a column of labels or
    of lists of labels); {} for a file without them."""
    import pyarrow.parquet

    try:
        metadata = pyarrow.parquet.read_schema(path).metadata or {}
        features = json.loads(metadata.get(b"huggingface", b"{}")).get("info", {}).get("features", {})
    except (OSError, ValueError, AttributeError, pyarrow.ArrowException):
        return {}
    found = {}
    for column, feature in features.items():
        inner = feature.get("feature", feature) if isinstance(feature, dict) else {}
        if isinstance(inner, dict) and inner.get("_type") == "ClassLabel":
            found[column] = inner.get("names")
    return found


def conll_folder_files(folder):
    """{split: file} for a folder (or its data/ subfolder) of CoNLL or CoNLL-U files, each split named in its
    file name as `datasets` names them (train, validation/valid/dev/val, test: `train.conll`,
    `en_ewt-ud-dev.conllu`); None for a folder without such files. datasets' own readers would take such
    files for text or CSV (dropping the tags, or reading the ID column as words), so they are read as
    --train_file and the others read them. A file whose split cannot be told, or two for one split, is
    refused."""
    extensions = (CONLL_EXTENSIONS - {".txt"}) | {".conllu"}  # a .txt may be prose, or a README
    files = [os.path.join(place, entry) for place in (folder, os.path.join(folder, "data")) if os.path.isdir(place)
             for entry in sorted(os.listdir(place)) if os.path.splitext(entry)[1].lower() in extensions]
    if not files:
        return None
    splits = {}
    for file in files:
        words = set(re.split(r"[^a-z]+", os.path.basename(file).lower()))
        found = [split for split, aliases in SPLIT_ALIASES.items() if words & set(aliases)]
        if len(found) != 1 or found[0] in splits:
            raise UserError(f"--dataset_name {folder}: {file} is a CoNLL file whose split cannot be told from its "
                            f"name (train, validation/dev or test, once each). Give the files to {DATA_FILE_FLAGS}.")
        splits[found[0]] = file
    return splits


def check_dataset_name(name, path):
    """Refuse what `datasets` would misreport: a data file (it looks for data files under it, as in a
    folder) and a local path that does not exist (it checks it as a hub id). `path` is `name` expanded."""
    if os.path.isfile(path):
        raise UserError(f"--dataset_name {name} is a file, but --dataset_name takes a dataset name or a folder (in "
                        f"hub layout, or written by save_to_disk). Give a data file to {DATA_FILE_FLAGS} instead "
                        "(the README's Data section lists the formats).")
    if name.startswith(LOCAL_SPELLINGS) and not os.path.exists(path):
        spellings = f"{', '.join(LOCAL_SPELLINGS[:-1])} or {LOCAL_SPELLINGS[-1]}"
        raise UserError(f"--dataset_name {name}: the folder {name} does not exist. Check the path (a name starting "
                        f"with {spellings} is a local folder, never looked up on the hub); data files go to "
                        f"{DATA_FILE_FLAGS}.")


def hub_cache_download(name, cache_dir):
    """The folder of dataset repository `name`'s newest download in the hub cache (or under --cache_dir),
    without asking the hub; None where there is none."""
    from huggingface_hub import snapshot_download

    if os.path.exists(os.path.expanduser(name)):
        return None
    for cache in dict.fromkeys([None, cache_dir]):
        try:
            return snapshot_download(name, repo_type="dataset", local_files_only=True, cache_dir=cache)
        except Exception:  # noqa: BLE001 -- not downloaded there (or not a repository name at all)
            continue
    return None


def dataset_failure(name, config_name, error):
    """The message for a dataset `datasets` could not load: the reason in words where it is known, and where
    local data files go instead."""
    what = f"the dataset '{name}'" + (f" (config '{config_name}')" if config_name else "")
    local_files = f"Local data files go to {DATA_FILE_FLAGS} (the README's Data section lists the formats)."
    if isinstance(error, ConnectionError):  # datasets' "Couldn't reach ... (OfflineModeIsEnabled)" and the like
        setting = offline_setting()
        # without the user's setting, offline mode comes from nerkit.hub, set only when the hub does not answer
        why = f"offline mode is set ({setting})" if setting else "the Hugging Face Hub could not be reached"
        return (f"Could not load {what}: {why}, so it could only come from the local cache, where it was not "
                "found. Check the name, or load it once with a network so that it is cached. " + local_files)
    reason = " ".join(str(error).split()).rstrip(".")  # datasets' messages span lines, with tabs and examples
    empty = re.search(r"Instruction ['\"]?(\w+)['\"]? corresponds to no data", reason)
    if empty:
        return (f"Could not load {what}: its {empty.group(1)} split has no examples (an empty data file). Remove "
                "the file or give it examples. " + local_files)
    if "scripts are no longer supported" in reason:
        return (f"Could not load {what}: it is defined by a loading script, and datasets runs no loading scripts "
                "any more. Convert it to data files (Parquet, JSON Lines, CSV) in a folder, or load it in Python and "
                "save_to_disk, and give that folder. " + local_files)
    return (f"Could not load {what}: {type(error).__name__}: {reason}. Check the name (and --dataset_config_name), "
            "or give a local folder. " + local_files)


def offline_setting():
    """`NAME=value` of the environment variable that puts `datasets` offline, or None. Read as datasets reads
    them: HF_DATASETS_OFFLINE decides when it is set, else HF_HUB_OFFLINE, or TRANSFORMERS_OFFLINE when that
    is empty."""
    if "HF_DATASETS_OFFLINE" in os.environ:
        names = ("HF_DATASETS_OFFLINE",)
    else:
        names = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    name = next((name for name in names if os.environ.get(name)), None)
    if name is None or os.environ[name].upper() not in TRUE_VALUES:
        return None
    return f"{name}={os.environ[name]}"


def empty_saved_splits(folder):
    """The splits of a `save_to_disk` folder saved with no data files (no rows), read from its JSON files."""
    try:
        with open(os.path.join(folder, "dataset_dict.json"), encoding="utf-8") as handle:
            names = json.load(handle)["splits"]
        empty = []
        for split in names:
            with open(os.path.join(folder, split, "state.json"), encoding="utf-8") as handle:
                if not json.load(handle).get("_data_files"):
                    empty.append(split)
        return empty
    except (OSError, ValueError, KeyError, TypeError):
        return []


def is_saved_dataset(folder):
    return os.path.isfile(os.path.join(folder, "dataset_dict.json")) or os.path.isfile(
        os.path.join(folder, "state.json")
    )


# ---------------------------------------------------------------------------------------------------------
# From rows to a Split


def build_split(name, found, columns, label_names):
    """Find the columns, convert tags to strings, check every example. Returns (Split, declared names).

    Problems in a local file are errors the user can fix; a dataset from --dataset_name cannot be edited,
    so there empty examples are skipped and blank words kept, with a counted warning (see `Repairs`)."""
    source, rows, locations = found.source, found.rows, found.locations
    text_column, label_column = find_columns(found.column_names, columns, source)
    declared = class_label_names(found.features, label_column) if label_column else None
    names = declared or label_names
    tokens_column = column_values(rows, text_column)
    tags_column = column_values(rows, label_column) if label_column else None
    if columns.text is None and columns.label is None and tags_column is not None and not found.columns_chosen:
        check_not_swapped(source, text_column, tokens_column, label_column, tags_column)
    if name == "test" and tags_column is not None and columns.label is None and not looks_like_tags(tags_column):
        tags_column = None  # the second column of an unlabelled test file is not a tag column
    if declared and tags_column is not None and all(tag == -1 for tags in tags_column for tag in tags or ()):
        tags_column = None  # datasets writes ClassLabel -1 for "no label": an unlabelled split
    repairs = None if found.editable else Repairs(source, text_column)
    tokens_list, tags_list, kept = [], None if tags_column is None else [], []
    for index, raw_tokens in enumerate(tokens_column):
        where = f"{source}, {locations[index]}"
        words = [] if raw_tokens is None and repairs is not None else as_list(raw_tokens, text_column, where)
        if repairs is None:
            check_words(words, text_column, where, found.line_per_word)
        else:
            check_word_types(words, text_column, where)
            if not repairs.accept(words, locations[index]):
                continue
        tokens_list.append(["" if word is None else str(word) for word in words])
        kept.append(locations[index])
        if tags_list is not None:
            tags = as_list(tags_column[index], label_column, where)
            tags_list.append(tags_as_strings(tags, words, names, label_column, where, found.line_per_word))
    if repairs is not None:
        repairs.warn()
    if not tokens_list:
        raise UserError(f"{source}: the {name} split has no examples.")
    return Split(name, source, tokens_list, tags_list, kept, found.line_per_word), declared


class Repairs:
    """What is tolerated in a dataset the user cannot edit, counted for one warning per split: an example
    without words (an empty or missing list) is skipped; an empty or whitespace-only word is kept as it is (a
    missing one as an empty string). The tokenizer usually gives such a word no sub-token, and such words
    are predicted as the outside label and still scored (see nerkit.decoding)."""

    def __init__(self, source, column):
        self.source, self.column = source, column
        self.skipped, self.blank = [], []

    def accept(self, words, location):
        """Whether to keep the example; notes its blank words."""
        if not words:
            self.skipped.append(location)
            return False
        self.blank += [f"{location}, word {i}" for i, word in enumerate(words) if word is None or not str(word).strip()]
        return True

    def warn(self):
        if self.skipped:
            logger.warning("%s: skipped %d example(s) without words in '%s' (%s): they are neither trained on, "
                           "scored nor predicted, so predictions.txt has no line for them.", self.source,
                           len(self.skipped), self.column, shown(self.skipped))
        if self.blank:
            logger.warning("%s: %d word(s) in '%s' are empty or only whitespace (%s); they are kept, and a word the "
                           "tokenizer gives no sub-token is predicted as the outside label and still scored.",
                           self.source, len(self.blank), self.column, shown(self.blank))


def shown(places):
    """The first few places of a list, for a warning."""
    more = f" and {len(places) - SHOWN_PLACES} more" if len(places) > SHOWN_PLACES else ""
    return "; ".join(places[:SHOWN_PLACES]) + more


DEFAULT_TASK = "ner"  # --task_name's default, whose 'ner_tags' column may be missing (then another is read)
TAG_COLUMN_ENDINGS = ("tags", "labels", "label")


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
        if columns.label == text:
            raise UserError(f"{source}: --label_column_name {columns.label} names the column of words too, so the "
                            "words would be trained as tags. Name the column of tags, and the words' with "
                            "--text_column_name if it is not 'tokens' or the first column.")
        return text, columns.label
    if f"{columns.task_name}_tags" in column_names:
        return text, f"{columns.task_name}_tags"
    if columns.task_name != DEFAULT_TASK:  # asked for by name: another column's tags would be another task's
        raise UserError(f"{source}: --task_name {columns.task_name} reads the column '{columns.task_name}_tags', "
                        f"which is not there (columns: {', '.join(column_names)}). Name the column of tags with "
                        "--label_column_name.")
    others = [name for name in column_names if name != text]
    tagged = [name for name in others if name.lower().endswith(TAG_COLUMN_ENDINGS)]
    if tagged:  # upstream takes the second column; a 'tags' column after an 'id' one is the better guess
        return text, tagged[0]
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


def check_not_swapped(source, text_column, words, label_column, tags):
    """Columns found by position (neither named) whose words read as tags and whose tags do not: the file
    lists the tags first, and training would learn words as labels."""
    if tag_share(words) >= 0.9 and tag_share(tags) < 0.5:
        raise UserError(f"{source}: the column '{text_column}', read as the words, holds tags (O, B-X, ...), and "
                        f"'{label_column}', read as the tags, does not: the file seems to list its tags first. Name "
                        f"the columns: --text_column_name {label_column} --label_column_name {text_column}.")


def tag_share(values, examples=20):
    """The share of the items in the first examples' lists that read as entity tags (O, B-X, I-X, ...)."""
    items = [item for value in itertools.islice(values, examples) if isinstance(value, list) for item in value]
    tagged = sum(isinstance(item, str) and (item == "O" or split_label(item)[0] is not None) for item in items)
    return tagged / len(items) if items else 0.0


def looks_like_tags(values):
    """Whether a column holds per-word lists (or list-like strings from a CSV), judged by its first value:
    an example without one (a missing key, an empty CSV cell) says nothing, as the others may have tags (each
    is then checked)."""
    sample = next((value for value in values if not missing(value)), None)
    return isinstance(sample, list) or (isinstance(sample, str) and sample.lstrip().startswith("["))


def as_list(value, column, where):
    """A cell as a Python list: lists stay, CSV cells are parsed as JSON, then as a Python literal or the way
    numpy prints an array (`python_list`)."""
    if isinstance(value, list):
        return value
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, str) and value.lstrip().startswith("["):
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = python_list(value)
        if isinstance(parsed, (list, tuple)):
            return list(parsed)
        raise UserError(f"{where}: the '{column}' cell is not a valid list: {value[:80]!r}. Write it as a JSON "
                        "list (\"[\"\"EU\"\", \"\"rejects\"\"]\" in CSV) or a Python list, with a comma between "
                        "items (Python would join two quoted words without one into one word).")
    if missing(value):
        raise UserError(f"{where}: this example has no '{column}' (the key is missing or null), which the other "
                        f"examples have. Give it a '{column}' list, or remove the example.")
    raise UserError(f"{where}: the '{column}' column must hold a list per example, got "
                    f"{type(value).__name__} {str(value)[:80]!r}. Name the right column with --text_column_name "
                    "or --label_column_name.")


def python_list(text):
    """A Python list literal, or an array as numpy prints it (`['John' 'Smith' '.']`, `[1 2 0]`: items apart by
    spaces, as pandas writes a column of arrays to CSV, from `Dataset.to_pandas()` say); None for anything else,
    and for a list in which two quoted items have no comma between them, which Python would join into one."""
    if re.search(r"""['"]\s*['"]""", text):  # quoted items that may touch: looked at token by token
        try:
            tokens = [token for token in tokenize.generate_tokens(io.StringIO(text.strip()).readline)
                      if token.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.ENDMARKER)]
        except (tokenize.TokenError, SyntaxError):
            return None
        items = tokens[1:-1]
        if items and tokens[0].string == "[" and tokens[-1].string == "]" and \
                all(token.type in (tokenize.STRING, tokenize.NUMBER) for token in items):
            text = "[" + ", ".join(token.string for token in items) + "]"  # numpy's layout, commas put in
        elif any(first.type == second.type == tokenize.STRING for first, second in zip(tokens, tokens[1:])):
            return None
    elif re.fullmatch(r"\[\s*\d+(?:\s+\d+)*\s*\]", text.strip()):  # numpy's integers: [1 2 0]
        text = "[" + ", ".join(text.strip()[1:-1].split()) + "]"
    try:
        parsed = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None
    return parsed if isinstance(parsed, (list, tuple)) else None


def check_word_types(words, column, where):
    """A dataset's words are strings (or None, repaired as empty): a list, a dict or a number in their place
    means the column is not one of words, and read as text it would train on "['John']"."""
    odd = next((word for word in words if word is not None and not isinstance(word, str)), None)
    if odd is not None:
        raise UserError(f"{where}: '{column}' holds a {type(odd).__name__} ({str(odd)[:60]!r}) where a word should be: "
                        "the words column must hold lists of strings. Name it with --text_column_name, or flatten "
                        "nested columns first (Dataset.flatten()).")


def missing(value):
    """A cell with nothing in it: a JSON line without the key or with null (datasets fills a missing key with
    None), or an empty CSV cell."""
    return value is None or (isinstance(value, str) and not value.strip())


def check_words(words, column, where, line_per_word=False):
    """Every word a string with a visible character, which UTF-8 can write (predictions.txt and the
    tokenizer need that), each problem named at the word's own place (its line in a CoNLL file)."""
    if not words:
        raise UserError(f"{where}: the example has no words in '{column}'. Remove empty examples.")
    for position, word in enumerate(words):
        place = word_place(where, position, True) if line_per_word else where  # the message names the word
        word_is = "the word" if line_per_word else f"word {position} in '{column}'"  # a CoNLL line has one
        if not isinstance(word, str) or not word:
            raise UserError(f"{place}: {word_is} is {word!r}; every word must be a non-empty "
                            "string. Remove it or replace it with a placeholder.")
        if not word.strip():
            codes = " ".join(f"U+{ord(character):04X}" for character in word)
            raise UserError(f"{place}: {word_is} is only whitespace ({codes}); every word needs "
                            "a visible character. Remove it or replace it with a placeholder.")
        half = half_character(word)
        if half is not None:
            raise UserError(f"{place}: {word_is} holds {half!r}, half of a character (an "
                            "unpaired surrogate escape in JSON) that no UTF-8 text can hold. Write the whole "
                            "character, or its pair of escapes.")


def tags_as_strings(tags, words, names, column, where, line_per_word=False):
    """Check one tag list against its words and return the tags as strings. A tag written in digits (a CoNLL
    or CSV column holds only text) is a label id like an integer tag, unless the names list it as a name."""
    if len(tags) != len(words):
        raise UserError(f"{where}: {len(words)} words but {len(tags)} tags in '{column}'. Every word needs "
                        "exactly one tag.")
    strings = []
    for position, tag in enumerate(tags):
        place = word_place(where, position, line_per_word)
        if isinstance(tag, bool) or not isinstance(tag, (str, int)):
            raise UserError(f"{place}: the tag is {tag!r}; tags must be strings or integer ids.")
        if isinstance(tag, int) or (tag.isascii() and tag.isdigit() and tag not in (names or ())):
            tag = label_name(tag, names, place)
        check_tag(tag, place)
        strings.append(tag)
    return strings


def label_name(tag, names, place):
    """The name of the label id `tag` (an int, or its digits) in the `ClassLabel` or --label_list names."""
    if names is None:
        # read as a name, '1' would become a label of its own and no entity would ever be trained
        raise UserError(f"{place}: the tag {tag!r} is a number, which is read as a label id, but the data does not "
                        "say what the ids mean. Give the label names in id order with --label_list (O,B-PER,I-PER,... "
                        "or a file with one name per line), or write the tags as names such as B-PER. If the "
                        "numbers are the tag names themselves, list them: --label_list 0,1,2,...")
    if int(tag) == -1:
        raise UserError(f"{place}: tag id -1 is how datasets marks a word without a label, and other words of the "
                        "split have labels. Label every word, or none of the split's (an unlabelled split).")
    if not 0 <= int(tag) < len(names):
        raise UserError(f"{place}: tag id {tag} is out of range: there are {len(names)} label names "
                        f"(ids 0 to {len(names) - 1}).")
    return names[int(tag)]


def check_tag(tag, place):
    """A tag is one word: predictions.txt writes a line's labels separated by single spaces, so a tag with
    whitespace in it would read as two labels, an empty one as none, and 'B-PER ' would also be a label of
    its own beside 'B-PER' (nerkit.labels.one_word), as would 'B-PER' with an invisible character (a
    zero-width space, a left-to-right mark that right-to-left annotation tools leave). The message says which."""
    half = half_character(tag)
    if half is not None:
        raise UserError(f"{place}: the tag {tag!r} holds {half!r}, half of a character (an unpaired surrogate "
                        "escape in JSON) that no UTF-8 text can hold. Write the whole character, or its pair of "
                        "escapes.")
    hidden = invisible_characters(tag)
    if hidden:
        raise UserError(f"{place}: the tag {tag!r} holds {hidden}, which no one sees but which would make it a "
                        f"label of its own beside {visible_part(tag)!r}. Remove it (a search for that code point in "
                        "the file finds every one).")
    if one_word(tag):
        return
    if not tag.strip() or len(tag.split()) > 1:
        raise UserError(f"{place}: the tag {tag!r} is empty or holds whitespace. A tag is one word such as B-PER "
                        "(in a CoNLL file, separate its columns all by tabs or all by spaces).")
    raise UserError(f"{place}: the tag {tag!r} has whitespace around it, so it would be a label of its own "
                    f"beside {tag.strip()!r}. Remove the whitespace around it.")


def half_character(text):
    """The first half of a surrogate pair standing alone in `text` (JSON's unpaired escape, or a byte of a
    command line that is not UTF-8), which no UTF-8 file can hold; None without one."""
    return next((character for character in text if "\ud800" <= character <= "\udfff"), None)


def invisible_characters(text):
    """The characters of `text` that print as nothing (format and control characters: zero-width spaces,
    direction marks, a byte-order mark), named by code point ('U+200B (zero width space)'); '' for none."""
    found = dict.fromkeys(character for character in text
                          if unicodedata.category(character) in ("Cf", "Cc") and not character.isspace())
    return ", ".join(f"U+{ord(character):04X} ({unicodedata.name(character, 'control character').lower()})"
                     for character in found)


def visible_part(text):
    """`text` without what `invisible_characters` names."""
    return "".join(character for character in text if unicodedata.category(character) not in ("Cf", "Cc"))


def label_file_names(path, text):
    """The names of a --label_list file, one a line; label id i is the i-th name, so a blank line between
    names (which would shift every later id, or stand for a name) is refused, as is a JSON file."""
    lines = text.rstrip().split("\n")
    if text.lstrip().startswith(("[", "{")):
        raise UserError(f"--label_list {path} is JSON; it takes a text file with one label name per line (label id "
                        "0 first), or the names separated by commas. Write the names out one a line, for example "
                        f"with `jq -r '.[]' {shlex.quote(path)}` for a JSON list.")
    blank = next((number for number, line in enumerate(lines, start=1) if not line.strip()), None)
    if blank is not None:
        raise UserError(f"--label_list {path}, line {blank}: a blank line between label names. Line i names label id "
                        "i - 1, so a blank line would shift every later id: remove it, or write the name it stands "
                        "for.")
    return [line.strip() for line in lines]


def read_label_names(value):
    """--label_list: a comma-separated list, or a file with one name per line."""
    if not value:
        return None
    if os.path.isfile(value):
        names = label_file_names(value, read_text(value, "--label_list file", "--label_list"))
    elif "," not in value and (os.sep in value or os.path.splitext(value)[1] in (".txt", ".lst", ".labels")):
        raise UserError(f"The --label_list file {value} does not exist. Give the path of a file with one label "
                        "name per line, or the names themselves: O,B-PER,I-PER,...")
    else:
        names = [name.strip() for name in value.strip().rstrip(",").split(",")]
        if "" in names:  # dropping it would shift every later id, as a blank line in the file form would
            raise UserError(f"--label_list {value} has an empty name at position {names.index('') + 1}: each "
                            "name is the label of the id at its position. Remove the extra comma, or name that id.")
    if len(set(names)) != len(names):
        raise UserError(f"--label_list lists a name twice: {names}.")
    for position, name in enumerate(names, 1):
        if half_character(name) is not None:
            raise UserError(f"--label_list: name {position}, {name!r}, holds a byte that is not UTF-8 text. Write "
                            "the label names in UTF-8.")
        hidden = invisible_characters(name)
        if hidden:
            raise UserError(f"--label_list: name {position}, {name!r}, holds {hidden}, which no one sees but which "
                            f"would make it a label of its own beside {visible_part(name)!r}. Remove it.")
    return names

#!/usr/bin/env python
"""Tag raw text with a trained token-classification model (a folder written by run_ner.py, or any such
model on disk or on the hub), through the same windows and word decoding as evaluation.

    python predict_ner.py --model output/wnut16-minilm --input tweets.txt --output entities.jsonl
    echo "Peter Blackburn reported from Brussels" | python predict_ner.py --model output/wnut16-minilm

Input: a text file with one document per line, a JSON Lines file with a `text` field (or a `tokens` field
of pre-split words), a CoNLL or CoNLL-U file (its words, one sentence a document), or standard input.
Output: JSON Lines, one object per input line or sentence (a blank line gives a document without
entities) with `entities` (`type`, `start`, `end` as character offsets so that text[start:end] is the
entity, `text`, `score`), and with --words the words, their labels and probabilities. The training scripts' spellings --model_name_or_path, --max_seq_length and
--per_device_eval_batch_size are accepted for --model, --max_length and --batch_size.
"""

import argparse
import json
import logging
import os
import re
import sys

import regex

from nerkit.startup import collection_paused, end_of_script, quiet_interrupt_while_importing

if __name__ == "__main__":
    quiet_interrupt_while_importing()

with collection_paused():  # what the imports make lives as long as the process (nerkit/startup.py)
    from nerkit.arguments import BriefErrors, at_least, file_in_the_way, unwritable_folder
    from nerkit.data import Split, decode_utf8, parse_conll, parse_conllu, unix_line_ends
    from nerkit.errors import UserError, exit_on_user_error
    from nerkit.hub import hub_names, offline_note, offline_unless_reachable, remote_code_refusal
    from nerkit.labels import model_label_list, outside_label, saved_id2label
    from nerkit.outputs import json_lines, open_descriptor, write_atomic, write_to_descriptor
    from nerkit.schemes import entity_spans, split_label
    from nerkit.tokenization import (DECODER_COLUMNS, EncodingSettings, encode_split, load_fast_tokenizer,
                                     window_length)

logger = logging.getLogger("predict_ner")

# A word is a run of letters, digits and the marks and joiners that belong to them (Hindi शाहरुख़, decomposed
# Zürich, Persian می‌خواهم, a soft hyphen, a word joiner, Mongolian's vowel separator), or a CJK ideograph
# alone with its marks and variation selector (as BERT's tokenizer splits them; a line of Japanese would
# otherwise be one word), or one other visible character or emoji sequence (a flag, a skin tone, a ZWJ
# family): "John's" -> John ' s, and "@jess_robbo" -> @ jess _ robbo, as BERT's tokenizer splits punctuation
# (regex's \w would keep the underscore inside). Other invisible format and control characters (a zero-width
# space, a BOM) separate words as spaces do.
WORD = regex.compile(r"\p{Han}\p{M}*|(?:(?!\p{Han})[\p{L}\p{N}\p{M}\u200c\u200d\u00ad\u2060\u180e])+"
                     r"|(?![\s\p{Cf}\p{Cc}])\X")
FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".conll": "conll", ".iob": "conll", ".bio": "conll",
           ".conllu": "conllu", ".txt": "text"}  # --format auto, by extension; anything else is text
# ... except files that are plainly not text: read as lines, they would be tagged as prose (a CSV's header
# and list cells) or fail as not UTF-8, with advice to re-save them that would not help.
NOT_READ = (".csv", ".tsv", ".parquet", ".arrow", ".feather", ".xlsx", ".xls", ".ods", ".docx", ".pdf", ".gz",
            ".zip")
CONLL_SAMPLE = 200  # lines looked at to tell a CoNLL file from prose
OUTPUT_FIELDS = ("entities", "words", "labels", "scores")  # what an output line says; an input's own are replaced
ALL_O_LINES = 20  # token lines that all end in O, and so read as a tagged file without entities


def main(options):
    with collection_paused():  # and what the tagger loads
        import datasets
        from transformers import AutoModelForTokenClassification  # noqa: F401 (torch and the models' code)
        from transformers.utils import logging as transformers_logging

        from nerkit.progress import interactive
        from nerkit.workflow import library_messages_once

    # INFO for this tool and nerkit only: the libraries' INFO lines (accelerate's about gathering batches
    # of no fixed length, which the tagger does on purpose) are not news to its user
    logging.basicConfig(format="%(levelname)s - %(name)s - %(message)s")
    for name in ("predict_ner", "nerkit"):
        logging.getLogger(name).setLevel(logging.INFO)
    datasets.disable_progress_bars()  # the tagger's own bar is the one that means something
    library_messages_once()
    if not interactive():
        transformers_logging.disable_progress_bar()
    documents = read_documents(options.input, options.format, saved_labels(options.model))
    if not documents:  # an empty output answers an empty input line for line; no model needs loading for it
        logger.warning("%s holds no text: nothing to tag, so the output is empty.",
                       "Standard input" if options.input == "-" else options.input)
        write_records([], options.output)
        return
    offline_unless_reachable(hub_names(options.model))
    words, offsets = zip(*(split_words(document, options.split) for document in documents))
    tagger = Tagger(options.model, options.max_length, options.stride, options.batch_size, options.decoding,
                    int8=options.int8, trust_remote_code=options.trust_remote_code)
    tags, probabilities = tagger.tag(list(words))
    records = [document_record(document, doc_words, doc_offsets, doc_tags, doc_probabilities, options.words)
               for document, doc_words, doc_offsets, doc_tags, doc_probabilities
               in zip(documents, words, offsets, tags, probabilities)]
    write_records(records, options.output)


class OptionParser(BriefErrors, argparse.ArgumentParser):
    """A mistyped flag or value gets one paragraph, not the usage first (see nerkit.arguments.BriefErrors)."""


def parse_options(argv):
    parser = OptionParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", "--model_name_or_path", dest="model", required=True,
                        help="a trained token-classification folder or hub id")
    parser.add_argument("--input", default="-",
                        help="a text, JSON Lines, CoNLL or CoNLL-U file (see --format); '-' (default) reads "
                             "standard input")
    parser.add_argument("--output", default="-", help="JSON Lines file; '-' (default) writes standard output")
    parser.add_argument("--format", choices=["auto", "text", "jsonl", "conll", "conllu"], default="auto",
                        help="input format (default: auto); auto: .jsonl/.json files are JSON Lines, "
                             ".conll/.iob/.bio CoNLL columns (the words of the first), .conllu CoNLL-U, tables and "
                             "binary files "
                             "(.csv, .tsv, .parquet, .xlsx, .pdf, ...) refused, everything else text")
    parser.add_argument("--split", choices=["words", "whitespace"], default="words",
                        help="how raw text becomes words: 'words' (the default: letters and digits, each other "
                             "character alone, like CoNLL tokenization) or 'whitespace'")
    parser.add_argument("--decoding", choices=["argmax", "viterbi"], default="viterbi",
                        help="each word's best label, or (viterbi, the default) the best sequence the tagging "
                             "scheme allows")
    parser.add_argument("--max_length", "--max_seq_length", dest="max_length", type=int, default=None,
                        help="window length in sub-tokens (default: the model's maximum)")
    parser.add_argument("--stride", type=int, default=64,
                        help="overlap of windows of long documents, in sub-tokens (default: 64)")
    parser.add_argument("--batch_size", "--per_device_eval_batch_size", dest="batch_size", type=int, default=None,
                        help="windows per batch, a long document having several (default: 32 on a GPU or a CPU "
                             "in bf16, 8 on a CPU in fp32)")
    parser.add_argument("--words", action="store_true", help="also write words, labels and probabilities")
    parser.add_argument("--trust_remote_code", action="store_true",
                        help="run the model code that comes with the model (a folder trained with "
                             "--trust_remote_code): off by default, as in the training scripts")
    parser.add_argument("--int8", action="store_true",
                        help="CPU only: run the model's linear layers in int8 (dynamic quantization), faster on "
                             "most CPUs; a few words may get other labels than in fp32")
    options = parser.parse_args(argv)
    check_options(options)
    return options


def check_options(options):
    """Values refused before the model loads: otherwise they fail after it, or once every document is tagged."""
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    if processes > 1:  # each process would tag every document and write it: every line once a process
        raise UserError(f"predict_ner.py tags in one process, and this launch started {processes} (WORLD_SIZE). Run "
                        "it with python (on a machine with several GPUs, CUDA_VISIBLE_DEVICES=0 python "
                        "predict_ner.py ...), not under torchrun or accelerate launch with several processes.")
    if options.batch_size is not None:
        at_least("--batch_size", options.batch_size, 1)
    at_least("--stride", options.stride, 0, "sub-tokens")  # the training scripts' rule
    if options.output == "-" and sys.stdout is None:  # started with >&-
        raise UserError("Standard output is closed, so the entities would have nowhere to go. Give --output FILE, "
                        "or run the command with standard output open.")
    if options.output == "-" or open_descriptor(options.output) is not None:  # /dev/stdout: written as it is open
        return
    if os.path.isdir(options.output):
        raise UserError(f"--output {options.output} is a folder. Give the path of a file to write, for example "
                        f"{os.path.join(options.output, 'entities.jsonl')}, or leave --output out to write to "
                        "standard output.")
    blocker = file_in_the_way(os.path.dirname(os.path.abspath(options.output)))
    if blocker is not None:
        raise UserError(f"--output {options.output} cannot be written: {blocker} is a file, not a folder. Give "
                        "another --output.")
    if options.input != "-" and same_file(options.input, options.output):
        raise UserError(f"--output {options.output} is the same file as --input {options.input}: the entities "
                        "would replace the text they are found in. Give another --output, or leave it out to "
                        "write to standard output.")
    # the output's folder, or where that does not exist yet, the parent write_atomic creates the rest in
    folder = unwritable_folder(os.path.dirname(os.path.abspath(options.output)))
    if folder is not None:  # else it fails once every document is tagged
        raise UserError(f"--output {options.output} cannot be written: files cannot be created in the folder "
                        f"{folder} (its permissions, or a read-only disk, do not allow it). Give an --output in a "
                        "folder you can write to, or leave it out to write to standard output.")


def same_file(first, second):
    """Whether two paths name one existing file, also through a link or another spelling of the path."""
    return os.path.exists(first) and os.path.exists(second) and os.path.samefile(first, second)


def read_documents(path, kind, labels=frozenset()):
    """One document per input line (per sentence of a CoNLL or CoNLL-U file), as a dict: {"text": str} or
    {"tokens": [...]} (pre-split words, text joined by spaces); a blank line is an empty document, so output
    line N answers input line N. `labels`, the model's, help tell a CoNLL file from text (looks_like_conll)."""
    guessed = kind == "auto"
    kind = input_format(path) if guessed else kind
    data = read_input(path)
    name = "standard input" if path == "-" else path
    text = decode_utf8(data, name)
    if kind in ("conll", "conllu") or "\n" not in text:
        # line ends read as the training scripts read them (nerkit.data.read_text); in text and JSON Lines a
        # lone "\r" stays inside its line, unless the input has no other line end (old Mac files)
        text = unix_line_ends(text)
    if kind in ("conll", "conllu"):
        # no sentence (an empty file, -DOCSTART- alone): an empty output, as for text
        parsed = parse_conll(name, text, empty_ok=True) if kind == "conll" else \
            parse_conllu(name, text, format_flag="--format", empty_ok=True)
        return [{"tokens": record["tokens"]} for record in parsed[0]]
    lines = input_lines(text)
    if guessed and path == "-" and looks_like_json_lines(lines):  # no extension to tell
        kind = "jsonl"
    if kind == "jsonl":
        return [json_document(line, path, number) if line.strip() else {"text": ""}
                for number, line in enumerate(lines, start=1)]
    if guessed and looks_like_conll(lines, labels):  # --format text says to tag the lines as they are
        raise UserError(f"{name} looks like a CoNLL column file (a word and its tags on each line, separated by "
                        "tabs or spaces), which would be tagged line by line as text. Pass --format conll to tag its "
                        "words sentence by sentence, or --format text to tag each line as it is.")
    return [{"text": line} for line in lines]


def input_format(path):
    """The format --format auto reads `path` in, by its extension; a kind of file this tool does not read
    is refused rather than tagged as lines of text."""
    extension = os.path.splitext(path)[1].lower() if path != "-" else ""
    if extension in NOT_READ:
        raise UserError(f"{path}: predict_ner.py does not read {extension} files. It reads text (one document a "
                        "line), JSON Lines (.jsonl/.json, with a 'text' or 'tokens' field), CoNLL columns "
                        "(.conll/.iob/.bio) and CoNLL-U (.conllu). Convert the file to one of these, or if it is one "
                        "of them already, say which with --format text|jsonl|conll|conllu.")
    return FORMATS.get(extension, "text")


def read_input(path):
    """The input's bytes, decoded by the caller: text-mode reading would also turn a lone "\r" inside a
    line into a line break."""
    if path == "-":
        return sys.stdin.buffer.read()
    if os.path.isdir(path):
        raise UserError(f"--input {path} is a folder; --input takes one file. Give a file in it (run once per "
                        "file to tag several).")
    if not os.path.exists(path):  # not isfile: a pipe such as /dev/stdin or <(command) is read too
        raise UserError(f"The input file {path} does not exist. Check --input.")
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as error:
        raise UserError(f"The input file {path} cannot be read ({error.strerror}). Check its permissions, or "
                        "give another --input.") from None


def looks_like_conll(lines, labels=frozenset()):
    """Whether the first lines read as a CoNLL column file, split into cells the way the training scripts
    read a .txt (nerkit.data.parse_conll: at tabs, else at spaces; one width for every token line;
    -DOCSTART- skipped), with two columns or more and either
    - a tab on every line and a single word in every first cell (prose rarely holds tabs), or
    - a tag last on every token line, on two lines or more: O, B-X, I-X, E-X, S-X, L-X, U-X or one of the
      model's `labels` (POS tags such as NN). Prose has lines of two words ("Hello world") but not every
      line ending in a tag. Lines ending in O alone ("Hello O", "Oh O") count only where the model has the
      label O or there are ALL_O_LINES of them: a tagged file can open with many sentences without an
      entity."""
    sample = lines[:CONLL_SAMPLE]
    try:
        sentences, _ = parse_conll("input", "\n".join(sample))
    except UserError:  # no token lines, or lines of different widths: not a column file
        return False
    words = [word for sentence in sentences for word in sentence["tokens"]]
    tags = [tag for sentence in sentences for tag in sentence.get("tags", ())]
    if not tags:  # one column: a word a line, or prose of one-word lines
        return False
    if all("\t" in line for line in sample if line.strip()) and all(len(word.split()) == 1 for word in words):
        return True
    if len(tags) < 2 or not all(tag == "O" or split_label(tag)[0] or tag in labels for tag in tags):
        return False
    return set(tags) != {"O"} or "O" in labels or len(tags) >= ALL_O_LINES


def saved_labels(model):
    """The label names in config.json of a model folder on disk, read before the model loads; nothing for a
    hub id or a config without them (a config.json that cannot be read is for the loading to report)."""
    try:
        id2label = saved_id2label(model)
    except (OSError, ValueError, AttributeError):  # unreadable, not JSON, not a mapping
        return frozenset()
    return frozenset(str(name) for name in (id2label or {}).values())


def looks_like_json_lines(lines):
    """Whether every line that is not blank is a JSON object with a 'text' string or a 'tokens' list: prose
    hardly is, and standard input has no extension to say it is JSON Lines."""
    filled = [line for line in lines if line.strip()]
    for line in filled:
        if not line.lstrip().startswith("{"):
            return False
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            return False
        if not (isinstance(record, dict) and (isinstance(record.get("text"), str) or "tokens" in record)):
            return False
    return bool(filled)


def input_lines(text):
    """Lines split at "\n" (and a "\r" before it) only: str.splitlines also splits at U+2028, form feeds
    and other characters that are text inside a line, even inside a JSON string."""
    lines = text.split("\n")
    if lines[-1] == "":  # the newline that ends the last line starts no new one
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def json_document(line, path, number):
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise UserError(f"{path}, line {number}: not valid JSON ({error.msg}). The input is read as JSON Lines: one "
                        "object per line, such as {\"text\": \"...\"}, not one JSON array.") from None
    # the record's other fields (an id) are kept, to be written back beside the entities: all of it must be
    # text UTF-8 can hold, which only a \u escape can break
    if "\\u" in line:
        characters_only(json.dumps(record, ensure_ascii=False), path, number)
    if isinstance(record, dict) and isinstance(record.get("text"), str):
        return record
    # a word of whitespace alone (spaCy's token for a run of spaces) is kept and tagged, as a CoNLL word of a
    # no-break space is (without a sub-token, as WordPiece leaves it, it gets O: nerkit.decoding)
    if isinstance(record, dict) and isinstance(record.get("tokens"), list) and all(
            isinstance(word, str) and word for word in record["tokens"]):
        return record
    array = " (this line is a JSON array: write one object per line instead)" if isinstance(record, list) else ""
    raise UserError(f"{path}, line {number}: expected an object with a 'text' string or a 'tokens' list of "
                    f"non-empty strings{array}.")


def characters_only(text, path, number):
    """`text` from a JSON line, which may hold an escape such as \\ud800 that is half of a character (an
    unpaired surrogate): no UTF-8 text can hold it, and the tokenizer (or the output, for another field) would
    fail on it after the model loaded."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise UserError(f"{path}, line {number}: the JSON string holds {error.object[error.start]!r}, half of a "
                        "character (an unpaired surrogate escape). Write the whole character, or its pair of "
                        "escapes.") from None
    return text


def split_words(document, how):
    """(words, character offsets) of a document; pre-split tokens are joined by single spaces."""
    if "tokens" in document:
        offsets, position = [], 0
        for word in document["tokens"]:
            offsets.append((position, position + len(word)))
            position += len(word) + 1
        document["text"] = " ".join(document["tokens"])
        return list(document["tokens"]), offsets
    pattern = re.compile(r"\S+") if how == "whitespace" else WORD
    found = list(pattern.finditer(document["text"]))
    return [match.group() for match in found], [match.span() for match in found]


class Tagger:
    """A model ready to tag lists of words: windows, batches sorted by length, word decoding."""

    def __init__(self, model_name, max_length, stride, batch_size, decoding, int8=False, trust_remote_code=False):
        """`batch_size`: windows per batch, or None for the device's default (nerkit.speed.inference_batch_size);
        `trust_remote_code`: whether code that comes with the model may run (never asked on the terminal, whose
        standard input and output may be the documents and the entities)."""
        from transformers import AutoConfig, AutoModelForTokenClassification

        from nerkit.modeling import check_model_folder
        from nerkit.schemes import model_scheme
        from nerkit.speed import (check_bf16_runs, check_int8_possible, fresh_accelerator,
                                  inference_batch_size, inference_precision, int8_linear_layers, log_precision,
                                  prepare_device, run_device_type)

        if int8:
            check_int8_possible()
        check_model_folder(model_name, "--model")
        code = {"trust_remote_code": trust_remote_code}
        self.tokenizer = load_fast_tokenizer(model_name, code, "--model")
        config = load_pretrained(AutoConfig, model_name, **code)
        check_trained_head(config, model_name)
        # the window is checked before any weights load
        self.settings = EncodingSettings(window_length(self.tokenizer, config, max_length, "--max_length"), stride)
        model, loading = load_pretrained(AutoModelForTokenClassification, model_name, config=config,
                                         output_loading_info=True, **code)
        if loading["missing_keys"]:
            # a base or masked-LM checkpoint that check_trained_head could not tell from its config: its token
            # classifier would be random, its labels LABEL_0, ...
            raise UserError(f"'{model_name}' is not a trained token-classification model: it has no weights for "
                            f"{', '.join(sorted(loading['missing_keys'])[:4])}. Fine-tune it first (run_ner.py) and "
                            "tag with the folder that writes.")
        self.label_list = [model.config.id2label[i] for i in range(model.config.num_labels)]
        self.scheme = model_scheme(model.config)  # the scheme it was trained in, so Viterbi keeps to it
        model.eval()
        if int8:  # instead of the automatic precision: int8 linear layers, fp32 around them
            self.accelerator = fresh_accelerator(cpu=True)
            model = int8_linear_layers(model)
        else:
            # a window of the longest length the texts may fill, for a model that fails in bf16 on long inputs
            longest = self.tokenizer(["a"] * self.settings.max_length, is_split_into_words=True, truncation=True,
                                     max_length=self.settings.max_length)["input_ids"]
            precision = check_bf16_runs(inference_precision(), model, longest, run_device_type())
            self.accelerator = fresh_accelerator(mixed_precision=precision.mixed_precision)
            log_precision(self.accelerator, precision, "Tagging")
        prepare_device(self.accelerator.device.type)
        self.model = self.accelerator.prepare(model)
        self.batch_size = batch_size or inference_batch_size(self.accelerator.device.type,
                                                             self.accelerator.mixed_precision)
        self.decoding = decoding

    def tag(self, words):
        """(labels, probabilities) per document, one per word."""
        from torch.utils.data import DataLoader
        from tqdm.auto import tqdm
        from transformers import DataCollatorForTokenClassification

        from nerkit.decoding import WordDecoder, collect_words, forward_batches
        from nerkit.progress import interactive
        from nerkit.workflow import inference_batching, longest_first

        if not words:
            return [], []
        empty = [i for i, doc in enumerate(words) if not doc]
        split = Split("input", "input", [doc or ["."] for doc in words], None, [""] * len(words))
        features = longest_first(encode_split(split, self.tokenizer, {}, self.settings))
        loader = DataLoader(features.remove_columns(DECODER_COLUMNS),
                            collate_fn=DataCollatorForTokenClassification(self.tokenizer),
                            **inference_batching(features, self.batch_size, self.accelerator.num_processes))
        loader = self.accelerator.prepare(loader)
        batches = tqdm(forward_batches(self.model, loader), total=len(loader),
                       disable=len(loader) < 20 or not interactive(), desc="Tagging")
        decoder = WordDecoder(features, [len(doc) for doc in split.tokens], self.decoding)
        collect_words(batches, self.accelerator, decoder)
        tags, probabilities = decoder.result(self.label_list, outside_label(self.label_list), "input", self.scheme)
        for i in empty:
            tags[i], probabilities[i] = [], []
        return tags, probabilities


def check_trained_head(config, model_name):
    """Refuse, from config.json alone and so before the weights load, a checkpoint saved without a
    token-classification head (a base or masked-LM model): its classifier would be random and its labels
    LABEL_0, ... A config that names no architecture, or that names labels, is left to the check of the
    loaded weights (the Tagger's missing keys)."""
    architectures = getattr(config, "architectures", None) or []
    if architectures and model_label_list(config) is None and not any(
            name.endswith("ForTokenClassification") for name in architectures):
        raise UserError(f"'{model_name}' is not a trained token-classification model: its config.json names the "
                        f"architecture {', '.join(architectures)} and no labels. Fine-tune it first (run_ner.py) and "
                        "tag with the folder that writes.")


def load_pretrained(auto_class, name, **kwargs):
    from nerkit.modeling import broken_weights, without_load_report

    try:
        with without_load_report():  # a table in terminal colours; the Tagger says what matters plainly
            return auto_class.from_pretrained(name, **kwargs)
    except broken_weights() as error:
        raise remote_code_refusal(name, error) or UserError(
            f"Could not load a token-classification model from '{name}': {str(error).rstrip('.')}."
            f"{offline_note(name)}") from None


def document_record(document, words, offsets, tags, probabilities, with_words):
    """One output line: the document's entities with character offsets (and its words), after the fields of
    a JSON Lines input's record other than its text or tokens."""
    text = document["text"]
    kept = {key: value for key, value in document.items() if key not in ("text", "tokens", *OUTPUT_FIELDS)}
    entities = []
    for kind, first, last in entity_spans(tags):
        start, end = offsets[first][0], offsets[last][1]
        scored = [p for p in probabilities[first:last + 1] if p > 0]  # 0: no sub-token, labelled by its neighbours
        score = sum(scored) / len(scored) if scored else 0.0
        entities.append({"type": kind, "start": start, "end": end, "text": text[start:end], "score": round(score, 6)})
    record = {**kept, "text": text, "entities": entities}
    if with_words:
        record.update(words=words, labels=tags, scores=[round(p, 6) for p in probabilities])
    return record


def write_records(records, path):
    """JSON Lines in UTF-8, whatever the console's encoding (nerkit.outputs.json_lines)."""
    text = json_lines(records)
    if path == "-":
        try:
            descriptor = sys.stdout.fileno()
        except (AttributeError, ValueError):  # io.UnsupportedOperation too: a stream in memory (captured)
            descriptor = None
        try:
            if descriptor is None:
                sys.stdout.write(text)
            else:  # every byte or an error: a buffered write on a disk that fills part way returns short, silently
                write_to_descriptor(descriptor, text)
        except BrokenPipeError:  # the reader has had enough (| head): not an error, and nothing more goes there
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return
        except OSError as error:
            raise UserError(f"Standard output could not be written ({error.strerror or error}), so the output may "
                            "be cut short. Give --output FILE on a disk with room.") from None
        return
    try:
        write_atomic(path, text)
    except OSError as error:
        raise UserError(f"--output {path} could not be written ({error.strerror or error}); any file that was "
                        "there is kept as it was. Give another --output, or leave it out to write to standard "
                        "output.") from None


if __name__ == "__main__":
    exit_on_user_error(lambda: main(parse_options(sys.argv[1:])))
    end_of_script()

"""Files the runs write. Each is written to a temporary name beside it and renamed, so a run killed while
writing never leaves a truncated file that looks finished."""

import fnmatch
import json
import logging
import os
import re
import shutil
import stat
import sys
import uuid

from .errors import UserError
from .schemes import entity_spans

logger = logging.getLogger(__name__)
DESCRIPTOR_PATH = re.compile(r"/dev/(?:(?P<name>stdin|stdout|stderr)|fd/(?P<fd>\d+))"
                             r"|/proc/(?P<pid>self|thread-self|\d+)/fd/(?P<number>\d+)")
RESULT_FILES = tuple(f"{name}_results.json" for name in ("train", "eval", "predict", "all"))
# The reports and predictions a run writes beside its results (nerkit.report, write_predictions): left from an
# earlier run, they would pass for this run's where this one writes none (no --do_predict, no matplotlib).
REPORT_FILES = ("predictions.txt", "predictions.jsonl", "errors_*.json", "errors*.png", "confusion_matrix.png",
                "learning_curves.png", ".tmp-*")  # the last: writes a killed process left unfinished


def write_atomic(path, text):
    """Write `text` to `path` whole or not at all (see `write_together`)."""
    write_together({path: text})


def write_together(files):
    """Write each {path: text} whole or not at all, and all of them or none: each is written to a temporary
    file beside its path first, and they replace their paths only once every one is written, so files that
    belong together (predictions.txt and predictions.jsonl) never come from two runs. A file gets the mode
    open() would give it: the existing file's, else 0666 less the umask. A link is written through to its
    target (replacing it would leave the target as it was); what is not a regular file (a pipe, /dev/null)
    is written to directly, as nothing can be put in its place; and a descriptor this process has open
    (/dev/stdout, /dev/fd/N, /proc/self/fd/N) is written to as it is open, so `>> log` appends (opened again
    by name it would be emptied, and renamed over, replaced)."""
    staged = []
    try:
        for path, text in files.items():
            temporary = staged_copy(path, text)
            if temporary:
                staged.append(temporary)
        for temporary, path in staged:
            os.replace(temporary, path)
    except BaseException:
        for temporary, _ in staged:
            if os.path.exists(temporary):
                os.remove(temporary)
        raise


TEMPORARY_PREFIX = ".tmp-"  # what a write in progress is called beside its file (a killed process leaves it)


def temporary_beside(path):
    """A new name beside `path` for what will replace it."""
    return os.path.join(os.path.dirname(path), f"{TEMPORARY_PREFIX}{uuid.uuid4().hex[:12]}-{os.path.basename(path)}")


def staged_copy(path, text):
    """(temporary file holding `text`, the real path it is to replace); None where `text` was written to
    `path` directly (a descriptor, a pipe). A failure removes the temporary file."""
    descriptor = open_descriptor(path)
    if descriptor is not None:
        write_to_descriptor(descriptor, text)
        return None
    path = os.path.realpath(path)
    if os.path.exists(path) and not os.path.isfile(path):
        with open(path, "w", encoding="utf-8") as stream:
            stream.write(text)
        return None
    os.makedirs(os.path.dirname(path), exist_ok=True)
    temporary = temporary_beside(path)
    # Not tempfile.mkstemp: its files are 0600 whatever the umask. O_EXCL never takes over an existing file.
    handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            if os.path.isfile(path):
                os.chmod(temporary, stat.S_IMODE(os.stat(path).st_mode))
            stream.write(text)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
    return temporary, path


def open_descriptor(path):
    """The file descriptor of this process that `path` names (/dev/stdout, /dev/stderr, /dev/fd/N,
    /proc/self/fd/N, /proc/<this process>/fd/N), when it is open; else None."""
    match = DESCRIPTOR_PATH.fullmatch(os.path.normpath(path))
    if match is None or match["pid"] not in (None, "self", "thread-self", str(os.getpid())):
        return None
    names = {"stdin": 0, "stdout": 1, "stderr": 2}
    descriptor = names[match["name"]] if match["name"] else int(match["fd"] or match["number"])
    try:
        os.fstat(descriptor)
    except OSError:  # not open: left to open() by name, which says why
        return None
    return descriptor


def write_to_descriptor(descriptor, text):
    """Write all of `text` in UTF-8 to an open descriptor, after what Python's own streams hold for it."""
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream.fileno() == descriptor:
                stream.flush()
        except (AttributeError, OSError, ValueError):  # no stream, or one without a descriptor (captured)
            pass
    data = memoryview(text.encode("utf-8"))
    while data:  # a pipe may take part of it at a time
        data = data[os.write(descriptor, data):]


def write_json(path, value):
    write_atomic(path, json_text(value))


def json_text(value):
    return json.dumps(value, indent=4, sort_keys=True, ensure_ascii=False) + "\n"


def predictions_text(tags_per_example):
    """predictions.txt: one line per example, one label per input word, separated by single spaces."""
    return "".join(" ".join(tags) + "\n" for tags in tags_per_example)


def prediction_record(tokens, predicted, scores, gold=None):
    """One line of predictions.jsonl: the words, gold labels when known, predicted labels with the
    probability of each, and the predicted entities as word spans (`end` exclusive)."""
    record = {"tokens": tokens}
    if gold is not None:
        record["labels"] = gold
    record["predictions"] = predicted
    record["scores"] = [round(score, 6) for score in scores]
    record["entities"] = [
        {"type": kind, "start": start, "end": end + 1, "text": " ".join(tokens[start:end + 1])}
        for kind, start, end in entity_spans(predicted)
    ]
    return record


def predictions_jsonl(tokens, predicted, scores, gold=None):
    """predictions.jsonl: one JSON object per example (see `prediction_record`)."""
    gold = gold or [None] * len(tokens)
    return json_lines(prediction_record(*fields) for fields in zip(tokens, predicted, scores, gold))


def json_lines(records):
    """JSON Lines text, characters as they are, except U+2028, U+2029 and U+0085, written as escapes: readers
    that split lines with str.splitlines would break a record at them."""
    text = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029").replace("\x85", "\\u0085")


def write_predictions(output_dir, split, tags, probabilities):
    """predictions.txt and predictions.jsonl for a predicted split, both or neither."""
    write_together(prediction_files(output_dir, split, tags, probabilities))


def prediction_files(output_dir, split, tags, probabilities):
    return {os.path.join(output_dir, "predictions.txt"): predictions_text(tags),
            os.path.join(output_dir, "predictions.jsonl"): predictions_jsonl(split.tokens, tags, probabilities,
                                                                             split.tags)}


def save_results(output_dir, name, metrics):
    """{name}_results.json, merged into all_results.json (what `Trainer.save_metrics` writes), both or neither."""
    write_together(result_files(output_dir, name, metrics))


def result_files(output_dir, name, metrics):
    merged_path = os.path.join(output_dir, "all_results.json")
    merged = {}
    if os.path.isfile(merged_path):
        with open(merged_path, encoding="utf-8") as handle:
            merged = json.load(handle)
    merged.update(metrics)
    return {os.path.join(output_dir, f"{name}_results.json"): json_text(metrics), merged_path: json_text(merged)}


def prediction_metrics(scores, seconds, examples, steps):
    """predict_results.json's keys: the test split's scores (none for an unlabelled one) and timing."""
    return {f"predict_{key}": value for key, value in scores.items()} | timing_metrics("predict", seconds, examples,
                                                                                         steps)


def timing_metrics(prefix, seconds, examples, steps):
    """The run-time keys the Trainer reports ({prefix}_runtime, _samples, _samples_per_second,
    _steps_per_second), so both scripts write the same result keys."""
    seconds = max(seconds, 1e-9)
    return {f"{prefix}_runtime": round(seconds, 4), f"{prefix}_samples": examples,
            f"{prefix}_samples_per_second": round(examples / seconds, 3),
            f"{prefix}_steps_per_second": round(steps / seconds, 3)}


def clear_earlier_run(output_dir, is_checkpoint):
    """A fresh start (--overwrite_output_dir) drops what the run that was there left to be picked up: its
    result files and trainer_state.json, which would mark a new run killed midway as finished (the results
    also leaving stale keys in all_results.json), its reports and predictions, which would pass for this
    run's, and its checkpoint folders (names for which `is_checkpoint` is true), which a resume would take
    for this run's and checkpoint rotation would keep over this run's newer ones."""
    if not os.path.isdir(output_dir):
        return
    removed = []
    for name in sorted(os.listdir(output_dir)):
        path = os.path.join(output_dir, name)
        earlier = name in RESULT_FILES + ("trainer_state.json",) or \
            any(fnmatch.fnmatchcase(name, pattern) for pattern in REPORT_FILES)
        if earlier and os.path.isfile(path):
            os.remove(path)
            removed.append(name)
        elif is_checkpoint(name) and os.path.isdir(path):
            shutil.rmtree(path)
            removed.append(name + "/")
    if removed:
        logger.info("Starting afresh: removed the earlier run's %s from %s.", ", ".join(removed), output_dir)


def check_model_survives_clearing(model_path, output_dir, overwrite, is_checkpoint):
    """Refuse a fresh start (`overwrite`) whose model to train from is one of the checkpoint folders in
    `output_dir` that `clear_earlier_run` removes: the run would delete the model it fine-tunes."""
    if not (overwrite and model_path and os.path.isdir(model_path) and os.path.isdir(output_dir)):
        return
    inside = os.path.relpath(os.path.realpath(model_path), os.path.realpath(output_dir))
    folder = inside.split(os.sep)[0]
    if folder in (os.curdir, os.pardir) or not is_checkpoint(folder):
        return
    raise UserError(f"--model_name_or_path {model_path} is the checkpoint {folder} in --output_dir {output_dir}, and "
                    "--overwrite_output_dir removes the earlier run's checkpoints from that folder before training, "
                    "so the model would be deleted. Give another --output_dir, or copy the checkpoint out of "
                    f"{output_dir} first and train from the copy.")

"""Files the runs write. Each is written to a temporary name beside it and renamed, so a run killed while
writing never leaves a truncated file that looks finished."""

import json
import os
import tempfile

from seqeval.metrics.sequence_labeling import get_entities


def write_atomic(path, text):
    """Write `text` to `path` whole or not at all."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def write_json(path, value):
    write_atomic(path, json.dumps(value, indent=4, sort_keys=True, ensure_ascii=False) + "\n")


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
        for kind, start, end in get_entities(predicted)
    ]
    return record


def predictions_jsonl(tokens, predicted, scores, gold=None):
    """predictions.jsonl: one JSON object per example (see `prediction_record`)."""
    gold = gold or [None] * len(tokens)
    return "".join(json.dumps(prediction_record(*fields), ensure_ascii=False) + "\n"
                   for fields in zip(tokens, predicted, scores, gold))

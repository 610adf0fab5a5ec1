"""Files the runs write. Each is written to a temporary name beside it and renamed, so a run killed while
writing never leaves a truncated file that looks finished."""

import json
import os
import tempfile


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

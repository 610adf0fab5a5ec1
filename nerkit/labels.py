"""The label list: where it comes from, how it meets a pretrained head, and the inside label of each tag."""

import logging
import re

from .errors import UserError

logger = logging.getLogger(__name__)

# transformers names the labels of a config nobody set LABEL_0, LABEL_1, ...
PLACEHOLDER_LABEL = re.compile(r"^LABEL_\d+$")
# Prefixes that open an entity; the later sub-tokens of such a word continue it with I-X.
OPENING_PREFIXES = ("B-", "S-", "U-")


def data_label_list(splits, declared=None):
    """The `ClassLabel` (or --label_list) names when the data declares them, else the sorted union of the
    tags of every split given (each whole, before --max_*_samples): a tag seen only in validation or test
    must not crash anything."""
    seen = set()
    for split in splits.values():
        seen.update(split.tag_set or ())
    if declared:
        unknown = sorted(seen - set(declared))
        if unknown:
            raise UserError(f"The data uses tags that its label names (--label_list, or a dataset's ClassLabel "
                            f"names) do not list: {', '.join(unknown)}. Add them to --label_list, or to the "
                            "dataset's ClassLabel.")
        return list(declared)
    if not seen:
        raise UserError("No split has tags, so there is no label list. Give a labelled --train_file or "
                        "--validation_file, or a fine-tuned model whose config names its labels.")
    return sorted(seen)


def model_label_list(config):
    """The label names a pretrained config carries, in id order; None when they are placeholders."""
    id2label = getattr(config, "id2label", None) or {}
    names = [id2label[i] for i in sorted(id2label)]
    if not names or all(PLACEHOLDER_LABEL.match(str(name)) for name in names):
        return None
    return names


def one_word(label):
    """Whether a label (a data tag, a model's label name) can stand in predictions.txt, which separates a
    line's labels by single spaces: not empty, no whitespace in or around it."""
    return bool(label) and label == label.strip() and len(label.split()) == 1


def saved_config(folder):
    """The config.json of a folder on disk as a dict, read as JSON before anything loads; None where the folder
    has no config.json. A config.json that cannot be read raises (OSError, ValueError)."""
    import json
    import os

    path = os.path.join(folder, "config.json")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def saved_id2label(folder):
    """{id: label name} in the config.json of a folder on disk (see `saved_config`); None without one."""
    config = saved_config(folder)
    if config is None:
        return None
    return {int(key): name for key, name in (config.get("id2label") or {}).items()}


def check_model_labels(model_labels, model_name):
    """A pretrained head's label names become tags in predictions.txt (see `one_word`, the rule
    nerkit.data.check_tag keeps for the data's tags): a name that is empty or has whitespace in or around it
    would not line up with the words."""
    for label in model_labels:
        if not one_word(label):
            joined = "_".join(label.split()) or "O"
            raise UserError(f"The model {model_name} names a label {label!r} in its config.json (id2label), with "
                            "whitespace in or around it: predictions.txt separates labels by single spaces, so its "
                            f"lines would not line up with their words. Rename the label in config.json (id2label and "
                            f"label2id), for example to {joined!r}.")


def choose_label_list(data_labels, model_labels, ignore_mismatched_sizes, model_name, training=True):
    """Reconcile the data's labels with a pretrained head. Returns (label list, whether the head is reused).

    A head that knows every label of the data is reused in its own order, so its weights keep their
    meaning. Otherwise, when training, the head must be trained anew, which the user has to ask for; a run
    that only evaluates or predicts keeps the head, and the tags it cannot predict count as missed.
    """
    if model_labels is None:
        return data_labels, False
    if data_labels is None or set(data_labels) <= set(model_labels):
        if data_labels is not None and set(data_labels) != set(model_labels):
            logger.info("The model knows labels the data does not use; keeping all %d of them.", len(model_labels))
        return list(model_labels), True
    missing = sorted(set(data_labels) - set(model_labels))
    if not training:
        if ignore_mismatched_sizes:
            raise UserError(f"--ignore_mismatched_sizes would replace the head of {model_name} with a new one, but "
                            "this run does not train it (no --do_train), so it would predict at random. Drop the "
                            "flag to score the model as it is, or add --do_train with training data.")
        logger.warning("The model %s was fine-tuned for the labels %s; the data also has %s, which it cannot "
                       "predict: they count as missed entities in the scores and are left out of the loss.",
                       model_name, ", ".join(model_labels), ", ".join(missing))
        return list(model_labels), True
    if not ignore_mismatched_sizes:
        raise UserError(
            f"The model {model_name} was fine-tuned for the labels {', '.join(model_labels)}, but the data also "
            f"has {', '.join(missing)}. Its classification head cannot predict these. Add "
            "--ignore_mismatched_sizes to train a new head for the data's labels, or map the data's tags to the "
            "model's labels."
        )
    logger.warning("The model's head was trained for other labels (%s); a new head is trained for %s.",
                   ", ".join(model_labels), ", ".join(data_labels))
    return data_labels, False


def inside_label_ids(label_list):
    """For each label id, the id later sub-tokens of a word get with --label_all_tokens: B-X, S-X and U-X
    become I-X when the list has it, so no extra entity appears; every other label stays itself."""
    index = {label: i for i, label in enumerate(label_list)}
    inside = []
    for i, label in enumerate(label_list):
        prefix = label[:2]
        inside.append(index.get("I-" + label[2:], i) if prefix in OPENING_PREFIXES else i)
    return inside


def outside_label(label_list):
    """The label for a word the model never saw (no sub-tokens): 'O' when there is one, else None, which
    leaves the choice to the decoding (nerkit.decoding.WordCollector.result)."""
    return "O" if "O" in label_list else None


def check_checkpoint_labels(checkpoint, label_list):
    """Refuse, before any weights load, to resume training from a checkpoint whose head was trained for
    other labels than this run's (the data changed since): loading its state would fail on the classifier's
    shape, or worse, give its rows other meanings. A checkpoint without a config.json (the Accelerate loop's)
    is left to the loading."""
    from types import SimpleNamespace

    id2label = saved_id2label(checkpoint) if checkpoint else None
    if id2label is None:
        return
    names = [id2label[key] for key in sorted(id2label)]
    named = model_label_list(SimpleNamespace(id2label=id2label))  # None for placeholders: only the count counts
    if names and (len(names) != len(label_list) if named is None else named != list(label_list)):
        raise UserError(f"The checkpoint {checkpoint} was trained for {len(names)} labels ({', '.join(names[:8])}"
                        f"{', ...' if len(names) > 8 else ''}), but this run's data give {len(label_list)} "
                        f"({', '.join(label_list[:8])}{', ...' if len(label_list) > 8 else ''}), so it cannot be "
                        "resumed. Resume with the data it was trained on, or train afresh: leave out "
                        "--resume_from_checkpoint, with --overwrite_output_dir where --output_dir holds the "
                        "earlier run.")

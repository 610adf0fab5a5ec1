"""Entity-level precision, recall and F1 and word accuracy from the `seqeval` package, in-process.

The result keys are the ones the upstream scripts report through `evaluate.load("seqeval")`, computed the
same way, so numbers compare; no hub download is ever needed.
"""

import warnings

from seqeval.metrics import accuracy_score, classification_report
from seqeval.scheme import BILOU, IOB2, IOBES

from .errors import UserError

SCHEMES = {"IOB2": IOB2, "IOBES": IOBES, "BILOU": BILOU}


def detect_scheme(label_list):
    """The tagging scheme the labels follow, by their prefixes: IOB2, IOBES or BILOU (None if none fits)."""
    prefixes = {label.split("-", 1)[0] for label in label_list if "-" in label}
    others = [label for label in label_list if "-" not in label]
    if any(label != "O" for label in others):
        return None
    for name, allowed in (("IOB2", {"B", "I"}), ("IOBES", {"B", "I", "E", "S"}), ("BILOU", {"B", "I", "L", "U"})):
        if prefixes <= allowed:
            return name
    return None


def strict_scheme(label_list, mode):
    """The seqeval scheme class that `mode` "strict" checks entities against (None in the default mode), so
    the scores and the error analysis read the same entities."""
    if mode != "strict":
        return None
    scheme = detect_scheme(label_list)
    if scheme is None:
        raise UserError(f"--metric_mode strict needs IOB2, IOBES or BILOU labels; these labels fit none: "
                        f"{', '.join(label_list)}. Use --metric_mode default.")
    return SCHEMES[scheme]


def entity_scores(gold, predicted, label_list, mode="default", entity_level=False):
    """Scores of word-level tag sequences, with the upstream key names.

    Always: precision, recall, f1, accuracy (overall). With `entity_level` also <TYPE>_precision/recall/f1/
    number and overall_precision/recall/f1/accuracy. `mode="strict"` checks entities against the detected
    scheme (seqeval strict mode); the default is seqeval's lenient conlleval-style matching.
    """
    scheme = strict_scheme(label_list, mode)
    options = {} if scheme is None else {"mode": "strict", "scheme": scheme}
    with warnings.catch_warnings():  # numpy warns about the macro average when there is no entity at all
        warnings.simplefilter("ignore", RuntimeWarning)
        report = classification_report(gold, predicted, output_dict=True, zero_division=0, **options)
    overall = report.pop("micro avg", {"precision": 0.0, "recall": 0.0, "f1-score": 0.0})
    report.pop("macro avg", None)
    report.pop("weighted avg", None)
    scores = {
        "precision": float(overall["precision"]),
        "recall": float(overall["recall"]),
        "f1": float(overall["f1-score"]),
        "accuracy": float(accuracy_score(gold, predicted)),
    }
    if entity_level:
        for entity_type, values in sorted(report.items()):
            scores[f"{entity_type}_precision"] = float(values["precision"])
            scores[f"{entity_type}_recall"] = float(values["recall"])
            scores[f"{entity_type}_f1"] = float(values["f1-score"])
            scores[f"{entity_type}_number"] = int(values["support"])
        for key in ("precision", "recall", "f1", "accuracy"):
            scores[f"overall_{key}"] = scores[key]
    return scores


class EntityScorer:
    """`compute_metrics` for the Trainer: decodes words from reduced predictions and scores them.

    Works with whole arrays (the default) and with `--batch_eval_metrics` (one batch per call, the result on
    the last); either way only word-level tags are kept, never logits.
    """

    def __init__(self, decoder, split, label_list, fallback_label, mode, entity_level):
        self.decoder, self.split = decoder, split
        self.label_list, self.fallback_label = label_list, fallback_label
        self.mode, self.entity_level = mode, entity_level
        self.last_tags = None  # the word labels of the latest evaluation, for the reports

    def __call__(self, eval_prediction, compute_result=None):
        self.decoder.add_batch(eval_prediction.predictions)
        if compute_result is False:
            return {}
        self.last_tags, _ = self.decoder.result(self.label_list, self.fallback_label, self.split.name)
        self.decoder.reset()
        return entity_scores(self.split.tags, self.last_tags, self.label_list, self.mode, self.entity_level)

"""Entity-level precision, recall and F1 and word accuracy from the `seqeval` package, in-process.

The result keys are the ones the upstream scripts report through `evaluate.load("seqeval")`, computed the
same way, so numbers compare; no hub download is ever needed.
"""

import warnings

from seqeval.metrics import accuracy_score, classification_report
from seqeval.scheme import BILOU, IOB1, IOB2, IOBES, IOE1, IOE2

from .errors import UserError
from .schemes import PREFIXES, ioe1_as_ioe2, iobes_spelling, outside_scheme, scheme_from_names

# The schemes seqeval's strict mode reads entities by; "none" (POS tags) has no entities to check.
STRICT_SCHEMES = {"IOB1": IOB1, "IOB2": IOB2, "IOBES": IOBES, "BILOU": BILOU, "IOE1": IOE1, "IOE2": IOE2}


def check_strict_mode(label_list, scheme, source="the label names"):
    """A `UserError` when seqeval's strict mode cannot read these labels in `scheme` (decided from
    `source`): labels without a scheme, or labels whose prefix the scheme does not have (seqeval stops on
    them)."""
    if scheme not in STRICT_SCHEMES:
        raise UserError(f"--metric_mode strict checks entities against a tagging scheme, but these labels follow "
                        f"none (decided from {source}): {', '.join(label_list)}. Use --metric_mode default.")
    outside = outside_scheme(label_list, scheme)
    if outside:
        prefixes = "/".join(f"{prefix}-" for prefix in PREFIXES[scheme])
        raise UserError(f"--metric_mode strict reads entities in the {scheme} scheme (decided from {source}), "
                        f"where every label is O or starts with {prefixes}; seqeval cannot read "
                        f"{', '.join(outside)} in it. Use --metric_mode default, or retag the data so that "
                        "every tag follows one scheme.")


def strict_scheme(label_list, mode, scheme=None):
    """The scheme that `mode` "strict" checks entities against (None in the default mode): the run's
    `scheme`, else the one the label names suggest. The scores and the error analysis both read entities
    through `strict_reading`, so they agree."""
    if mode != "strict":
        return None
    scheme = scheme or scheme_from_names(label_list)
    check_strict_mode(label_list, scheme)
    return scheme


def strict_reading(tag_lists, scheme):
    """(tag lists, seqeval scheme class) that seqeval's strict mode reads the entities of `tag_lists` in
    `scheme` from. IOE1 goes to seqeval as IOE2 (nerkit.schemes.ioe1_as_ioe2): its own IOE1 reader drops a
    valid one-word entity E-X at the start of a sentence or after O."""
    if scheme == "IOE1":
        return [ioe1_as_ioe2(tags) for tags in tag_lists], IOE2
    return tag_lists, STRICT_SCHEMES[scheme]


def entity_type(label):
    """The entity type seqeval names a label's per-type scores by: the part after the one-letter prefix
    and its dash ("B-PER" -> "PER"); a label without one loses its first letter ("DT" -> "T"), as seqeval
    reads it. None for "O"."""
    return None if label == "O" else label[1:].split("-", 1)[-1] or "_"


def entity_scores(gold, predicted, label_list, mode="default", entity_level=False, scheme=None):
    """Scores of word-level tag sequences, with the upstream key names.

    Always: precision, recall, f1, accuracy (overall). With `entity_level` also <TYPE>_precision/recall/f1/
    number and overall_precision/recall/f1/accuracy. `mode="strict"` checks entities against `scheme`, the
    run's tagging scheme (seqeval strict mode; the label names decide when it is not given); the default is
    seqeval's lenient conlleval-style matching, which reads IOB1 and IOB2 alike (and BILOU as IOBES).
    """
    scheme = strict_scheme(label_list, mode, scheme)
    if scheme is None:  # the lenient reader gets BILOU tags in the letters it knows (nerkit.schemes)
        read_gold, read_predicted = ([iobes_spelling(tags) for tags in tag_lists] for tag_lists in (gold, predicted))
        options = {}
    else:
        (read_gold, seqeval_scheme), (read_predicted, _) = (strict_reading(tag_lists, scheme)
                                                            for tag_lists in (gold, predicted))
        options = {"mode": "strict", "scheme": seqeval_scheme}
    with warnings.catch_warnings():  # numpy warns about the macro average when there is no entity at all
        warnings.simplefilter("ignore", RuntimeWarning)
        report = classification_report(read_gold, read_predicted, output_dict=True, zero_division=0, **options)
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

    Works with `batch_eval_metrics` (one batch per call, the result on the last: what run_ner.py turns on
    in one process) and with whole arrays (the gathered predictions of several processes); either way only
    word-level tags are kept, never logits.
    """

    def __init__(self, decoder, split, label_list, fallback_label, mode, entity_level, scheme):
        self.decoder, self.split = decoder, split
        self.label_list, self.fallback_label, self.scheme = label_list, fallback_label, scheme
        self.mode, self.entity_level = mode, entity_level
        self.last_tags = None  # the word labels of the latest evaluation, for the reports

    def __call__(self, eval_prediction, compute_result=None):
        self.decoder.add_batch(eval_prediction.predictions)
        if compute_result is False:
            return {}
        self.last_tags, _ = self.decoder.result(self.label_list, self.fallback_label, self.split.name, self.scheme)
        self.decoder.reset()
        return entity_scores(self.split.tags, self.last_tags, self.label_list, self.mode, self.entity_level,
                             self.scheme)

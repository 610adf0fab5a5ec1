"""Valid label sequences: the most probable word labels that obey the tagging scheme.

Argmax decoding picks each word's best label on its own and can produce I-X after O or after B-Y, which
seqeval then reads in its own way. Viterbi decoding picks the sequence with the highest total
log-probability among those the scheme allows (IOB2: I-X only after B-X or I-X; IOBES and BILOU also:
an entity opened by B-X must continue with I-X or close with E-X/L-X, and single words are S-X/U-X).
Labels without a scheme (POS tags) allow every sequence, so Viterbi then equals argmax.
"""

import numpy as np

from .metrics import detect_scheme

CLOSING = {"IOBES": "E", "BILOU": "L"}


def transition_rules(label_list):
    """(allowed[i, j]: label j may follow label i, allowed_first[j], allowed_last[i]) for the scheme."""
    count = len(label_list)
    scheme = detect_scheme(label_list)
    allowed = np.ones((count, count), dtype=bool)
    first, last = np.ones(count, dtype=bool), np.ones(count, dtype=bool)
    if scheme is None:
        return allowed, first, last
    parts = [label.split("-", 1) if "-" in label else ("O", None) for label in label_list]
    closing = CLOSING.get(scheme)
    for j, (prefix, kind) in enumerate(parts):
        continues = prefix == "I" or prefix == closing
        if continues:
            first[j] = False
            for i, (before, before_kind) in enumerate(parts):
                allowed[i, j] = before in ("B", "I") and before_kind == kind
    if closing:  # an open entity must continue or close
        for i, (prefix, kind) in enumerate(parts):
            if prefix in ("B", "I"):
                last[i] = False
                for j, (after, after_kind) in enumerate(parts):
                    allowed[i, j] = after in ("I", closing) and after_kind == kind
    return allowed, first, last


def viterbi_path(log_probs, allowed, first, last):
    """The label ids of the best allowed sequence for one example's [words, labels] log-probabilities."""
    words = len(log_probs)
    if words == 0:
        return []
    forbidden = -1e9
    transition = np.where(allowed, 0.0, forbidden)
    score = log_probs[0] + np.where(first, 0.0, forbidden)
    back = np.zeros((words, log_probs.shape[1]), dtype=np.int64)
    for position in range(1, words):
        candidates = score[:, None] + transition
        back[position] = candidates.argmax(axis=0)
        score = candidates.max(axis=0) + log_probs[position]
    score = score + np.where(last, 0.0, forbidden)
    path = [int(score.argmax())]
    for position in range(words - 1, 0, -1):
        path.append(int(back[position, path[-1]]))
    return path[::-1]

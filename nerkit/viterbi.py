"""Valid label sequences: the most probable word labels that obey the tagging scheme.

Argmax decoding picks each word's best label on its own and can produce sequences the data's scheme never
has (I-X after O in IOB2), which seqeval then reads in its own way. Viterbi decoding picks the sequence
with the highest total log-probability among those the scheme allows (see nerkit.schemes for the scheme
of each run and its rules). Labels without a scheme (POS tags) allow every sequence, so Viterbi then
equals argmax.
"""

import numpy as np


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

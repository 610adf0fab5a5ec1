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


def viterbi_paths(examples, allowed, first, last, chunk=256):
    """`viterbi_path` for many examples at once ([words, labels] log-probabilities each), the same label ids
    with the same arithmetic, but one step per word position for a whole chunk of examples of similar
    length instead of one per word of each example."""
    paths = [[] for _ in examples]
    order = sorted((i for i, log_probs in enumerate(examples) if len(log_probs)), key=lambda i: len(examples[i]))
    transition = np.where(allowed, 0.0, -1e9)
    for start in range(0, len(order), chunk):
        members = order[start:start + chunk]
        lengths = np.array([len(examples[i]) for i in members])
        stacked = np.zeros((len(members), lengths.max(), len(allowed)), dtype=examples[members[0]].dtype)
        for row, i in enumerate(members):
            stacked[row, :lengths[row]] = examples[i]
        for row, path in zip(members, _chunk_paths(stacked, lengths, transition, first, last)):
            paths[row] = path
    return paths


def _chunk_paths(log_probs, lengths, transition, first, last):
    """Best paths of [examples, positions, labels] log-probabilities; example e has lengths[e] positions,
    in ascending order. Each position steps only the examples that reach it (a suffix of the chunk), so a
    long document among short sentences costs its own words, not its length times the chunk."""
    count, positions, _ = log_probs.shape
    reaching = np.searchsorted(lengths, np.arange(positions), side="right")  # first example longer than p
    score = log_probs[:, 0] + np.where(first, 0.0, -1e9)
    back = np.zeros(log_probs.shape, dtype=np.int64)
    for position in range(1, positions):
        going = reaching[position]
        candidates = score[going:, :, None] + transition
        back[going:, position] = candidates.argmax(axis=1)
        score[going:] = candidates.max(axis=1) + log_probs[going:, position]
    best = (score + np.where(last, 0.0, -1e9)).argmax(axis=1)
    path, current = np.zeros((count, positions), dtype=np.int64), best.copy()
    for position in range(positions - 1, 0, -1):
        inside = reaching[position]  # examples from here on have this position; those ending here start at best
        path[inside:, position] = current[inside:]
        current[inside:] = back[np.arange(inside, count), position, current[inside:]]
    path[:, 0] = current
    return [path[e, :lengths[e]].tolist() for e in range(count)]

"""From sub-token predictions back to one label per original word.

Evaluation and prediction first reduce each batch of logits to (best label id, its probability) per
sub-token, so no full logits are kept. Each word is then read at its first sub-token, in the window where
it has the most context on both sides; a word the tokenizer gave no sub-token gets the outside label (or
the inside label of the entity around it) and is counted, so no word ever goes missing from the scores or
from predictions.txt. With Viterbi decoding the batches keep every label's log-probability instead, still
only per batch (see nerkit.viterbi).
"""

import functools
import logging

import numpy as np

from .schemes import join_label, label_parts, transition_rules
from .tokenization import NO_WORD
from .viterbi import viterbi_paths

logger = logging.getLogger(__name__)


def reduce_logits(logits, labels=None, keep_distribution=False):
    """`preprocess_logits_for_metrics`: per sub-token the best label id and its probability, in float32
    (half-precision logits are cast first, so metrics never see bf16/fp16); with `keep_distribution`
    (Viterbi decoding) the log-probabilities of every label instead."""
    import torch

    if isinstance(logits, tuple):
        logits = logits[0]
    if keep_distribution:
        return logits.float().log_softmax(dim=-1)
    probabilities = logits.float().softmax(dim=-1)
    best, ids = probabilities.max(dim=-1)
    return torch.stack((ids.float(), best), dim=-1)


def forward_batches(model, loader):
    """(loss or None, logits) of each batch, without gradients."""
    import torch

    for batch in loader:
        with torch.no_grad():
            outputs = model(**batch)
        yield outputs.loss, outputs.logits


class WordCollector:
    """Keeps, for every word of every example, the prediction read where the word has the most context.

    A prediction is a row per sub-token: (label id, probability), or with `decoding="viterbi"` the
    log-probabilities of every label, decoded into the best sequence the tagging scheme allows (the run's
    scheme, see nerkit.schemes). Per example the kept rows are one array [words, row width] with the
    context each was read with (-1: none yet).
    """

    def __init__(self, words_per_example, decoding="argmax"):
        self.words_per_example = list(words_per_example)
        self.context = [None] * len(self.words_per_example)
        self.window_start = [None] * len(self.words_per_example)
        self.rows = [None] * len(self.words_per_example)
        self.decoding = decoding

    def add(self, example_id, word_ids, token_predictions):
        """One window: `word_ids` per position (NO_WORD for special tokens), `token_predictions` rows per
        position."""
        word_ids = np.asarray(word_ids)
        content = np.flatnonzero(word_ids != NO_WORD)
        if not content.size:
            return
        words = word_ids[content]
        starts = np.ones(len(words), dtype=bool)  # a word is read at its first sub-token
        starts[1:] = words[1:] != words[:-1]
        positions, words = content[starts], words[starts]
        context = np.minimum(positions - content[0], content[-1] - positions)
        predictions = np.asarray(token_predictions, dtype=np.float32)
        if self.rows[example_id] is None:
            count = self.words_per_example[example_id]
            self.context[example_id] = np.full(count, -1, dtype=np.int64)
            self.window_start[example_id] = np.zeros(count, dtype=np.int64)
            self.rows[example_id] = np.zeros((count, predictions.shape[-1]), dtype=np.float32)
        # a tie goes to the window that starts earlier in the example, whatever order the windows come in
        # (prediction sorts them longest first, evaluation keeps the file's order)
        kept, kept_start = self.context[example_id][words], self.window_start[example_id][words]
        better = (context > kept) | ((context == kept) & (words[0] < kept_start))
        self.context[example_id][words[better]] = context[better]
        self.window_start[example_id][words[better]] = words[0]
        self.rows[example_id][words[better]] = predictions[positions[better]]

    def result(self, label_list, fallback_label, scheme):
        """(tags per example, probabilities per example, number of words that had no sub-token); `scheme`
        (nerkit.schemes.SCHEMES) gives the sequences Viterbi decoding may choose. A word without
        sub-tokens gets I-X between two words of one entity X (`join_entities`), else `fallback_label` (O);
        where there is no O (chunks that cover every word), Viterbi decoding gives it the label that best
        fits its neighbours in the scheme, and argmax the first label."""
        fallback_id = label_list.index(fallback_label) if fallback_label is not None else None
        found = [np.zeros(count, dtype=bool) if context is None else context >= 0
                 for count, context in zip(self.words_per_example, self.context)]
        missing = sum(len(mask) - int(mask.sum()) for mask in found)
        rules = transition_rules(label_list, scheme)
        if self.decoding == "viterbi":
            decoded = best_sequences(self.rows, found, fallback_id, len(label_list), rules)
        else:
            decoded = [best_labels(rows, mask, fallback_id or 0) for rows, mask in zip(self.rows, found)]
        if missing:  # also without O: the label that fits between B-NP and I-NP could be B-NP, a new chunk
            decoded = [(join_entities(ids, mask, label_list, rules), probabilities)
                       for (ids, probabilities), mask in zip(decoded, found)]
        tags = [[label_list[i] for i in ids] for ids, _ in decoded]
        return tags, [probabilities for _, probabilities in decoded], missing


def best_labels(rows, found, fallback_id):
    """Argmax decoding of one example: (label ids, probabilities) from each word's (label id, probability)
    row; a word without sub-tokens gets the fallback label with probability 0."""
    if rows is None:
        return [fallback_id] * len(found), [0.0] * len(found)
    ids = np.where(found, rows[:, 0], fallback_id).astype(np.int64)
    return ids.tolist(), np.where(found, rows[:, 1], 0.0).tolist()


def best_sequences(rows_per_example, found_per_example, fallback_id, label_count, rules):
    """Viterbi decoding of every example: (label ids, probabilities) each. Words without sub-tokens have no
    say, with probability 0: with a fallback label (O) the sequence of the other words is decoded and they
    get it (then `join_entities`); without one they are left to their neighbours, every label equally
    likely. Pinned to O inside the sequence, a zero-width character inside `John Smith` would force Smith
    out of I-PER in IOB2, into whatever label may follow O."""
    log_probs, kept = [], []
    for rows, found in zip(rows_per_example, found_per_example):
        example = np.zeros((len(found), label_count), dtype=np.float32)
        if rows is not None:
            example[found] = rows[found]
        kept.append(found if fallback_id is not None else np.ones(len(found), dtype=bool))
        log_probs.append(example[kept[-1]])
    paths = viterbi_paths(log_probs, *rules)
    decoded = []
    for path, example, found, decoded_words in zip(paths, log_probs, found_per_example, kept):
        ids = np.full(len(found), -1 if fallback_id is None else fallback_id, dtype=np.int64)
        ids[decoded_words] = path
        probabilities = np.zeros(len(found))
        probabilities[found] = np.exp(example[np.arange(len(path)), path])[found[decoded_words]]
        decoded.append((ids.tolist(), probabilities.tolist()))
    return decoded


@functools.lru_cache(maxsize=8)
def label_lookup(labels):
    """({label: id}, (prefix, type) of each label) for a tuple of labels: built once, not per example."""
    return {label: i for i, label in enumerate(labels)}, label_parts(labels)


def join_entities(ids, found, label_list, rules=None):
    """A word without sub-tokens between two words of one entity (B-X or I-X before it, I-X, E-X or L-X after
    it, in any scheme) is inside that entity: I-X instead of the fallback label, which would split it in two
    (argmax decoding, or IOB1 and IO under Viterbi, whose schemes allow O there), or, where the labels have
    no O, instead of B-X, which Viterbi may choose on a tie and which would open a second entity. Between
    two entities of one type whose scheme (`rules`) forbids the label it got there (IOB1's I-X O B-X, IOE1's
    E-X O I-X), it is I-X where the scheme allows that (the end of the first, the start of the second)."""
    index, parts = label_lookup(tuple(label_list))
    positions = np.flatnonzero(found)
    for word in np.flatnonzero(~np.asarray(found, dtype=bool)):
        at = np.searchsorted(positions, word)
        if at == 0 or at == len(positions):
            continue
        (before, kind), (after, next_kind) = (parts[ids[positions[i]]] for i in (at - 1, at))
        inside = index.get(join_label("I", kind)) if kind == next_kind else None
        if inside is None:
            continue
        if before in ("B", "I") and after in ("I", "E", "L"):
            ids[word] = inside
        elif rules is not None and before is not None and after is not None:
            left, right = ids[positions[at - 1]], ids[positions[at]]
            if not (rules.allowed[left, ids[word]] and rules.allowed[ids[word], right]) and \
                    rules.allowed[left, inside] and rules.allowed[inside, right]:
                ids[word] = inside
    return ids


def collect_words(outputs, accelerator, decoder):
    """Consume (loss or None, logits) per batch, in dataloader order: each batch is reduced on its device,
    padded and gathered across processes (duplicates of an uneven last batch dropped), and decoded into
    words at once, so memory holds words, never the logits of the whole set. Returns the mean loss or None.

    The batches are computed as this loop draws them, all in one autocast region of the run's precision
    (nerkit.speed.one_cast_per_weight): each weight is cast once for the set, and a model accelerate has
    not prepared (predict without train or eval) runs in that precision too."""
    from .speed import one_cast_per_weight

    loss_sum, loss_count = 0.0, 0
    with one_cast_per_weight(accelerator):
        for loss, logits in outputs:
            reduced = reduce_logits(logits, keep_distribution=decoder.keep_distribution)
            reduced = accelerator.pad_across_processes(reduced, dim=1, pad_index=-100)
            reduced = accelerator.gather_for_metrics(reduced)
            decoder.add_batch(reduced)
            if loss is not None:
                per_example = accelerator.gather_for_metrics(loss.detach().float().reshape(1).repeat(len(logits)))
                loss_sum += float(per_example.sum())
                loss_count += len(per_example)
    return loss_sum / loss_count if loss_count else None


TRIM_EVERY = 32  # batches between handing freed memory back (nerkit.speed.return_freed_memory)


class WordDecoder:
    """Feeds batches of reduced predictions, in feature order, to a `WordCollector`; every `TRIM_EVERY`
    batches it hands the memory the forward passes freed back to the system, so that the peak of an
    evaluation does not grow with the set's size."""

    def __init__(self, features, words_per_example, decoding="argmax"):
        self.word_ids, self.example_ids = decoder_columns(features)
        self.words_per_example = words_per_example
        self.decoding = decoding
        self.keep_distribution = decoding == "viterbi"
        self.reset()

    def reset(self):
        self.collector = WordCollector(self.words_per_example, self.decoding)
        self.cursor = self.batches = 0

    def add_batch(self, predictions):
        """`predictions`: as `reduce_logits` gives them, an array or tensor [features, positions, 2] (label id,
        probability) or with Viterbi [features, positions, labels] (log-probabilities), or a list of such
        batches."""
        if isinstance(predictions, (list, tuple)):
            for batch in predictions:
                self.add_batch(batch)
            return
        if hasattr(predictions, "detach"):
            predictions = predictions.detach().float().cpu().numpy()
        for row in np.asarray(predictions):
            feature = self.cursor
            self.collector.add(self.example_ids[feature], self.word_ids[feature], row)
            self.cursor += 1
        self.batches += 1
        if self.batches % TRIM_EVERY == 0:
            from .speed import return_freed_memory  # here, so that decoding alone needs no torch

            return_freed_memory()

    def result(self, label_list, fallback_label, split_name, scheme):
        if self.cursor != len(self.example_ids):
            raise RuntimeError(f"{split_name}: got predictions for {self.cursor} windows, expected "
                               f"{len(self.example_ids)}")
        tags, scores, missing = self.collector.result(label_list, fallback_label, scheme)
        if missing:
            given = (f"'{fallback_label}'" if fallback_label is not None else
                     "the label that best fits their neighbours (the labels have no O)" if self.decoding == "viterbi"
                     else f"'{label_list[0]}' (the labels have no O)") + " or I-X between two words of one entity X"
            logger.warning("%s: %d words produced no sub-token (the tokenizer drops them); they are predicted as "
                           "%s and still scored.", split_name, missing, given)
        return tags, scores


def decoder_columns(features):
    """The `word_ids` and `example_id` columns as Python lists, read once: a `datasets.Dataset` column read
    one row at a time goes through Arrow for each feature (about 100 µs each), a whole column at once
    does not. `features` may also be a dict of lists."""
    if isinstance(features, dict):
        return list(features["word_ids"]), list(features["example_id"])
    table = features.select_columns(["word_ids", "example_id"]).with_format("arrow")[:]
    return table.column("word_ids").to_pylist(), table.column("example_id").to_pylist()

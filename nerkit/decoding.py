"""From sub-token predictions back to one label per original word.

Evaluation and prediction first reduce each batch of logits to (best label id, its probability) per
sub-token, so no full logits are kept. Each word is then read at its first sub-token, in the window where
it has the most context on both sides; a word the tokenizer gave no sub-token gets the outside label and
is counted, so no word ever goes missing from the scores or from predictions.txt. With Viterbi decoding
the batches keep every label's log-probability instead, still only per batch (see nerkit.viterbi).
"""

import logging

import numpy as np

from .schemes import transition_rules
from .tokenization import NO_WORD
from .viterbi import viterbi_path

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
    scheme, see nerkit.schemes).
    """

    def __init__(self, words_per_example, decoding="argmax"):
        self.best = [[None] * count for count in words_per_example]
        self.decoding = decoding

    def add(self, example_id, word_ids, token_predictions):
        """One window: `word_ids` per position (NO_WORD for special tokens), `token_predictions` rows per
        position."""
        content = [position for position, word in enumerate(word_ids) if word != NO_WORD]
        if not content:
            return
        first, last = content[0], content[-1]
        words, previous = self.best[example_id], None
        for position in content:
            word = word_ids[position]
            if word == previous:
                continue
            previous = word
            context = min(position - first, last - position)
            if words[word] is None or context > words[word][0]:
                words[word] = (context, np.array(token_predictions[position], dtype=np.float32))

    def result(self, label_list, fallback_label, scheme):
        """(tags per example, probabilities per example, number of words that had no sub-token); `scheme`
        (IOB1, IOB2, IOBES, BILOU or none) gives the sequences Viterbi decoding may choose."""
        tags, scores, missing = [], [], 0
        rules = transition_rules(label_list, scheme) if self.decoding == "viterbi" else None
        for words in self.best:
            missing += sum(word is None for word in words)
            if rules is None:
                ids = [label_list.index(fallback_label) if w is None else int(w[1][0]) for w in words]
                probabilities = [0.0 if w is None else float(w[1][1]) for w in words]
            else:
                ids, probabilities = best_sequence(words, label_list.index(fallback_label), len(label_list), rules)
            tags.append([label_list[i] for i in ids])
            scores.append(probabilities)
        return tags, scores, missing


def best_sequence(words, fallback_id, label_count, rules):
    """Viterbi over one example's words; a word without sub-tokens is pinned to the fallback label."""
    log_probs = np.full((len(words), label_count), -1e9, dtype=np.float32)
    for position, word in enumerate(words):
        if word is None:
            log_probs[position, fallback_id] = 0.0
        else:
            log_probs[position] = word[1]
    ids = viterbi_path(log_probs, *rules)
    return ids, [float(np.exp(log_probs[position, i])) for position, i in enumerate(ids)]


def collect_words(outputs, accelerator, decoder):
    """Consume (loss or None, logits) per batch, in dataloader order: each batch is reduced on its device,
    padded and gathered across processes (duplicates of an uneven last batch dropped), and decoded into
    words at once, so memory holds words, never the logits of the whole set. Returns the mean loss or None.
    """
    loss_sum, loss_count = 0.0, 0
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


class WordDecoder:
    """Feeds batches of reduced predictions, in feature order, to a `WordCollector`."""

    def __init__(self, features, words_per_example, decoding="argmax"):
        self.word_ids = features["word_ids"]
        self.example_ids = features["example_id"]
        self.words_per_example = words_per_example
        self.decoding = decoding
        self.keep_distribution = decoding == "viterbi"
        self.reset()

    def reset(self):
        self.collector = WordCollector(self.words_per_example, self.decoding)
        self.cursor = 0

    def add_batch(self, predictions):
        """`predictions`: an array or tensor [features, positions, 2], or a list of such batches."""
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

    def result(self, label_list, fallback_label, split_name, scheme):
        if self.cursor != len(self.example_ids):
            raise RuntimeError(f"{split_name}: got predictions for {self.cursor} windows, expected "
                               f"{len(self.example_ids)}")
        tags, scores, missing = self.collector.result(label_list, fallback_label, scheme)
        if missing:
            logger.warning("%s: %d words produced no sub-token (the tokenizer drops them); they are predicted as "
                           "'%s' and still scored.", split_name, missing, fallback_label)
        return tags, scores

"""From sub-token predictions back to one label per original word.

Evaluation and prediction first reduce each batch of logits to (best label id, its probability) per
sub-token, so no full logits are kept. Each word is then read at its first sub-token, in the window where
it has the most context on both sides; a word the tokenizer gave no sub-token gets the outside label and
is counted, so no word ever goes missing from the scores or from predictions.txt.
"""

import logging

import numpy as np

from .tokenization import NO_WORD

logger = logging.getLogger(__name__)


def reduce_logits(logits, labels=None):
    """`preprocess_logits_for_metrics`: per sub-token the best label id and its probability, in float32
    (half-precision logits are cast first, so metrics never see bf16/fp16)."""
    import torch

    if isinstance(logits, tuple):
        logits = logits[0]
    probabilities = logits.float().softmax(dim=-1)
    best, ids = probabilities.max(dim=-1)
    return torch.stack((ids.float(), best), dim=-1)


class WordCollector:
    """Keeps, for every word of every example, the prediction read where the word has the most context."""

    def __init__(self, words_per_example):
        self.best = [[None] * count for count in words_per_example]

    def add(self, example_id, word_ids, token_predictions):
        """One window: `word_ids` per position (NO_WORD for special tokens), `token_predictions` rows of
        (label id, probability) per position."""
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
                label_id, probability = token_predictions[position]
                words[word] = (context, int(label_id), float(probability))

    def result(self, label_list, fallback_label):
        """(tags per example, probabilities per example, number of words that had no sub-token)."""
        tags, scores, missing = [], [], 0
        for words in self.best:
            tags.append([fallback_label if word is None else label_list[word[1]] for word in words])
            scores.append([0.0 if word is None else word[2] for word in words])
            missing += sum(word is None for word in words)
        return tags, scores, missing


def collect_words(outputs, accelerator, decoder):
    """Consume (loss or None, logits) per batch, in dataloader order: each batch is reduced on its device,
    padded and gathered across processes (duplicates of an uneven last batch dropped), and decoded into
    words at once, so memory holds words, never the logits of the whole set. Returns the mean loss or None.
    """
    loss_sum, loss_count = 0.0, 0
    for loss, logits in outputs:
        reduced = accelerator.pad_across_processes(reduce_logits(logits), dim=1, pad_index=-100)
        reduced = accelerator.gather_for_metrics(reduced)
        decoder.add_batch(reduced)
        if loss is not None:
            per_example = accelerator.gather_for_metrics(loss.detach().float().reshape(1).repeat(len(logits)))
            loss_sum += float(per_example.sum())
            loss_count += len(per_example)
    return loss_sum / loss_count if loss_count else None


class WordDecoder:
    """Feeds batches of reduced predictions, in feature order, to a `WordCollector`."""

    def __init__(self, features, words_per_example):
        self.word_ids = features["word_ids"]
        self.example_ids = features["example_id"]
        self.words_per_example = words_per_example
        self.reset()

    def reset(self):
        self.collector = WordCollector(self.words_per_example)
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

    def result(self, label_list, fallback_label, split_name):
        if self.cursor != len(self.example_ids):
            raise RuntimeError(f"{split_name}: got predictions for {self.cursor} windows, expected "
                               f"{len(self.example_ids)}")
        tags, scores, missing = self.collector.result(label_list, fallback_label)
        if missing:
            logger.warning("%s: %d words produced no sub-token (the tokenizer drops them); they are predicted as "
                           "'%s' and still scored.", split_name, missing, fallback_label)
        return tags, scores

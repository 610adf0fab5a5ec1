"""The speed work changes no result: vectorised word decoding, columns read once, tokenizing once, and
the choice of optimizer and attention kernels."""

import ctypes
import logging
import os
import platform
import random
import sys

import numpy as np
import pytest

from nerkit.decoding import WordCollector, WordDecoder
from nerkit.tokenization import NO_WORD
from nerkit.schemes import transition_rules
from nerkit.viterbi import viterbi_path
from test_predict_ner import trained_model  # noqa: F401 (a fixture)

LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


def reference_decode(windows, words_per_example, decoding):
    """Word decoding one word at a time, as nerkit did before it was vectorised: each word is read at its
    first sub-token in the window where it has the most context (the earlier window on ties)."""
    best = [[None] * count for count in words_per_example]
    for example_id, word_ids, rows in windows:
        content = [position for position, word in enumerate(word_ids) if word != NO_WORD]
        previous = None
        for position in content:
            word = word_ids[position]
            if word == previous:
                continue
            previous = word
            context = min(position - content[0], content[-1] - position)
            if best[example_id][word] is None or context > best[example_id][word][0]:
                best[example_id][word] = (context, np.array(rows[position], dtype=np.float32))
    tags, scores = [], []
    for words in best:
        if decoding == "argmax":
            ids = [0 if w is None else int(w[1][0]) for w in words]
            probabilities = [0.0 if w is None else float(w[1][1]) for w in words]
        else:  # the words with sub-tokens decoded on their own; the others O, with probability 0
            found = [word for word in words if word is not None]
            log_probs = np.array([word[1] for word in found], dtype=np.float32).reshape(len(found), len(LABELS))
            path = iter(viterbi_path(log_probs, *transition_rules(LABELS, "IOB2")))
            ids = [0 if word is None else next(path) for word in words]
            probabilities = [0.0 if word is None else float(np.exp(word[1][i])) for word, i in zip(words, ids)]
        tags.append(joined([LABELS[i] for i in ids], [word is None for word in words]))
        scores.append(probabilities)
    return tags, scores


def joined(tags, missing):
    """A word without sub-tokens between B-X or I-X and I-X is I-X, one word at a time."""
    for i in (i for i, gone in enumerate(missing) if gone):
        before = next((tags[j] for j in range(i - 1, -1, -1) if not missing[j]), "O")
        after = next((tags[j] for j in range(i + 1, len(tags)) if not missing[j]), "O")
        if before[:2] in ("B-", "I-") and after[:2] == "I-" and before[2:] == after[2:]:
            tags[i] = "I-" + before[2:]
    return tags


def random_windows(generator, words_per_example, decoding):
    """Overlapping windows over each example, words of one to three sub-tokens, some words dropped by the
    'tokenizer' (no sub-token), special tokens at both ends, and rows padded past the window's end."""
    windows = []
    for example_id, count in enumerate(words_per_example):
        kept = [word for word in range(count) if generator.random() > 0.1]
        start = 0
        while True:
            end = min(len(kept), start + generator.randint(1, 6))
            word_ids = [NO_WORD]
            for word in kept[start:end]:
                word_ids += [word] * generator.randint(1, 3)
            word_ids.append(NO_WORD)
            windows.append((example_id, word_ids, random_rows(generator, len(word_ids) + 2, decoding)))
            if end >= len(kept):
                break
            start = max(start + 1, end - generator.randint(0, 3))
    return windows


def random_rows(generator, positions, decoding):
    if decoding == "argmax":
        # ties in context are common: several windows read a word with the same margin
        return np.array([(generator.randrange(len(LABELS)), generator.random()) for _ in range(positions)],
                        dtype=np.float32)
    logits = np.array([[generator.gauss(0, 2) for _ in LABELS] for _ in range(positions)])
    return (logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))).astype(np.float32)


@pytest.mark.parametrize("decoding", ["argmax", "viterbi"])
def test_vectorised_word_decoding_gives_exactly_the_per_word_results(decoding):
    generator = random.Random(7)
    words_per_example = [generator.randint(0, 14) for _ in range(60)]
    windows = random_windows(generator, words_per_example, decoding)
    collector = WordCollector(words_per_example, decoding)
    for example_id, word_ids, rows in windows:
        collector.add(example_id, word_ids, rows)
    tags, scores, missing = collector.result(LABELS, "O", "IOB2")
    assert (tags, scores) == reference_decode(windows, words_per_example, decoding)
    seen = {(example_id, word) for example_id, word_ids, _ in windows for word in word_ids if word != NO_WORD}
    assert missing == sum(words_per_example) - len(seen) > 0


def test_decoder_reads_dataset_columns_once_in_the_dataset_order():
    """Evaluation features are sorted longest first (an index mapping over the Arrow table): the decoder
    must read word_ids and example_id in that order, not the table's."""
    import datasets

    features = datasets.Dataset.from_dict({
        "word_ids": [[NO_WORD, 0, NO_WORD], [NO_WORD, 0, 1, 1, NO_WORD], [NO_WORD, 0, 1, NO_WORD]],
        "example_id": [0, 1, 2],
        "length": [3, 5, 4],
    }).sort("length", reverse=True)
    decoder = WordDecoder(features, [1, 2, 2])
    assert decoder.example_ids == [1, 2, 0]
    assert decoder.word_ids == [[NO_WORD, 0, 1, 1, NO_WORD], [NO_WORD, 0, 1, NO_WORD], [NO_WORD, 0, NO_WORD]]
    batch = np.zeros((3, 5, 2), dtype=np.float32)
    batch[0, 1], batch[0, 2] = (1, 0.9), (2, 0.8)  # example 1: B-PER I-PER
    batch[1, 1], batch[1, 2] = (3, 0.7), (4, 0.6)  # example 2: B-LOC I-LOC
    batch[2, 1] = (0, 0.5)  # example 0: O
    decoder.add_batch(batch)
    tags, _ = decoder.result(LABELS, "O", "validation", "IOB2")
    assert tags == [["O"], ["B-PER", "I-PER"], ["B-LOC", "I-LOC"]]


@pytest.mark.parametrize("labels", [LABELS, ["O", "B-X", "I-X", "E-X", "S-X", "B-Y", "I-Y", "E-Y", "S-Y"],
                                    ["NN", "VB", "DT"]])
def test_viterbi_over_many_examples_at_once_equals_one_at_a_time(labels):
    from nerkit.viterbi import viterbi_paths

    generator = np.random.default_rng(3)
    examples = []
    # several chunks, lengths 0 to 29, and documents far longer than the sentences beside them
    for length in [*generator.integers(0, 30, size=700), 400, 1, 250]:
        logits = generator.normal(0, 2, size=(length, len(labels)))
        examples.append((logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))).astype(np.float32))
    rules = transition_rules(labels, "IOB2")
    assert viterbi_paths(examples, *rules) == [viterbi_path(example, *rules) for example in examples]


class CountingTokenizer:
    """A tokenizer that counts the word lists it is asked to encode."""

    def __init__(self, tokenizer):
        self.tokenizer, self.encoded = tokenizer, 0

    def __call__(self, texts, **kwargs):
        self.encoded += len(texts)
        return self.tokenizer(texts, **kwargs)

    def __getattr__(self, name):
        return getattr(self.tokenizer, name)


def test_each_example_is_tokenized_once_and_the_longest_is_logged_from_that(tiny_bert, caplog):
    """The data summary and the windows read lengths from the one encoding; only the windows of an
    example longer than the window are encoded again. The features are those of a plain encoding."""
    import logging

    from nerkit.data import Split
    from nerkit.summary import log_summary
    from nerkit.tokenization import EncodingSettings, encode_split, load_fast_tokenizer

    tokenizer = CountingTokenizer(load_fast_tokenizer(tiny_bert, {}))
    long_words = ("the meeting in Brussels was reported by Peter Blackburn " * 6).split()
    short = [["Peter", "Blackburn"], ["Brussels", "is", "busy"]]
    split = Split("train", "mem", [long_words, *short], [["O"] * len(long_words), ["B-PER", "I-PER"],
                                                         ["B-LOC", "O", "O"]], ["line 1", "line 2", "line 3"])
    with caplog.at_level(logging.INFO, logger="nerkit"):
        log_summary({"train": split}, ["B-LOC", "B-PER", "I-PER", "O"], "IOB2", "the training tags")
        features = encode_split(split, tokenizer, {"O": 0, "B-PER": 1, "I-PER": 2, "B-LOC": 3},
                                EncodingSettings(max_length=16, stride=4))
    windows = len(features) - len(short)
    assert windows > 3 and tokenizer.encoded == len(split.tokens) + windows
    longest = len(tokenizer.tokenizer(long_words, is_split_into_words=True)["input_ids"])
    assert f"train: longest example {longest} sub-tokens; {len(features)} windows for 3 examples" in caplog.text
    assert set(features.column_names) == {"input_ids", "token_type_ids", "attention_mask", "labels", "word_ids",
                                          "example_id"}
    plain = tokenizer.tokenizer(short, is_split_into_words=True)
    assert [f["input_ids"] for f in features][-2:] == plain["input_ids"]


@pytest.mark.parametrize("fixture, position_start", [("tiny_bert", 0), ("tiny_roberta", 2)])
def test_packing_check_accepts_models_whose_packed_rows_give_the_padded_outputs(fixture, position_start, request):
    """The check compares packed rows with one padded batch; BERT (positions from 0) and RoBERTa
    (positions after the padding index) pass with their own position start."""
    from transformers import AutoModelForTokenClassification

    from nerkit.data import Split
    from nerkit.speed import packing_collator
    from nerkit.tokenization import EncodingSettings, encode_split, load_fast_tokenizer

    path = request.getfixturevalue(fixture)
    tokenizer = load_fast_tokenizer(path, {})
    model = AutoModelForTokenClassification.from_pretrained(path, num_labels=3)
    words = [["Peter", "Blackburn", "reported"], ["from", "Brussels"], ["EU", "rejects", "German", "call", "to"]]
    split = Split("train", "mem", words, [["O"] * len(w) for w in words], [""] * len(words))
    features = encode_split(split, tokenizer, {"O": 0}, EncodingSettings(max_length=32, stride=4))
    collator = packing_collator(model, tokenizer, [features[i] for i in range(len(features))])
    assert collator is not None and collator.position_start == position_start


def test_packing_check_sees_the_long_examples_where_a_model_attends_differently(tiny_bert):
    """ModernBERT's local layers attend within a sliding window, which packed rows with a block mask do
    not keep: packed and padded outputs differ only on examples longer than half the window. With the
    short examples first, a check on the first eight would pass; the check also takes the longest ones,
    so the model trains on padded batches. A BERT on the same features still packs."""
    from transformers import AutoModelForTokenClassification, ModernBertConfig, ModernBertForTokenClassification

    from nerkit.data import Split
    from nerkit.speed import choose_packing, packing_sample
    from nerkit.tokenization import EncodingSettings, encode_split, load_fast_tokenizer

    tokenizer = load_fast_tokenizer(tiny_bert, {})
    words = [["EU", "rejects"]] * 8 + [("John Smith works at Acme Corporation in New York " * 2).split()] * 2
    split = Split("train", "mem", words, [["O"] * len(w) for w in words], [""] * len(words))
    features = encode_split(split, tokenizer, {"O": 0}, EncodingSettings(max_length=64, stride=8))
    assert max(len(features[i]["input_ids"]) for i in range(8)) < 8 < len(features[9]["input_ids"])
    assert len(packing_sample(features)) == 8 and len(packing_sample(features)[-1]["input_ids"]) > 8
    config = ModernBertConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=2, local_attention=8, global_attn_every_n_layers=2,
                              max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id, num_labels=3)
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    sliding = ModernBertForTokenClassification(config)
    assert choose_packing(sliding, tokenizer, features, True, False) is None
    plain = AutoModelForTokenClassification.from_pretrained(tiny_bert, num_labels=3)
    assert choose_packing(plain, tokenizer, features, True, False) is not None


def test_accelerate_loop_uses_the_fused_adamw_and_it_updates_as_the_foreach_one(tiny_bert):
    """run_ner_no_trainer.py builds AdamW with the fused kernel on CPU (as the Trainer's default), and a
    step with it moves the weights as the foreach AdamW does, up to float rounding."""
    import copy
    from types import SimpleNamespace

    import torch
    from transformers import AutoModelForTokenClassification

    import run_ner_no_trainer
    from nerkit.speed import fused_adamw

    assert fused_adamw("cpu") and not fused_adamw("no-such-device")
    torch.manual_seed(0)
    model = AutoModelForTokenClassification.from_pretrained(tiny_bert, num_labels=3)
    twin = copy.deepcopy(model)
    args = SimpleNamespace(learning_rate=1e-2, weight_decay=0.01)
    fused = run_ner_no_trainer.make_optimizer(model, args, "cpu")
    plain = run_ner_no_trainer.make_optimizer(twin, args, "no-such-device")
    assert all(group["fused"] for group in fused.param_groups)
    assert not any(group["fused"] for group in plain.param_groups)
    batch = {"input_ids": torch.tensor([[2, 5, 6, 7, 3]]), "labels": torch.tensor([[-100, 1, 2, 0, -100]])}
    for each, optimizer in ((model, fused), (twin, plain)):
        for _ in range(3):
            each(**batch).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    moved = [(a - b).abs().max().item() for a, b in zip(model.parameters(), twin.parameters())]
    assert max(moved) < 1e-4  # each step moves weights by up to the learning rate, 1e-2
    original = AutoModelForTokenClassification.from_pretrained(tiny_bert, num_labels=3)
    trained = model.bert.embeddings.word_embeddings.weight
    assert (trained - original.bert.embeddings.word_embeddings.weight).abs().max() > 1e-3  # the steps did move it


@pytest.mark.parametrize("device, precision, supports, installed, expected", [
    ("cuda", "bf16", True, True, True),
    ("cuda", "fp16", True, True, True),
    ("cuda", None, True, True, False),  # flash-attention takes no float32
    ("cuda", "bf16", False, True, False),  # the model has no flash-attention path
    ("cuda", "bf16", True, False, False),  # flash-attn not installed
    ("cpu", "bf16", True, True, False),  # CPU keeps the packed rows with a mask
    ("mps", "bf16", True, True, False),
])
def test_flattened_rows_with_flash_attention_only_on_cuda_in_half_precision(device, precision, supports, installed,
                                                                           expected):
    from nerkit.varlen import varlen_plan

    assert varlen_plan(device, precision, supports, installed) is expected


def small_features(path, fixture_words=(("Peter", "Blackburn", "reported"), ("from", "Brussels"),
                                        ("EU", "rejects", "German", "call", "to"))):
    from nerkit.data import Split
    from nerkit.tokenization import EncodingSettings, encode_split, load_fast_tokenizer

    tokenizer = load_fast_tokenizer(path, {})
    words = [list(w) for w in fixture_words]
    split = Split("train", "mem", words, [["O"] * len(w) for w in words], [""] * len(words))
    features = encode_split(split, tokenizer, {"O": 0}, EncodingSettings(max_length=32, stride=4))
    return tokenizer, [features[i] for i in range(len(features))]


@pytest.mark.parametrize("fixture, position_start", [("tiny_bert", 0), ("tiny_roberta", 2)])
def test_flattened_row_keeps_each_example_to_itself(fixture, position_start, request):
    """The one-row batch for flash-attention's variable-length kernel: its boundaries and restarting
    position ids, read as a block-diagonal mask, give each example's padded logits."""
    import torch
    from transformers import AutoModelForTokenClassification

    from nerkit.speed import padded_logits
    from nerkit.varlen import FlatteningCollator

    path = request.getfixturevalue(fixture)
    tokenizer, features = small_features(path)
    model = AutoModelForTokenClassification.from_pretrained(path, num_labels=3).eval()
    batch = FlatteningCollator(tokenizer.pad_token_id, position_start, False)(features)
    lengths = [len(f["input_ids"]) for f in features]
    assert batch["cu_seq_lens_q"].tolist() == [0, *np.cumsum(lengths)] and batch["max_length_q"] == max(lengths)
    assert batch["labels"].tolist() == [sum((f["labels"] for f in features), [])]
    segment = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
    mask = (segment[:, None] == segment[None, :])[None, None]
    with torch.no_grad():
        flattened = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], attention_mask=mask).logits
        reference = padded_logits(model, features, tokenizer.pad_token_id)
    assert torch.allclose(flattened[0], torch.cat(reference), atol=1e-4)


def test_without_flash_attention_training_keeps_the_masked_rows(tiny_bert, caplog):
    """Asked for the flash-attention path where it cannot run (no flash-attn package), the model keeps its
    attention; off the CPU, training keeps its packed rows with a mask."""
    from transformers import AutoModelForTokenClassification

    from nerkit.speed import PackingCollator, choose_packing
    from nerkit.varlen import varlen_packing

    tokenizer, features = small_features(tiny_bert)
    model = AutoModelForTokenClassification.from_pretrained(tiny_bert, num_labels=3)
    before = model.config._attn_implementation
    assert varlen_packing(model, tokenizer, features, "cpu", "bf16") is None
    assert model.config._attn_implementation == before
    collator = choose_packing(model, tokenizer, features, True, False, "cuda", "bf16")
    assert type(collator) is PackingCollator and model.config._attn_implementation == before


WORDS_OF_MANY_LENGTHS = [("EU",), ("Peter", "Blackburn"), ("EU", "rejects", "German", "call", "to", "boycott"),
                         ("the meeting in Brussels was reported by Peter Blackburn " * 3).split(),
                         ("from", "Brussels"), ("Germany", "'s", "representative", "to", "the", "European", "Union")]


def test_bucket_plan_groups_examples_where_lengths_halve_and_puts_every_sub_token_back():
    import torch

    from nerkit.varlen import bucket_plan

    lengths = [3, 40, 7, 21, 6, 12, 30]
    bounds = torch.tensor([0, *np.cumsum(lengths)], dtype=torch.int32)
    plan = bucket_plan(bounds)
    # longest first: 40, 30, 21 | 12, 7, 6 | 3 (a bucket ends where the next is under half its longest)
    assert [(bucket.count, bucket.width) for bucket in plan.buckets] == [(3, 40), (3, 12), (1, 3)]
    assert plan.buckets[-1].mask is None and plan.buckets[-1].padding is None  # one example alone has no padding
    slots = torch.cat([bucket.gather for bucket in plan.buckets])
    assert torch.equal(slots[plan.scatter], torch.arange(sum(lengths)))  # each sub-token comes back to its place
    first = plan.buckets[0]
    assert first.gather[:40].tolist() == list(range(3, 43))  # the longest example, in its own order
    real = first.mask[:, 0, :]
    assert real.sum(dim=1).tolist() == [40, 30, 21]  # the mask marks each example's own sub-tokens
    assert torch.equal(first.bias[:, 0, :] == 0, real) and torch.equal(first.padding.view(3, 40), ~real)
    # a padding slot reads its example's first sub-token (a key kept out of attention, a query dropped)
    assert torch.equal(first.gather.view(3, 40)[~real], first.gather.view(3, 40)[:, 0].repeat_interleave(
        (~real).sum(dim=1)))


@pytest.mark.parametrize("fixture", ["tiny_bert", "tiny_roberta"])
def test_bucketed_attention_gives_the_padded_outputs_and_gradients(fixture, request):
    """On the CPU, training lays each batch in one row and computes attention per bucket of similar
    lengths. Logits and every gradient equal those of the padded batch; evaluation's padded batches,
    afterwards, still get their padding masked."""
    import torch
    from transformers import AutoModelForTokenClassification

    from nerkit.speed import choose_packing, padded_logits
    from nerkit.varlen import BUCKETED, FlatteningCollator

    path = request.getfixturevalue(fixture)
    tokenizer, features = small_features(path, WORDS_OF_MANY_LENGTHS)
    torch.manual_seed(0)
    model = AutoModelForTokenClassification.from_pretrained(path, num_labels=3)
    reference_model = AutoModelForTokenClassification.from_pretrained(path, num_labels=3)
    reference_model.load_state_dict(model.state_dict())
    collator = choose_packing(model, tokenizer, features, True, False, "cpu")
    assert type(collator) is FlatteningCollator and model.config._attn_implementation == BUCKETED
    model.eval(), reference_model.eval()  # no dropout: the two must agree exactly

    batch = collator(features)
    labels = batch.pop("labels")
    logits = model(**batch).logits[0]
    loss = torch.nn.functional.cross_entropy(logits, labels[0], ignore_index=-100, reduction="sum")
    loss.backward()
    reference = torch.cat(padded_logits(reference_model, features, tokenizer.pad_token_id))
    reference_loss = torch.nn.functional.cross_entropy(reference, labels[0], ignore_index=-100, reduction="sum")
    reference_loss.backward()
    assert torch.allclose(logits, reference, atol=1e-5)
    for (name, parameter), other in zip(model.named_parameters(), reference_model.parameters()):
        assert torch.allclose(parameter.grad, other.grad, atol=1e-5), name
    with torch.no_grad():  # evaluation: padded batches through the same model
        evaluated = torch.cat(padded_logits(model, features, tokenizer.pad_token_id))
    assert torch.allclose(evaluated, reference, atol=1e-5)


@pytest.mark.parametrize("own_masks", [False, True])
def test_attention_by_buckets_gives_each_examples_own_attention_and_gradients(own_masks, monkeypatch):
    """Straight on the attention function, with dropout that keeps every weight: the row's output is each
    example's own attention (scaled by 1 / (1 - p) where the masks drop nothing), and so are the gradients
    of query, key and value, padding slots included (they read real sub-tokens but must owe them nothing)."""
    import torch

    from nerkit import dropout
    from nerkit.varlen import bucketed_attention

    monkeypatch.setattr(dropout, "kept", lambda like, p, dtype=None: torch.ones_like(like, dtype=dtype))
    torch.manual_seed(0)
    lengths = [3, 40, 7, 21, 6, 12, 30]
    bounds = torch.tensor([0, *np.cumsum(lengths)], dtype=torch.int32)
    query, key, value = (torch.randn(1, 2, sum(lengths), 8, requires_grad=True) for _ in range(3))
    weights = torch.randn(1, sum(lengths), 2, 8)
    p = 0.1 if own_masks else 0.0
    output, _ = bucketed_attention(torch.nn.Module(), query, key, value, None, dropout=p, cu_seq_lens_q=bounds,
                                   own_masks=own_masks)
    grads = torch.autograd.grad((output * weights).sum(), (query, key, value))
    pieces = [torch.nn.functional.scaled_dot_product_attention(*(x[:, :, start:end] for x in (query, key, value)))
              for start, end in zip(bounds[:-1].tolist(), bounds[1:].tolist())]
    expected = torch.cat(pieces, dim=2).transpose(1, 2) / (1 - p)
    expected_grads = torch.autograd.grad((expected * weights).sum(), (query, key, value))
    torch.testing.assert_close(output, expected)
    for grad, expected_grad in zip(grads, expected_grads):
        torch.testing.assert_close(grad, expected_grad)


def test_attention_by_buckets_hands_back_the_projections_gradients_without_copying_them():
    """Query, key and value laid out as a projection gives them ([1, row, heads x size] viewed as heads and
    transposed): their gradients reach the projection with no copy into zeros (indexing's backward) and no
    copy of the row for the projection's reshape (attention's own arithmetic per bucket copies what it
    copies); the gradients are those of the inputs."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    from nerkit.varlen import bucketed_attention

    class Recorder(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.calls = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            first = args[0] if args and isinstance(args[0], torch.Tensor) else None
            self.calls.append((func.overloadpacket.__name__, None if first is None else tuple(first.shape)))
            return func(*args, **(kwargs or {}))

    torch.manual_seed(0)
    lengths = [5, 9, 4]
    row, heads, size = sum(lengths), 2, 8
    bounds = torch.tensor([0, *np.cumsum(lengths)], dtype=torch.int32)
    projected = [torch.randn(1, row, heads * size, requires_grad=True) for _ in range(3)]
    query, key, value = (x.view(1, row, heads, size).transpose(1, 2) for x in projected)
    output, _ = bucketed_attention(torch.nn.Module(), query, key, value, None, cu_seq_lens_q=bounds)
    weights = torch.randn(output.shape)
    with Recorder() as backward:
        grads = torch.autograd.grad((output * weights).sum(), projected)
    row_sized = {(1, heads, row, size), (1, row, heads, size), (heads, row, size), (row, heads, size)}
    assert not [call for call in backward.calls if call[0] == "select_backward" or
                (call[0] in ("clone", "copy_", "_to_copy") and call[1] in row_sized)]
    pieces = [torch.nn.functional.scaled_dot_product_attention(*(x[:, :, start:end] for x in (query, key, value)))
              for start, end in zip(bounds[:-1].tolist(), bounds[1:].tolist())]
    expected = torch.autograd.grad((torch.cat(pieces, dim=2).transpose(1, 2) * weights).sum(), projected)
    for grad, expected_grad in zip(grads, expected):
        torch.testing.assert_close(grad, expected_grad)


def test_training_computes_attention_per_bucket(tiny_bert, ner_files, tmp_path, monkeypatch, on_the_cpu):
    """run_ner.py on the CPU: the Trainer's batches are single rows, and attention runs on buckets as wide
    as their longest example, not over the row."""
    from nerkit import varlen
    from test_run_ner import run

    widths, rows = [], []
    original = varlen.bucketed_attention

    def watched(module, query, key, value, attention_mask, **kwargs):
        if kwargs.get("cu_seq_lens_q") is not None:
            rows.append(query.shape[2])
            widths.extend(bucket.width for bucket in varlen.LastPlan.of(kwargs["cu_seq_lens_q"]).buckets)
        return original(module, query, key, value, attention_mask, **kwargs)

    monkeypatch.setattr(varlen, "bucketed_attention", watched)
    run(tiny_bert, tmp_path / "o", "--do_train", "--max_steps", "2", files={"train": ner_files["train"]})
    assert rows and widths and max(widths) < min(rows)


def test_a_half_precision_row_ends_at_a_multiple_with_a_filler_that_changes_nothing(tiny_bert):
    """In bf16 (oneDNN keeps kernels per matrix shape) the one-row batch is filled up to a multiple of 32
    sub-tokens by an example of padding tokens: its labels are ignored and it attends only to itself, so the
    real sub-tokens' logits and the loss are those of the row without it."""
    import torch
    from transformers import AutoModelForTokenClassification

    from nerkit.varlen import ONEDNN_ROW_MULTIPLE, bucketed_packing

    tokenizer, features = small_features(tiny_bert, WORDS_OF_MANY_LENGTHS)
    torch.manual_seed(0)
    model = AutoModelForTokenClassification.from_pretrained(tiny_bert, num_labels=3)
    assert bucketed_packing(model, tokenizer, features).row_multiple is None  # fp32: MKL, no kernels per shape
    model.set_attn_implementation("sdpa")
    collator = bucketed_packing(model, tokenizer, features, "bf16")
    assert collator.row_multiple == ONEDNN_ROW_MULTIPLE
    real = sum(len(feature["input_ids"]) for feature in features)
    assert real % ONEDNN_ROW_MULTIPLE  # the fixture needs a filler
    filled = collator(features)
    collator.row_multiple = None
    plain = collator(features)
    width = filled["input_ids"].shape[1]
    assert width % ONEDNN_ROW_MULTIPLE == 0 and real < width < real + ONEDNN_ROW_MULTIPLE
    assert filled["input_ids"][0, real:].eq(tokenizer.pad_token_id).all() and filled["labels"][0, real:].eq(-100).all()
    assert filled["cu_seq_lens_q"].tolist() == [*plain["cu_seq_lens_q"].tolist(), width]
    assert filled["position_ids"][0, real:].tolist() == list(range(width - real))  # the filler's own positions
    model.eval()
    with torch.no_grad():
        filled_out, plain_out = model(**filled), model(**plain)
    assert torch.allclose(filled_out.logits[0, :real], plain_out.logits[0], atol=1e-6)
    assert torch.allclose(filled_out.loss, plain_out.loss, atol=1e-6)


def test_bf16_training_on_the_cpu_feeds_rows_of_a_multiple_of_32(tiny_bert, ner_files, tmp_path, monkeypatch):
    import functools

    from transformers import BertForTokenClassification

    from test_run_ner import run

    widths = {}
    forward = BertForTokenClassification.forward

    @functools.wraps(forward)  # the Trainer passes the columns the signature names
    def watched(model, input_ids=None, **kwargs):  # the rows the model trains on (the packing check is in eval)
        if model.training:
            widths.setdefault(precision, []).append(input_ids.shape[1])
        return forward(model, input_ids=input_ids, **kwargs)

    monkeypatch.setattr(BertForTokenClassification, "forward", watched)
    for precision, flags in (("bf16", ["--bf16", "--use_cpu"]), ("fp32", ["--no_auto_mixed_precision"])):
        run(tiny_bert, tmp_path / precision, "--do_train", "--max_steps", "4", *flags, files={"train": ner_files["train"]})
    assert len(widths["bf16"]) >= 4 and all(width % 32 == 0 for width in widths["bf16"])
    assert any(width % 32 for width in widths["fp32"])  # fp32 rows keep their own length


FAULTS_OF_A_TRAINING_STEP = """
import json, resource, sys, torch
from nerkit.speed import keep_freed_memory
kept = keep_freed_memory(sys.argv[1])
def step():  # what a training step does with its largest tensors: allocate, fill, free
    for _ in range(3):
        torch.ones(16 * 1024 * 1024)  # 64 MB, past glibc's largest threshold for mapped blocks
for _ in range(4):  # glibc's heap settles (a freed block split by small ones is not reused at once)
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    step()
print(json.dumps({"kept": kept, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def run_allocator_script(script, *args, **variables):
    """Run `script` in a fresh Python with glibc's default settings (no allocator variable of this
    environment's) plus `variables`; returns the JSON it prints."""
    import json
    import subprocess

    environ = {name: value for name, value in os.environ.items()
               if not name.startswith("MALLOC_") and name not in ("LD_PRELOAD", "GLIBC_TUNABLES",
                                                                   "NERKIT_KEEP_FREED_MEMORY")}
    result = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True,
                            env={**environ, **variables}, cwd=os.path.dirname(os.path.dirname(__file__)), check=True)
    return json.loads(result.stdout)


def faults_of_steps(device_type, **variables):
    return run_allocator_script(FAULTS_OF_A_TRAINING_STEP, device_type, **variables)


def test_freed_memory_is_reused_without_page_faults_on_the_cpu():
    """glibc would map each 64 MB tensor afresh and fault in every page again; kept, the memory is reused.
    Only where glibc is the allocator (Linux)."""
    glibc()
    plain = faults_of_steps("cpu", NERKIT_KEEP_FREED_MEMORY="0")
    kept = faults_of_steps("cpu")
    assert not plain["kept"] and kept["kept"]
    assert kept["faults"] * 10 < plain["faults"], (plain, kept)


FREED_INSIDE_THE_HEAP = """
import json, sys, torch
from nerkit.speed import keep_freed_memory, return_freed_memory
def resident_mb():
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * 4096 / 2**20
keep_freed_memory("cpu")  # as the scripts run: freed memory is kept
held = [torch.ones(256 * 1024 * (1 + i % 3)) for i in range(100)]  # 1-3 MB each, 200 MB in all, touched
last = held.pop()  # still in use at the heap's top, so glibc cannot simply shrink the heap
held.clear()
before = resident_mb()
return_freed_memory()
print(json.dumps({"before": before, "after": resident_mb()}))
"""


def test_freed_memory_inside_the_heap_goes_back_to_the_system():
    """What evaluation does every few batches: blocks freed below one still in use, which glibc keeps, are
    returned (the resident set falls by about their 200 MB)."""
    glibc()
    memory = run_allocator_script(FREED_INSIDE_THE_HEAP)
    assert memory["before"] - memory["after"] > 150, memory


def test_evaluation_returns_freed_memory_every_few_batches(monkeypatch):
    import nerkit.decoding
    import nerkit.speed

    calls = []
    monkeypatch.setattr(nerkit.speed, "return_freed_memory", lambda: calls.append(1))
    count = 2 * nerkit.decoding.TRIM_EVERY + 5
    decoder = WordDecoder({"word_ids": [[NO_WORD, 0, NO_WORD]] * count, "example_id": list(range(count))}, [1] * count)
    for _ in range(count):
        decoder.add_batch(np.zeros((1, 3, 2), dtype=np.float32))
    assert len(calls) == 2
    assert decoder.result(LABELS, "O", "validation", "IOB2")[0] == [["O"]] * count


SCRIPT_AS_MAIN = """
import gc, json, runpy, sys
sys.argv = ["predict_ner.py", "--model", sys.argv[1], "--words"]
runpy.run_path("predict_ner.py", run_name="__main__")
sys.stderr.write(json.dumps({"frozen": gc.get_freeze_count(), "collectable": len(gc.get_objects())}))
"""


def test_a_script_leaves_what_it_made_out_of_the_collection_at_exit(trained_model):
    """At its end a script moves every object into the collector's permanent generation, so the shutdown's
    last collections do not walk torch and transformers; its output is whole."""
    import json
    import subprocess

    result = subprocess.run([sys.executable, "-c", SCRIPT_AS_MAIN, trained_model], input="John Smith lives here\n",
                            capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(__file__)),
                            env=dict(os.environ, HF_HUB_OFFLINE="1"), check=True)
    assert len(json.loads(result.stdout)["labels"]) == 4
    counts = json.loads(result.stderr.splitlines()[-1])
    assert counts["frozen"] > 100_000 and counts["collectable"] < counts["frozen"] // 100, counts


@pytest.mark.parametrize("variables", [{"MALLOC_ARENA_MAX": "2"}, {"LD_PRELOAD": "/usr/lib/libjemalloc.so.2"},
                                       {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=0"},
                                       {"NERKIT_KEEP_FREED_MEMORY": "off"}])
def test_an_allocator_setting_of_the_users_is_left_alone(variables, caplog):
    from nerkit.speed import allocator_chosen_by_user, keep_freed_memory

    assert allocator_chosen_by_user(variables)
    with caplog.at_level("INFO", logger="nerkit.speed"):
        assert not keep_freed_memory("cpu", variables)
        assert not keep_freed_memory("cuda", {})  # a GPU run's tensors are not glibc's
    assert not caplog.records
    assert not allocator_chosen_by_user({"LD_PRELOAD": "", "PATH": "/usr/bin"})


class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                      "fsmblks", "uordblks", "fordblks", "keepcost")]


def glibc():
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc's allocator only")
    libc = ctypes.CDLL("libc.so.6")
    if not hasattr(libc, "mallinfo2"):
        pytest.skip("glibc before 2.33 has no mallinfo2")
    libc.mallinfo2.restype = MallInfo2
    return libc


def maps_large_tensors(libc):
    """Whether glibc gives a new large tensor a mapped block of its own, which it unmaps when freed. The
    tensor is larger than all the free memory of the heap (which would serve it either way), and empty:
    no page of it is touched."""
    import torch

    before = libc.mallinfo2()
    tensor = torch.empty((before.fordblks + 64 * 1024 * 1024) // 4)
    mapped = libc.mallinfo2().hblkhd - before.hblkhd >= tensor.numel() * 4
    del tensor
    return mapped


@pytest.mark.parametrize("script", ["run_ner", "run_ner_no_trainer", "predict_ner"])
def test_each_script_keeps_freed_memory_on_the_cpu(script, tiny_bert, ner_files, trained_model, tmp_path, caplog,
                                                    monkeypatch):
    import logging

    import torch

    import predict_ner
    from test_precision import run_loop
    from test_predict_ner import TEXTS
    from test_run_ner import run

    libc = glibc()
    if torch.cuda.is_available():
        pytest.skip("the scripts would run on the GPU")
    for name in [name for name in os.environ if name.startswith("MALLOC_")] + ["LD_PRELOAD", "GLIBC_TUNABLES",
                                                                               "NERKIT_KEEP_FREED_MEMORY"]:
        monkeypatch.delenv(name, raising=False)
    libc.mallopt(-4, 65536)  # glibc's defaults, whatever an earlier run in this process set
    libc.mallopt(-1, 128 * 1024)
    assert maps_large_tensors(libc)
    with caplog.at_level(logging.INFO, logger="nerkit"):
        if script == "run_ner":
            run(tiny_bert, tmp_path / "o", "--do_train", "--max_steps", "1", files={"train": ner_files["train"]})
        elif script == "run_ner_no_trainer":
            run_loop(tiny_bert, tmp_path / "o", {"train": ner_files["train"]}, "--max_train_steps", "1")
        else:
            predict_ner.Tagger(trained_model, None, 64, 8, "viterbi").tag([text.split() for text in TEXTS])
    assert not maps_large_tensors(libc)
    assert "Memory that tensors free is kept for reuse" in caplog.text


@pytest.fixture
def cudnn_attention_restored():
    import torch

    enabled = torch.backends.cuda.cudnn_sdp_enabled()
    torch.backends.cuda.enable_cudnn_sdp(True)
    yield
    torch.backends.cuda.enable_cudnn_sdp(enabled)


def test_cudnn_attention_is_left_out_on_cuda_unless_the_user_chose(cudnn_attention_restored, caplog):
    """cuDNN plans every new batch shape afresh (bench/RESULTS.md, H100): a CUDA run takes it out of SDPA's
    choices, once, and says so; the CPU, and a user's own setting, are left alone."""
    import torch

    from nerkit.speed import leave_out_cudnn_attention, prepare_device

    with caplog.at_level("INFO", logger="nerkit.speed"):
        assert not leave_out_cudnn_attention("cpu", {})
        for variables in ({"NERKIT_CUDNN_ATTENTION": "1"}, {"TORCH_CUDNN_SDPA_DEPRIORITIZED": "0"}):
            assert not leave_out_cudnn_attention("cuda", variables)
        assert torch.backends.cuda.cudnn_sdp_enabled() and not caplog.records
        assert leave_out_cudnn_attention("cuda", {"NERKIT_CUDNN_ATTENTION": "0"})
        assert not torch.backends.cuda.cudnn_sdp_enabled()
        assert not leave_out_cudnn_attention("cuda", {})  # already out: nothing more to do or say
    assert [record.getMessage().split(" (")[0] for record in caplog.records] == ["cuDNN attention is left out"]

    torch.backends.cuda.enable_cudnn_sdp(True)
    prepare_device("cuda")  # what the three scripts call once the device is known
    assert not torch.backends.cuda.cudnn_sdp_enabled()


@pytest.mark.parametrize("enabled, pad_to_max_length, reason", [
    (False, False, "(--no_packing)"),
    (True, True, "(--pad_to_max_length pads every batch to the window length)"),
])
def test_padded_training_batches_chosen_by_a_flag_are_logged(enabled, pad_to_max_length, reason, caplog):
    from nerkit.speed import choose_packing

    with caplog.at_level(logging.INFO, logger="nerkit.speed"):
        assert choose_packing(None, None, [{"input_ids": [1, 2]}], enabled, pad_to_max_length) is None
    assert f"Training on padded batches {reason}." in caplog.text

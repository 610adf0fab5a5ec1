"""From words to model inputs: the fast tokenizer, label alignment through `word_ids`, and windows.

An example longer than the model's window is cut into overlapping windows at word boundaries, so every
word of every example is trained on, predicted and scored; nothing is truncated away.
"""

import json
import logging
import os
import uuid
from dataclasses import dataclass

from .errors import UserError
from .hub import LOCAL_SPELLINGS, exists_locally, remote_code_refusal

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100  # label of positions the loss and the metrics skip (special tokens, padding)
NO_WORD = -1  # word id stored for special tokens (Arrow columns hold ints, not None)
UNBOUNDED = 1_000_000  # tokenizers without a known maximum report a huge model_max_length
PAD_SPELLINGS = ("[PAD]", "<pad>", "<|pad|>", "<PAD>")  # undeclared padding tokens a vocabulary may hold
DECODER_COLUMNS = ["word_ids", "example_id"]  # feature columns the word decoder reads and no model takes
EXAMPLE_LENGTH = "example_length"  # while encoding only: sub-tokens of each feature's whole example


def load_fast_tokenizer(name_or_path, hub_kwargs, flags="--model_name_or_path or --tokenizer_name"):
    """Load a fast tokenizer, checked before any weights load; byte-level BPE gets add_prefix_space=True.
    `flags` names where the name came from, in messages."""
    from transformers import AutoTokenizer

    local = exists_locally(name_or_path)
    if name_or_path.startswith(LOCAL_SPELLINGS) and not local:
        # a path, not a hub id: the hub's complaint about repository names would only confuse
        raise UserError(f"The folder {name_or_path} does not exist. Check the model or tokenizer named by {flags}.")
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, **hub_kwargs)
    except (OSError, ValueError) as error:
        refusal = remote_code_refusal(name_or_path, error)
        if refusal:
            raise refusal from None
        nowhere = "" if local else " No local folder of that name exists either."
        revision = hub_kwargs.get("revision") or "main"
        at = "" if revision == "main" else f" at revision '{revision}' (--model_revision)"
        raise UserError(f"Could not load a tokenizer from '{name_or_path}'{at}: {str(error).rstrip('.')}.{nowhere} "
                        f"Check {flags}; when offline, give a local folder.") from None
    # predict_ner.py reads the tokenizer from --model's folder only, the training scripts also from --tokenizer_name
    name_files = ", or name them with --tokenizer_name" if "--tokenizer_name" in flags else f" (given by {flags})"
    name_fast = ", or pass --tokenizer_name with a fast one" if "--tokenizer_name" in flags else f" to {flags}"
    if len(tokenizer.get_vocab()) <= len(set(tokenizer.all_special_tokens)):
        # transformers builds an empty tokenizer of the config's class for a folder with no tokenizer files:
        # every word would become the unknown token, and training would run on nothing
        raise UserError(f"'{name_or_path}' holds no tokenizer: the tokenizer built for it knows only its special "
                        "tokens. Copy the tokenizer files (tokenizer.json, or vocab.txt and the like) of the model "
                        f"it was trained from into that folder{name_files}.")
    if not getattr(tokenizer, "is_fast", False):
        raise UserError(f"The tokenizer of '{name_or_path}' ({type(tokenizer).__name__}) is not a fast "
                        "tokenizer. Word alignment needs the word_ids of a fast (Rust `tokenizers`) tokenizer: "
                        f"give a model that ships a tokenizer.json{name_fast}.")
    if is_byte_level(tokenizer) and not adds_prefix_space(tokenizer):
        # Pre-split words must each be encoded as if preceded by a space, the way they appear mid-sentence.
        if splits_before_byte_level(tokenizer):
            prepend_space(tokenizer)
        else:
            tokenizer = AutoTokenizer.from_pretrained(name_or_path, add_prefix_space=True, **hub_kwargs)
            if not adds_prefix_space(tokenizer):
                set_prefix_space(tokenizer)
    # Every batch of every script is padded by this tokenizer, and word predictions are read at the
    # positions of the unpadded `word_ids`: that holds with padding on the right only. Tokenizers that pad
    # on the left (XLNet, many decoder models) would shift every label, and models with absolute positions
    # would see each window at other positions in each batch. For token classification the right is right.
    if tokenizer.padding_side != "right":
        logger.info("Padding batches on the right (the tokenizer of '%s' pads on the %s): word labels are read "
                    "at the tokenizer's own positions.", name_or_path, tokenizer.padding_side)
        tokenizer.padding_side = "right"
    if tokenizer.pad_token is None:
        pad_with_existing_token(tokenizer, name_or_path)
    return tokenizer


def pad_with_existing_token(tokenizer, name_or_path):
    """Give a tokenizer without a padding token (GPT-2 and other decoder models) one of its own tokens to pad
    with, as is usual for them: a declared special token, else a padding token its vocabulary holds without
    declaring it. Padded positions are masked out of attention and carry no label, so which token fills them
    changes nothing; the tokenizer saved with the model keeps the choice. An ordinary word is never used:
    declared special, it would be cut out of the words that contain it."""
    vocabulary = tokenizer.get_vocab()
    roles = [(role.replace("_", " "), getattr(tokenizer, role, None))
             for role in ("eos_token", "unk_token", "sep_token", "cls_token", "bos_token")]
    roles += [("undeclared padding token", token) for token in PAD_SPELLINGS if token in vocabulary]
    for role, token in roles:
        if token is not None:
            tokenizer.pad_token = token
            logger.info("The tokenizer of '%s' has no padding token; batches are padded with its %s %r (masked "
                        "out, so the results do not depend on it).", name_or_path, role, token)
            return
    raise UserError(f"The tokenizer of '{name_or_path}' has no padding token, and no end-of-text, unknown or other "
                    "special token to pad with. Save the tokenizer with one (tokenizer.pad_token = ...; "
                    "tokenizer.save_pretrained(folder)) and load it from that folder (--tokenizer_name in the "
                    "training scripts).")


def _pre_tokenizer_nodes(tokenizer):
    state = json.loads(tokenizer.backend_tokenizer.to_str())
    node = state.get("pre_tokenizer") or {}
    return state, (node.get("pretokenizers") or [node]) if node.get("type") == "Sequence" else [node]


def is_byte_level(tokenizer):
    """Whether the tokenizer pre-tokenizes at the byte level (GPT-2, RoBERTa, BART, Longformer, Bloom...)."""
    return any(node.get("type") == "ByteLevel" for node in _pre_tokenizer_nodes(tokenizer)[1])


def adds_prefix_space(tokenizer):
    return all(node.get("add_prefix_space") for node in _pre_tokenizer_nodes(tokenizer)[1]
               if node.get("type") == "ByteLevel")


def splits_before_byte_level(tokenizer):
    """Whether a regex splits the text before a ByteLevel step that does not split it again (Llama 3,
    Qwen2 and others): a prefix space added by that step would go before every piece of a word ('1,000'
    as ' 1 , 0 0 0'), so the space goes before the word instead (`prepend_space`)."""
    return any(node.get("type") == "ByteLevel" and node.get("use_regex") is False
               for node in _pre_tokenizer_nodes(tokenizer)[1])


def prepend_space(tokenizer):
    """Put a space before each word, in the backend's normalizer, which sees each pre-split word apart; the
    regex then splits ' 1,000' or ' al-Rashid' as it does mid-sentence. A tokenizer that already does so
    (saved by an earlier run) is left as it is."""
    from tokenizers import normalizers

    current = tokenizer.backend_tokenizer.normalizer
    if prepends_space(json.loads(tokenizer.backend_tokenizer.to_str())):
        return
    space = normalizers.Prepend(" ")
    tokenizer.backend_tokenizer.normalizer = space if current is None else normalizers.Sequence([current, space])


def prepends_space(state):
    """Whether a tokenizer.json's state puts a space before each word (`prepend_space`)."""
    normalizer = state.get("normalizer") or {}
    return {"type": "Prepend", "prepend": " "} in (normalizer.get("normalizers") or [normalizer])


def class_that_drops_the_space(folder):
    """The tokenizer class AutoTokenizer rebuilds a saved folder's tokenizer as, when that class builds its
    own pipeline and leaves out the space put before each word (`prepend_space`); else None. transformers 5
    maps some model types (Qwen2 among them) to such a class whatever tokenizer_config.json names, so only
    loading the tokenizer.json as it is (PreTrainedTokenizerFast) tokenizes as training did."""
    try:
        with open(os.path.join(folder, "tokenizer.json"), encoding="utf-8") as handle:
            text = handle.read()
        if '"Prepend"' not in text or not prepends_space(json.loads(text)):  # most have none: no parse needed
            return None
    except (OSError, ValueError):
        return None
    from transformers import AutoTokenizer

    reloaded = AutoTokenizer.from_pretrained(folder)
    if prepends_space(json.loads(reloaded.backend_tokenizer.to_str())):
        return None
    return type(reloaded).__name__


def set_prefix_space(tokenizer):
    """Turn on add_prefix_space in the backend itself, for tokenizer classes that ignore the keyword."""
    from tokenizers import Tokenizer

    state, nodes = _pre_tokenizer_nodes(tokenizer)
    for node in nodes:
        if node.get("type") == "ByteLevel":
            node["add_prefix_space"] = True
    tokenizer.backend_tokenizer.pre_tokenizer = Tokenizer.from_str(json.dumps(state)).pre_tokenizer
    tokenizer.add_prefix_space = True


def window_length(tokenizer, config, requested, flag="--max_seq_length"):
    """The window in sub-tokens: `requested` (the script's `flag`), else the model's maximum; never above.
    The maximum is the tokenizer's, or where it has none the model's position table (at most 512); a
    tokenizer that claims more than the table holds is held to the table."""
    limit = tokenizer.model_max_length if tokenizer.model_max_length < UNBOUNDED else None
    capacity = position_capacity(config)
    if limit is None:
        limit = min(capacity or 512, 512)
    elif capacity is not None and capacity < limit:
        logger.warning("The tokenizer allows %d sub-tokens but the model has positions for %d; windows hold %d.",
                       limit, capacity, capacity)
        limit = capacity
    if requested is None:
        return limit
    if requested > limit:
        logger.warning("%s %d is more than the model's maximum %d; using %d.", flag, requested, limit, limit)
        return limit
    specials = tokenizer.num_special_tokens_to_add()
    if requested <= specials + 1:
        raise UserError(f"{flag} {requested} leaves no room for words next to the model's {specials} special "
                        f"tokens: give at least {specials + 2} (a window that short holds a word or two; 128 or more "
                        "is usual).")
    return requested


def position_capacity(config):
    """Sub-tokens the model's table of absolute positions holds, or None where it has none (XLNet, with
    relative positions only, reports -1). Models that number positions the fairseq way (RoBERTa, XLM-R,
    CamemBERT, Longformer, MPNet, ...) start after the padding token's id, so their table of 514 holds 512."""
    positions = getattr(config, "max_position_embeddings", None)
    if not positions or positions < 0 or getattr(config, "position_embedding_type", "absolute") != "absolute" or \
            not getattr(config, "position_biased_input", True):  # DeBERTa-v3: relative positions only
        return None
    return positions - (config.pad_token_id + 1 if numbers_positions_after_padding(config) else 0)


def numbers_positions_after_padding(config):
    """Whether the model's code numbers positions from pad_token_id + 1 (transformers' modeling module for
    it defines `create_position_ids_from_input_ids`); False for a model transformers does not ship."""
    import importlib

    from transformers.models.auto.configuration_auto import model_type_to_module_name

    if getattr(config, "pad_token_id", None) is None or not getattr(config, "model_type", None):
        return False
    name = model_type_to_module_name(config.model_type)
    try:
        module = importlib.import_module(f"transformers.models.{name}.modeling_{name}")
    except ImportError:
        return False
    marker = "create_position_ids_from_input_ids"
    return hasattr(module, marker) or any(isinstance(value, type) and marker in vars(value)
                                          for value in vars(module).values())


def align_labels(word_ids, word_label_ids, inside_ids=None):
    """Sub-token labels from word labels.

    The first sub-token of each word carries the word's label; later sub-tokens get -100 (ignored), or with
    `inside_ids` (--label_all_tokens) the word's inside label. Special tokens (word id None) get -100.
    """
    labels, previous = [], None
    for word in word_ids:
        if word is None:
            labels.append(IGNORE_INDEX)
        elif word != previous:
            labels.append(word_label_ids[word])
        else:
            labels.append(IGNORE_INDEX if inside_ids is None else inside_ids[word_label_ids[word]])
        previous = word
    return labels


def plan_windows(word_lengths, budget, stride):
    """Cut words into windows of at most `budget` sub-tokens, as (first word, end word) pairs.

    A window never splits a word (a word longer than the budget gets a window of its own and is cut by the
    tokenizer); consecutive windows share their last words up to `stride` sub-tokens, less where the next
    window would then have no room for the first word not yet covered (none before a word longer than the
    budget), so that every window after the first adds a word; each starts at least one word after the
    previous one. Without that room, a 200-sub-token word in windows of 128 moved the windows before it
    on by one word at a time: 78 windows instead of 15 for a document of 1,000 words, its words trained
    up to 64 times an epoch.
    """
    windows, start, count = [], 0, len(word_lengths)
    while True:
        end, used = start, 0
        while end < count and (end == start or used + word_lengths[end] <= budget):
            used += word_lengths[end]
            end += 1
        windows.append((start, end))
        if end >= count:
            return windows
        room = min(stride, budget - word_lengths[end])  # the next window must hold word `end` too
        following, overlap = end, 0
        while following - 1 > start and overlap + word_lengths[following - 1] <= room:
            following -= 1
            overlap += word_lengths[following]
        start = following


def example_windows(word_lengths, max_length, special_tokens, stride):
    """The windows of one example, as (first word, end word) pairs: the whole example when its sub-tokens
    and the special tokens fit in `max_length`, else the cut of `plan_windows` (overlap at most half a window)."""
    if sum(word_lengths) + special_tokens <= max_length:
        return [(0, len(word_lengths))]
    budget = max_length - special_tokens
    return plan_windows(word_lengths, budget, min(stride, budget // 2))


def word_lengths_from_ids(word_ids, word_count):
    """Sub-tokens per word; a word the tokenizer drops entirely (a lone control character) counts 0."""
    lengths = [0] * word_count
    for word in word_ids:
        if word is not None:
            lengths[word] += 1
    return lengths


@dataclass
class EncodingSettings:
    max_length: int
    stride: int
    inside_ids: list | None = None  # set with --label_all_tokens


def encode_batch(batch, tokenizer, settings):
    """`datasets.map` function: examples ({'tokens', 'example_id'[, 'tag_ids']}) to window features."""
    labelled = "tag_ids" in batch
    whole = tokenizer(batch["tokens"], is_split_into_words=True, truncation=False, verbose=False)
    special = tokenizer.num_special_tokens_to_add()
    pieces = []  # (example index, first word, encoding or None to encode below)
    for index, words in enumerate(batch["tokens"]):
        word_ids = whole.word_ids(index)
        if len(word_ids) <= settings.max_length:
            pieces.append((index, 0, word_ids, {key: whole[key][index] for key in whole.keys()}))
            continue
        lengths = word_lengths_from_ids(word_ids, len(words))
        for first, end in example_windows(lengths, settings.max_length, special, settings.stride):
            pieces.append((index, first, words[first:end], None))
    pending = [piece[2] for piece in pieces if piece[3] is None]
    if pending:
        windows = tokenizer(pending, is_split_into_words=True, truncation=True, max_length=settings.max_length)
        cursor = iter(range(len(pending)))
        pieces = [piece if piece[3] is not None else _window_piece(piece, windows, next(cursor)) for piece in pieces]
    features = {key: [] for key in ("example_id", "word_ids", EXAMPLE_LENGTH, *whole.keys())}
    if labelled:
        features["labels"] = []
    for index, first, word_ids, encoding in pieces:
        for key, value in encoding.items():
            features[key].append(value)
        features["example_id"].append(batch["example_id"][index])
        features[EXAMPLE_LENGTH].append(len(whole["input_ids"][index]))
        features["word_ids"].append([NO_WORD if word is None else word + first for word in word_ids])
        if labelled:
            tags = batch["tag_ids"][index][first:]
            features["labels"].append(align_labels(word_ids, tags, settings.inside_ids))
    return features


def _window_piece(piece, windows, position):
    index, first, _, _ = piece
    return index, first, windows.word_ids(position), {key: windows[key][position] for key in windows.keys()}


def encode_split(split, tokenizer, label2id, settings, num_proc=None):
    """A `datasets.Dataset` of window features for one split, in example order, plus a log line on the
    longest example and the windows."""
    import datasets
    from functools import partial

    columns = {"tokens": split.tokens, "example_id": list(range(len(split.tokens)))}
    if split.tags is not None:
        # a tag the model has no label for (only in a run that scores a fine-tuned model) is left out of the
        # loss; the scores read the tags themselves and count it as missed
        columns["tag_ids"] = [[label2id.get(tag, IGNORE_INDEX) for tag in tags] for tags in split.tags]
    examples = datasets.Dataset.from_dict(columns)
    features = examples.map(
        partial(encode_batch, tokenizer=tokenizer, settings=settings),
        batched=True,
        num_proc=num_proc,
        remove_columns=examples.column_names,
        desc=f"Tokenizing {split.name}",
        new_fingerprint=uuid.uuid4().hex,  # in memory, never cached: skip hashing the whole tokenizer
    )
    if EXAMPLE_LENGTH not in features.column_names:  # no examples at all
        return features
    log_lengths(split.name, len(examples), len(features), longest_example(features), settings.max_length)
    return features.remove_columns(EXAMPLE_LENGTH)


def longest_example(features):
    """The longest example in sub-tokens, special tokens included, read from the encoding itself: nothing
    is tokenized twice to find it."""
    import pyarrow.compute

    return pyarrow.compute.max(features.data.column(EXAMPLE_LENGTH)).as_py() or 0


def log_lengths(name, examples, features, longest, max_length):
    if features > examples:
        logger.info("%s: longest example %d sub-tokens; %d windows for %d examples (examples longer than %d "
                    "sub-tokens are split, not truncated).", name, longest, features, examples, max_length)
    else:
        logger.info("%s: longest example %d sub-tokens (windows hold %d).", name, longest, max_length)

import random

import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from nerkit.data import Split
from nerkit.errors import UserError
from nerkit.tokenization import (
    IGNORE_INDEX,
    NO_WORD,
    EncodingSettings,
    adds_prefix_space,
    align_labels,
    encode_split,
    is_byte_level,
    load_fast_tokenizer,
    plan_windows,
    window_length,
)

X = IGNORE_INDEX


@pytest.mark.parametrize(
    "word_ids, word_labels, inside, expected",
    [
        # first sub-token carries the label, later ones and special tokens -100
        ([None, 0, 1, 1, 2, None], [3, 1, 2], None, [X, 3, 1, X, 2, X]),
        # label_all_tokens: later sub-tokens get the inside label (B-PER=1 -> I-PER=2), O stays O
        ([None, 0, 0, 1, 2, 2, None], [1, 2, 0], [0, 2, 2], [X, 1, 2, 2, 0, 0, X]),
        # a word with no sub-token (word 1) simply has no position
        ([None, 0, 2, None], [1, 0, 2], None, [X, 1, 2, X]),
        # only special tokens
        ([None, None], [], None, [X, X]),
    ],
)
def test_align_labels(word_ids, word_labels, inside, expected):
    assert align_labels(word_ids, word_labels, inside) == expected


@pytest.mark.parametrize(
    "lengths, budget, stride, expected",
    [
        ([2, 2, 2], 10, 4, [(0, 3)]),  # fits in one window
        ([2, 2, 2, 2, 2], 5, 2, [(0, 2), (1, 3), (2, 4), (3, 5)]),  # overlap of one word (2 <= stride)
        ([2, 2, 2, 2, 2], 6, 0, [(0, 3), (3, 5)]),  # no overlap
        ([1, 10, 1], 4, 2, [(0, 1), (1, 2), (2, 3)]),  # a word longer than the window gets its own
        ([3, 0, 3, 3], 6, 3, [(0, 3), (1, 4)]),  # a word without sub-tokens costs nothing
        ([1, 1, 1, 1, 9, 1], 4, 2, [(0, 4), (4, 5), (5, 6)]),  # no overlap can fit beside a long word
        ([1, 1, 1, 1, 3, 1], 4, 2, [(0, 4), (3, 5), (5, 6)]),  # the overlap shrinks to what fits beside the word
    ],
)
def test_plan_windows(lengths, budget, stride, expected):
    assert plan_windows(lengths, budget, stride) == expected


def test_plan_windows_covers_every_word_and_respects_the_budget():
    rng = random.Random(0)
    for _ in range(300):
        lengths = [rng.randint(0, 6) for _ in range(rng.randint(1, 60))]
        budget, stride = rng.randint(4, 20), rng.randint(0, 10)
        windows = plan_windows(lengths, budget, min(stride, budget // 2))
        covered = set()
        for (start, end), following in zip(windows, windows[1:] + [None]):
            assert end - start == 1 or sum(lengths[start:end]) <= budget
            if following:
                assert start < following[0] <= end < following[1]  # each window adds a word
            covered.update(range(start, end))
        assert covered == set(range(len(lengths)))
        assert windows[-1][1] == len(lengths)


def test_byte_level_tokenizer_gets_prefix_space(tiny_roberta):
    tokenizer = load_fast_tokenizer(tiny_roberta, {})
    assert is_byte_level(tokenizer) and adds_prefix_space(tokenizer)
    # each pre-split word is encoded as it would be mid-sentence: 'Smith' as ' Smith'
    split = tokenizer(["John", "Smith"], is_split_into_words=True)
    assert split["input_ids"] == tokenizer("John Smith")["input_ids"]
    assert tokenizer.convert_ids_to_tokens(split["input_ids"])[1].startswith("Ġ")


def test_prefix_space_is_set_even_when_the_class_ignores_the_keyword(tiny_roberta, tmp_path):
    generic = PreTrainedTokenizerFast(tokenizer_object=AutoTokenizer.from_pretrained(tiny_roberta).backend_tokenizer)
    generic.save_pretrained(tmp_path)
    tokenizer = load_fast_tokenizer(str(tmp_path), {})
    assert adds_prefix_space(tokenizer)


def test_words_get_a_space_before_them_where_a_regex_splits_before_the_byte_level(tmp_path):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    # Qwen2's and Llama 3's layout: a regex splits (digits one by one), then ByteLevel maps bytes only
    pattern = r"[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(pattern), "isolated"),
                                                     pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    backend.decoder = decoders.ByteLevel()
    text = "He paid 1,000.50 to al-Rashid in Paris . " * 20
    backend.train_from_iterator([text], trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>"],
                                                            initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>").save_pretrained(tmp_path)
    tokenizer = load_fast_tokenizer(str(tmp_path), {})
    words = ["He", "paid", "1,000.50", "to", "al-Rashid", "."]
    split = tokenizer.convert_ids_to_tokens(tokenizer(words, is_split_into_words=True)["input_ids"])
    assert split == backend.encode(" " + " ".join(words)).tokens  # each word as mid-sentence, no space inside
    assert backend.encode(" 1,000").tokens == ["Ġ", "1", ",", "0", "0", "0"]
    tokenizer.save_pretrained(tmp_path / "saved")  # the space is kept once, not added again
    again = load_fast_tokenizer(str(tmp_path / "saved"), {})
    assert again.convert_ids_to_tokens(again(words, is_split_into_words=True)["input_ids"]) == split


def test_wordpiece_tokenizer_is_left_alone(tiny_bert):
    tokenizer = load_fast_tokenizer(tiny_bert, {})
    assert not is_byte_level(tokenizer)


def test_missing_tokenizer_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match=r"The folder .*nothing-here does not exist"):
        load_fast_tokenizer(str(tmp_path / "nothing-here"), {})
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="Could not load a tokenizer") as refused:
        load_fast_tokenizer(str(tmp_path / "empty"), {})
    assert "No local folder" not in str(refused.value)  # the folder is there, only its files are not
    with pytest.raises(UserError) as refused:
        load_fast_tokenizer("nerkit-tests/not-cached", {"revision": "v2.0"}, "--model")  # offline in the tests
    for part in ("at revision 'v2.0'", "No local folder of that name exists", "Check --model;"):
        assert part in str(refused.value)


def test_a_tokenizer_without_a_padding_token_pads_with_its_end_token(tmp_path):
    from tiny_models import build_tiny_gpt2

    tokenizer = load_fast_tokenizer(build_tiny_gpt2(tmp_path / "gpt2"), {})
    assert tokenizer.pad_token == tokenizer.eos_token == "<|endoftext|>"
    batch = tokenizer([["John", "Smith"], ["Mary", "visited", "New", "York"]], is_split_into_words=True,
                      padding=True)
    assert batch["attention_mask"][0][-1] == 0  # the shorter example was padded, on the right


def test_a_model_folder_without_tokenizer_files_is_refused(tiny_bert, tmp_path):
    """transformers builds an empty tokenizer for such a folder, which would turn every word into [UNK]."""
    import shutil

    for name in ("config.json", "model.safetensors"):
        shutil.copy(f"{tiny_bert}/{name}", tmp_path / name)
    with pytest.raises(UserError, match="holds no tokenizer"):
        load_fast_tokenizer(str(tmp_path), {})


def test_a_tokenizer_with_no_token_to_pad_with_is_refused(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    backend = Tokenizer(models.WordLevel({"john": 0, "smith": 1, "[X]": 2}, unk_token="[X]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=backend).save_pretrained(tmp_path / "bare")
    with pytest.raises(UserError, match="no padding token, and no end-of-text"):
        load_fast_tokenizer(str(tmp_path / "bare"), {})


def test_window_length_defaults_to_the_model_maximum_and_clamps(tiny_bert):
    tokenizer = load_fast_tokenizer(tiny_bert, {})
    assert window_length(tokenizer, None, None) == 64
    assert window_length(tokenizer, None, 32) == 32
    assert window_length(tokenizer, None, 1000) == 64


def test_window_length_without_a_tokenizer_maximum_keeps_to_the_position_table(tiny_bert, tiny_roberta, caplog):
    from transformers import AutoConfig

    from nerkit.tokenization import UNBOUNDED

    # RoBERTa numbers positions after its padding id (1): a table of 66 holds 64 sub-tokens, and the model
    # fails past them
    roberta = load_fast_tokenizer(tiny_roberta, {})
    roberta.model_max_length = UNBOUNDED * 1000
    config = AutoConfig.from_pretrained(tiny_roberta)
    assert config.max_position_embeddings == 66
    assert window_length(roberta, config, None) == 64
    assert window_length(roberta, config, 100) == 64
    # a tokenizer that claims more than the table holds is held to it, and says so
    bert = load_fast_tokenizer(tiny_bert, {})
    bert.model_max_length = 512
    with caplog.at_level("WARNING"):
        assert window_length(bert, AutoConfig.from_pretrained(tiny_bert), None) == 64
    assert "allows 512 sub-tokens but the model has positions for 64" in caplog.text


def test_window_length_of_a_model_without_a_position_table(tmp_path, caplog):
    """XLNet's config reports max_position_embeddings -1: no table, so the tokenizer's maximum holds, and
    512 for a tokenizer without one (as xlnet-base-cased's), never -1."""
    from transformers import AutoConfig

    from nerkit.tokenization import UNBOUNDED, position_capacity
    from tiny_models import build_tiny_xlnet

    model = build_tiny_xlnet(tmp_path / "xlnet")
    tokenizer, config = load_fast_tokenizer(model, {}), AutoConfig.from_pretrained(model)
    assert config.max_position_embeddings == -1 and position_capacity(config) is None
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert window_length(tokenizer, config, None) == 64
    assert not [record for record in caplog.records if record.levelname == "WARNING"], caplog.text
    tokenizer.model_max_length = UNBOUNDED * 1000
    assert window_length(tokenizer, config, None) == 512


def test_windows_of_the_full_length_fit_a_roberta_model(tiny_roberta):
    import torch
    from transformers import AutoConfig, AutoModelForTokenClassification

    from nerkit.tokenization import UNBOUNDED

    tokenizer = load_fast_tokenizer(tiny_roberta, {})
    tokenizer.model_max_length = UNBOUNDED * 1000
    config = AutoConfig.from_pretrained(tiny_roberta)
    length = window_length(tokenizer, config, None)
    model = AutoModelForTokenClassification.from_pretrained(tiny_roberta, num_labels=3)
    input_ids = torch.full((1, length), 5)
    assert model(input_ids=input_ids).logits.shape == (1, length, 3)


def test_long_example_is_split_into_windows_that_keep_every_word(tiny_bert):
    tokenizer = load_fast_tokenizer(tiny_bert, {})
    words = ("the unbelievably long meeting in Brussels was reported by Peter Blackburn " * 8).split()
    tags = ["O"] * len(words)
    tags[-2:] = ["B-PER", "I-PER"]
    split = Split("validation", "mem", [words, ["short", "one"]], [tags, ["O", "O"]], ["line 1", "line 2"])
    label2id = {"O": 0, "B-PER": 1, "I-PER": 2}
    features = encode_split(split, tokenizer, label2id, EncodingSettings(max_length=16, stride=4))
    long_windows = [f for f in features if f["example_id"] == 0]
    assert len(long_windows) > 5
    first_positions = set()
    for feature in long_windows:
        assert len(feature["input_ids"]) <= 16
        previous = None
        for position, word in enumerate(feature["word_ids"]):
            if word != NO_WORD and word != previous:
                first_positions.add(word)
                assert feature["labels"][position] == label2id[tags[word]]
            previous = word
    assert first_positions == set(range(len(words)))
    assert [f["example_id"] for f in features][-1] == 1

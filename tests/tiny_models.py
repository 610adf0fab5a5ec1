"""Tiny random checkpoints for tests: a BERT with a WordPiece vocabulary, a RoBERTa with a byte-level
BPE vocabulary (and a Longformer on it), a GPT-2 whose tokenizer has no padding token and an XLNet with a
sentencepiece-style Unigram vocabulary, relative positions only and padding on the left, and a Qwen2 whose
tokenizer class builds its own pipeline on loading, trained in a second with `tokenizers` on a few sentences
and saved like a hub folder.
Nothing is downloaded and no weights are committed."""

import json
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertForMaskedLM,
    BertForTokenClassification,
    BertTokenizer,
    GPT2Config,
    GPT2ForTokenClassification,
    GPT2LMHeadModel,
    GPT2Tokenizer,
    LongformerConfig,
    LongformerForMaskedLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen2Tokenizer,
    RobertaConfig,
    RobertaForMaskedLM,
    RobertaForTokenClassification,
    RobertaTokenizer,
    XLNetConfig,
    XLNetLMHeadModel,
    XLNetTokenizer,
)

CORPUS = [
    "John Smith works at Acme Corporation in New York .",
    "Mary visited Paris and Berlin last year with her friend Pierre .",
    "The European Commission said on Thursday it disagreed with German advice .",
    "EU rejects German call to boycott British lamb .",
    "Peter Blackburn reported from Brussels about the unbelievably long meeting .",
    "Apple and Google opened offices in London , Tokyo and San Francisco .",
    "Tweets about the new iPhone spread quickly over the weekend !",
]
MAX_LENGTH = 64


def _corpus(extra_words=()):
    return CORPUS + [" ".join(extra_words)] * 3 if extra_words else CORPUS


def build_tiny_bert(path, extra_words=(), labels=None, seed=0):
    """Save a 2-layer BERT with an uncased WordPiece vocabulary of about 300 entries to `path`: a masked-LM
    checkpoint like a pretrained one, or with `labels` a token-classification model fine-tuned for them."""
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(_corpus(extra_words), trainers.WordPieceTrainer(vocab_size=300, special_tokens=specials))
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )
    tok.decoder = decoders.WordPiece()
    fast = BertTokenizer(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]", model_max_length=MAX_LENGTH,
    )
    config = BertConfig(
        vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=MAX_LENGTH, pad_token_id=0, **_label_kwargs(labels),
    )
    return _save(BertForTokenClassification if labels else BertForMaskedLM, config, fast, path, seed)


def build_tiny_roberta(path, labels=None, seed=0):
    """Save a 2-layer RoBERTa with a byte-level BPE vocabulary (needs add_prefix_space for split words)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tok.train_from_iterator(
        CORPUS,
        trainers.BpeTrainer(vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()),
    )
    tok.post_processor = processors.RobertaProcessing(("</s>", tok.token_to_id("</s>")), ("<s>", tok.token_to_id("<s>")))
    tok.decoder = decoders.ByteLevel()
    fast = RobertaTokenizer(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
        cls_token="<s>", sep_token="</s>", mask_token="<mask>", model_max_length=MAX_LENGTH,
    )
    config = RobertaConfig(
        vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=MAX_LENGTH + 2, pad_token_id=1, bos_token_id=0,
        eos_token_id=2, **_label_kwargs(labels),
    )
    return _save(RobertaForTokenClassification if labels else RobertaForMaskedLM, config, fast, path, seed)


def build_tiny_longformer(path, seed=0):
    """Save a 2-layer Longformer (masked LM) of the tiny RoBERTa's sizes and vocabulary: its global-attention
    projections get no gradient without a global attention mask, so DDP must look for unused parameters."""
    folder = build_tiny_roberta(path, seed=seed)
    sizes = {key: value for key, value in RobertaConfig.from_pretrained(folder).to_dict().items()
             if key not in ("model_type", "architectures", "transformers_version")}
    config = LongformerConfig(**sizes, attention_window=4)
    return _save(LongformerForMaskedLM, config, AutoTokenizer.from_pretrained(folder), path, seed)


def build_tiny_gpt2(path, labels=None, seed=0):
    """Save a 2-layer GPT-2 with a byte-level BPE vocabulary and, as GPT-2's own, no padding token."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.decoder = decoders.ByteLevel()
    fast = GPT2Tokenizer(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                         unk_token="<|endoftext|>", model_max_length=MAX_LENGTH)
    config = GPT2Config(vocab_size=tok.get_vocab_size(), n_embd=32, n_layer=2, n_head=2, n_positions=MAX_LENGTH,
                        bos_token_id=0, eos_token_id=0, **_label_kwargs(labels))
    return _save(GPT2ForTokenClassification if labels else GPT2LMHeadModel, config, fast, path, seed)


def build_tiny_xlnet(path, seed=0):
    """Save a 2-layer XLNet: its config reports max_position_embeddings -1 (no position table), its
    tokenizer puts the special tokens last and pads on the left."""
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    specials = ["<unk>", "<s>", "</s>", "<cls>", "<sep>", "<pad>", "<mask>"]
    tok.train_from_iterator(CORPUS, trainers.UnigramTrainer(vocab_size=300, special_tokens=specials, unk_token="<unk>"))
    tok.post_processor = processors.TemplateProcessing(
        single="$A:0 <sep>:0 <cls>:2", pair="$A:0 <sep>:0 $B:1 <sep>:1 <cls>:2",
        special_tokens=[("<sep>", tok.token_to_id("<sep>")), ("<cls>", tok.token_to_id("<cls>"))],
    )
    fast = XLNetTokenizer(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>", sep_token="<sep>",
        pad_token="<pad>", cls_token="<cls>", mask_token="<mask>", model_max_length=MAX_LENGTH,
    )
    config = XLNetConfig(vocab_size=tok.get_vocab_size(), d_model=32, n_layer=2, n_head=2, d_inner=64,
                         pad_token_id=tok.token_to_id("<pad>"))
    return _save(XLNetLMHeadModel, config, fast, path, seed)


def build_tiny_qwen2(path, seed=0):
    """Save a 2-layer Qwen2: a byte-level BPE vocabulary behind a regex that splits before the byte-level step
    (digits one by one), and a tokenizer class that transformers 5 rebuilds from the vocabulary and merges on
    every load, whatever the saved tokenizer.json's pipeline says."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    state = json.loads(tok.to_str())["model"]
    fast = Qwen2Tokenizer(vocab=state["vocab"], merges=[tuple(pair) for pair in state["merges"]],
                          model_max_length=MAX_LENGTH)
    config = Qwen2Config(vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=MAX_LENGTH,
                         bos_token_id=0, eos_token_id=0)
    return _save(Qwen2ForCausalLM, config, fast, path, seed)


def _label_kwargs(labels):
    if labels is None:
        return {}
    return {"id2label": dict(enumerate(labels)), "label2id": {label: i for i, label in enumerate(labels)}}


def _save(model_class, config, tokenizer, path, seed):
    import torch

    torch.manual_seed(seed)
    path = Path(path)
    model_class(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)

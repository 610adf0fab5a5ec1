"""Padding-free training in one row per batch: through flash-attention 2's variable-length kernel on GPUs,
and through attention by length buckets on the CPU.

Packed rows with a 4D block-diagonal mask (nerkit.speed) keep PyTorch's SDPA off its flash kernels, which
take no arbitrary mask. Where the flash-attention 2 package is installed, the model supports it
(`_supports_flash_attn`) and training runs in bf16 or fp16 on CUDA, the examples of a batch are instead
laid end to end in a single row with no mask at all; their boundaries (`cu_seq_lens_q/k`, the way
transformers' `DataCollatorWithFlattening` passes them) keep each example attending only to itself, and
the position ids restart for each example. As for packed rows, the model itself is checked first: the
flattened batch must give the padded batch's logits (at half precision's tolerance), or training falls
back to packed rows with a mask.

On the CPU the same one-row batches go through `bucketed_attention` (for models on PyTorch's SDPA): the
linear layers see only real sub-tokens, and attention, its softmax and its dropout run per bucket of
examples of similar length, each bucket padded to its longest, instead of over packed rows of 64 with a
block-diagonal mask. On the AMD EPYC of bench/RESULTS.md, 3 epochs of MiniLM on WNUT-16 took 5-6% less
time than with the packed rows, taking turns twice. The model is checked the same way, and falls back to
the packed rows. In half precision the row is filled up to a multiple of 32 sub-tokens (`bucketed_packing`).
"""

import functools
import itertools
import logging

import torch

from .speed import PackingCollator, packing_collator
from .tokenization import IGNORE_INDEX

logger = logging.getLogger(__name__)

FLASH = "flash_attention_2"


class FlatteningCollator(PackingCollator):
    """Every feature of the batch in one row, in order, with per-example position ids and boundaries. With
    `row_multiple`, a filler example of padding tokens (labels ignored, attending only to itself) ends the
    row at a multiple of that many sub-tokens."""

    row_multiple = None

    @staticmethod
    def rows(lengths):
        return [list(range(len(lengths)))]

    def __call__(self, features):
        features = self.with_filler(features)
        lengths = [len(feature["input_ids"]) for feature in features]
        input_ids = torch.tensor([list(itertools.chain.from_iterable(f["input_ids"] for f in features))])
        boundaries = torch.tensor([0, *itertools.accumulate(lengths)], dtype=torch.int32)
        batch = {"input_ids": input_ids, "cu_seq_lens_q": boundaries, "cu_seq_lens_k": boundaries,
                 "max_length_q": max(lengths), "max_length_k": max(lengths)}
        if any("labels" in feature for feature in features):
            batch["labels"] = torch.tensor([list(itertools.chain.from_iterable(
                f.get("labels", [IGNORE_INDEX] * n) for f, n in zip(features, lengths)))])
        if self.position_start is not None:
            batch["position_ids"] = torch.cat([torch.arange(n) for n in lengths])[None] + self.position_start
        if self.with_token_types:
            batch["token_type_ids"] = torch.zeros_like(input_ids)
        return batch

    def with_filler(self, features):
        short = -sum(len(feature["input_ids"]) for feature in features) % (self.row_multiple or 1)
        if not short:
            return features
        labelled = any("labels" in feature for feature in features)
        return [*features, {"input_ids": [self.pad_token_id] * short,
                            **({"labels": [IGNORE_INDEX] * short} if labelled else {})}]


def varlen_plan(device_type, precision, model_supports_flash, flash_installed):
    """Whether to train on flattened rows with flash-attention 2: only on CUDA, in bf16 or fp16 (the kernel
    takes no float32), for a model that supports it, with the flash-attn package installed."""
    return device_type == "cuda" and precision in ("bf16", "fp16") and model_supports_flash and flash_installed


def uses_varlen_attention(model, device_type, precision):
    from transformers.utils import is_flash_attn_2_available

    supports = bool(getattr(model, "_supports_flash_attn", False))
    return varlen_plan(device_type, precision, supports, supports and is_flash_attn_2_available())


def varlen_packing(model, tokenizer, sample, device, precision):
    """Switch the model to flash-attention 2 on `device` and return a `FlatteningCollator` that reproduces
    its padded outputs, or put the model's attention back and return None."""
    model.to(device)  # the check runs where training will; the Trainer and accelerate move it there anyway
    return one_row_with(model, tokenizer, sample, FLASH, precision, "flash-attention 2",
                        "kept apart by flash-attention 2's variable-length kernel")


def one_row_with(model, tokenizer, sample, implementation, precision, name, how):
    """Switch the model's attention to `implementation` and return a `FlatteningCollator` that reproduces
    its padded outputs (logging `how` the examples are kept apart), or put its attention back and return
    None."""
    previous = model.config._attn_implementation
    try:
        model.set_attn_implementation(implementation)
        collator = packing_collator(model, tokenizer, sample, FlatteningCollator, precision)
    except (ImportError, ValueError, RuntimeError, KeyError) as error:
        logger.info("%s is not usable for this model here (%s).", name, error)
        collator = None
    if collator is None:
        model.set_attn_implementation(previous)
        return None
    logger.info("Training on padding-free batches: each batch in one row, %s.", how)
    return collator


BUCKETED = "nerkit_bucketed"
BUCKETED_OWN_MASKS = "nerkit_bucketed_own_dropout_masks"  # nerkit.dropout switches a bucketed model to it


def bucket_plan(bounds):
    """How `bucketed_attention` lays out one flattened row whose examples end at `bounds` (cu_seq_lens):
    the examples sorted longest first and cut into buckets where the length halves
    (nerkit.workflow.length_batches), each bucket padded to its longest. Returns (gather, buckets,
    scatter): `gather` indexes the row's sub-tokens (the row's length for padding) bucket after bucket,
    `buckets` holds (examples, length, key mask) for each bucket, and `scatter` takes each sub-token of
    the row back from the buckets' concatenated outputs."""
    from .workflow import length_batches

    starts, lengths = bounds[:-1], bounds[1:] - bounds[:-1]
    order = torch.argsort(lengths, descending=True, stable=True)
    sorted_lengths = lengths[order].tolist()
    total = int(bounds[-1])
    gather, buckets, taken = [], [], 0
    for group in length_batches(sorted_lengths, len(sorted_lengths)):
        members = order[group]
        width = sorted_lengths[group[0]]
        offsets = torch.arange(width, device=bounds.device)
        real = offsets[None, :] < lengths[members][:, None]
        gather.append(torch.where(real, starts[members][:, None] + offsets[None, :], total).reshape(-1))
        buckets.append((len(group), width, None if bool(real.all()) else real[:, None, None, :]))
        taken += real.numel()
    gather = torch.cat(gather)
    scatter = torch.empty(total, dtype=torch.long, device=bounds.device)
    is_real = gather < total
    scatter[gather[is_real]] = torch.arange(taken, device=bounds.device)[is_real]
    return gather, buckets, scatter


class LastPlan:
    """The plan of the last row seen: every layer of one forward pass gets the same boundaries."""

    key, plan = None, None

    @classmethod
    def of(cls, bounds):
        key = (bounds.device, tuple(bounds.tolist()))
        if key != cls.key:
            cls.key, cls.plan = key, bucket_plan(bounds)
        return cls.plan


def bucketed_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, cu_seq_lens_q=None,
                       own_masks=False, **kwargs):
    """Attention over one flattened row of several examples (`FlatteningCollator`), computed per bucket of
    examples of similar length with PyTorch's SDPA, so attention's scores, softmax and dropout cover each
    example's own length instead of a packed row's. Anything else (an evaluation batch, padded rows)
    goes to transformers' SDPA attention unchanged, as does a decoder's causal attention (so a model such
    as GPT-2 fails the check on the row and trains on packed rows). With `own_masks`, training computes
    each bucket with `attention_with_masks` instead of SDPA."""
    from torch.nn.functional import scaled_dot_product_attention
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if cu_seq_lens_q is None or query.shape[0] != 1 or key.shape[1] != query.shape[1] or \
            getattr(module, "is_causal", False):  # a decoder's attention: the check then keeps the packed rows
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    gather, buckets, scatter = LastPlan.of(cu_seq_lens_q)
    heads, length, size = query.shape[1:]

    def pieces(states):  # [1, heads, length, size] -> one [examples, heads, width, size] per bucket
        rows = torch.cat([states[0].transpose(0, 1), states.new_zeros(1, heads, size)]).index_select(0, gather)
        return torch.split(rows, [count * width for count, width, _ in buckets])

    outputs = []
    for q, k, v, (count, width, mask) in zip(pieces(query), pieces(key), pieces(value), buckets):
        q, k, v = (x.view(count, width, heads, size).transpose(1, 2) for x in (q, k, v))
        if own_masks and dropout > 0:
            output = attention_with_masks(q, k, v, mask, dropout, scaling)
        else:
            output = scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, scale=scaling)
        outputs.append(output.transpose(1, 2).reshape(count * width, heads, size))
    return torch.cat(outputs).index_select(0, scatter)[None], None


ONEDNN_ROW_MULTIPLE = 32


def bucketed_packing(model, tokenizer, sample, precision=None):
    """On the CPU, for a model on PyTorch's SDPA attention: switch it to `bucketed_attention` and return a
    `FlatteningCollator` that reproduces its padded outputs, or put its attention back and return None.

    In bf16 or fp16 (`precision`) the row ends at a multiple of ONEDNN_ROW_MULTIPLE sub-tokens: oneDNN,
    which computes half-precision matrix multiplies on the CPU, builds kernels for every new shape and keeps
    them, and a row of random examples has a new length almost every step. On the AMD EPYC of
    bench/RESULTS.md, three epochs of MiniLM on WNUT-16 in bf16 peaked at 1.17 GB of resident memory
    against 2.28 GB, and trained in 79 s against 100 s."""
    if model.config._attn_implementation != "sdpa":
        return None
    register_bucketed_attention()
    collator = one_row_with(model, tokenizer, sample, BUCKETED, None, "Attention by length buckets",
                            "attention computed per bucket of examples of similar length")
    if collator is not None and precision in ("bf16", "fp16"):
        collator.row_multiple = ONEDNN_ROW_MULTIPLE
        logger.info("In %s each row ends at a multiple of %d sub-tokens (a filler example whose labels are "
                    "ignored): oneDNN builds and keeps kernels for each new matrix shape.", precision,
                    ONEDNN_ROW_MULTIPLE)
    return collator


def attention_with_masks(query, key, value, mask, dropout, scaling):
    """Attention with dropout as SDPA's CPU math path computes it (in float32 for bf16 or fp16 inputs), with
    the dropout masks of nerkit.dropout. `mask` (or None) marks the keys to attend to."""
    from .dropout import keep_scale

    with torch.autocast(query.device.type, enabled=False):
        scale = scaling if scaling is not None else query.shape[-1] ** -0.5
        scores = torch.matmul(query.float() * scale, key.float().transpose(-2, -1))
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))  # every example has a key, so no row is all -inf
        probabilities = torch.softmax(scores, dim=-1)
        return torch.matmul(probabilities * keep_scale(probabilities, dropout), value.float()).to(query.dtype)


def register_bucketed_attention():
    """Make BUCKETED and BUCKETED_OWN_MASKS names a model's attention can be set to."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(BUCKETED, bucketed_attention)
    AttentionInterface.register(BUCKETED_OWN_MASKS, functools.partial(bucketed_attention, own_masks=True))
    for name in (BUCKETED, BUCKETED_OWN_MASKS):
        AttentionMaskInterface.register(name, sdpa_mask)  # padded batches (evaluation) keep SDPA's masks

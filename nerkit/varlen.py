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

import dataclasses
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


@dataclasses.dataclass
class Bucket:
    """Examples of similar length that attend as one padded batch: `count` of them, `width` their longest.
    `gather` [count x width] indexes the row's sub-tokens example after example; a padding slot reads its
    example's first sub-token, a key that `mask` ([count, 1, width], True where real) and `bias` (0 or
    -inf, float32) keep out of attention, and a query whose output is dropped. `padding`
    ([count x width, 1, 1], True at padding slots) is None where the bucket has none, as are `mask` and
    `bias`."""

    count: int
    width: int
    gather: torch.Tensor
    mask: torch.Tensor = None
    bias: torch.Tensor = None
    padding: torch.Tensor = None


@dataclasses.dataclass
class BucketPlan:
    """How `bucketed_attention` lays out one flattened row: its `buckets`, and `scatter` [row length], the
    slot of each sub-token of the row among the buckets' slots laid end to end."""

    buckets: list
    scatter: torch.Tensor


def bucket_plan(bounds):
    """The `BucketPlan` of one flattened row whose examples end at `bounds` (cu_seq_lens): the examples
    sorted longest first and cut into buckets where the length halves (nerkit.workflow.length_batches),
    each bucket padded to its longest."""
    from .workflow import length_batches

    starts, lengths = bounds[:-1].long(), (bounds[1:] - bounds[:-1]).long()
    order = torch.argsort(lengths, descending=True, stable=True)
    sorted_lengths = lengths[order].tolist()
    buckets, slots = [], []
    for group in length_batches(sorted_lengths, len(sorted_lengths)):
        members = order[group]
        width = sorted_lengths[group[0]]
        offsets = torch.arange(width, device=bounds.device)
        real = offsets[None, :] < lengths[members][:, None]
        gather = (starts[members][:, None] + torch.where(real, offsets[None, :], 0)).reshape(-1)
        bucket = Bucket(len(group), width, gather)
        if not bool(real.all()):
            bucket.mask = real[:, None, :]
            bucket.bias = torch.zeros(real.shape, device=bounds.device).masked_fill_(~real, float("-inf"))[:, None, :]
            bucket.padding = ~real.reshape(-1, 1, 1)
        buckets.append(bucket)
        slots.append(torch.where(real, gather.view(real.shape), -1).reshape(-1))
    slots = torch.cat(slots)
    is_real = slots >= 0
    scatter = torch.empty(int(bounds[-1]), dtype=torch.long, device=bounds.device)
    scatter[slots[is_real]] = torch.arange(len(slots), device=bounds.device)[is_real]
    return BucketPlan(buckets, scatter)


class LastPlan:
    """The plan of the last row seen: every layer of one forward pass gets the same boundaries."""

    key, plan = None, None

    @classmethod
    def of(cls, bounds):
        key = (bounds.device, tuple(bounds.tolist()))
        if key != cls.key:
            cls.key, cls.plan = key, bucket_plan(bounds)
        return cls.plan


class GatherBuckets(torch.autograd.Function):
    """[heads, row length, size] -> one contiguous [heads, count x width, size] per bucket of a `BucketPlan`
    (so attention's products need no copy). The gradient is read back with one index_select of each
    sub-token's own slot instead of an index_add per bucket into zeros: the padding slots, which read real
    sub-tokens too, have no effect on the outputs (masked keys, dropped queries), so they owe no gradient."""

    @staticmethod
    def forward(ctx, states, plan):
        ctx.plan = plan
        states = states.contiguous()  # usually a transposed view; gathering from a contiguous copy is faster
        return tuple(states.index_select(1, bucket.gather) for bucket in plan.buckets)

    @staticmethod
    def backward(ctx, *grads):
        slots = torch.cat([grad.transpose(0, 1) for grad in grads])  # [slots, heads, size]
        return slots.index_select(0, ctx.plan.scatter).transpose(0, 1), None


class ScatterBuckets(torch.autograd.Function):
    """The buckets' outputs ([heads, count x width, size] each) back in the row's order, as
    [row length, heads, size]. The gradient of a padding slot is zero: its query's output was dropped."""

    @staticmethod
    def forward(ctx, plan, *outputs):
        ctx.plan = plan
        slots = torch.cat([output.transpose(0, 1) for output in outputs])  # [slots, heads, size]
        return slots.index_select(0, plan.scatter)

    @staticmethod
    def backward(ctx, grad):
        grads = []
        for bucket in ctx.plan.buckets:
            piece = grad.index_select(0, bucket.gather)
            if bucket.padding is not None:
                piece.masked_fill_(bucket.padding, 0)
            grads.append(piece.transpose(0, 1))
        return (None, *grads)


def bucketed_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, cu_seq_lens_q=None,
                       own_masks=False, **kwargs):
    """Attention over one flattened row of several examples (`FlatteningCollator`), computed per bucket of
    examples of similar length with PyTorch's SDPA, so attention's scores, softmax and dropout cover each
    example's own length instead of a packed row's. Anything else (an evaluation batch, padded rows)
    goes to transformers' SDPA attention unchanged, as does a decoder's causal attention (so a model such
    as GPT-2 fails the check on the row and trains on packed rows). With `own_masks`, training computes
    each bucket with `attention_with_masks` instead of SDPA.

    A bucket's tensors are [heads, examples, width, size]: attention is the same for every (head, example)
    pair, and in that order the heads and examples of a contiguous gather fold into one batch dimension of
    the matrix products without a copy."""
    from torch.nn.functional import scaled_dot_product_attention
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if cu_seq_lens_q is None or query.shape[0] != 1 or key.shape[1] != query.shape[1] or \
            getattr(module, "is_causal", False):  # a decoder's attention: the check then keeps the packed rows
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    plan = LastPlan.of(cu_seq_lens_q)
    heads, size = query.shape[1], query.shape[3]
    outputs = []
    # squeeze, not [0]: indexing's backward would copy each gradient into zeros, and the copy's layout would
    # then cost the projection's reshape another copy; squeeze hands the gradient back as it is
    pieces = (GatherBuckets.apply(states.squeeze(0), plan) for states in (query, key, value))
    for bucket, q, k, v in zip(plan.buckets, *pieces):
        q, k, v = (x.view(heads, bucket.count, bucket.width, size) for x in (q, k, v))
        if own_masks and dropout > 0:
            output = attention_with_masks(q, k, v, bucket.bias, dropout, scaling)
        else:
            output = scaled_dot_product_attention(q, k, v, attn_mask=bucket.mask, dropout_p=dropout, scale=scaling)
        outputs.append(output.view(heads, bucket.count * bucket.width, size))
    return ScatterBuckets.apply(plan, *outputs)[None], None


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


def attention_with_masks(query, key, value, bias, dropout, scaling):
    """Attention with dropout as SDPA's CPU math path computes it (in float32 for bf16 or fp16 inputs), with
    the dropout masks of nerkit.dropout. `bias` (or None) is added to the scores: 0 for keys to attend to,
    -inf for the others. The dropped weights are zeroed and the output scaled by 1 / (1 - p), which is
    dropout's scaling of the weights moved past the product, on the smaller tensor."""
    from .dropout import kept

    with torch.autocast(query.device.type, enabled=False):
        scale = scaling if scaling is not None else query.shape[-1] ** -0.5
        scores = torch.matmul(query.float(), key.float().transpose(-2, -1))
        # every example has a key, so no row is all -inf
        scores = scores.mul_(scale) if bias is None else torch.add(bias, scores, alpha=scale)
        probabilities = torch.softmax(scores, dim=-1)
        weights = probabilities * kept(probabilities, dropout)
        return torch.matmul(weights, value.float()).mul_(1 / (1 - dropout)).to(query.dtype)


def register_bucketed_attention():
    """Make BUCKETED and BUCKETED_OWN_MASKS names a model's attention can be set to."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(BUCKETED, bucketed_attention)
    AttentionInterface.register(BUCKETED_OWN_MASKS, functools.partial(bucketed_attention, own_masks=True))
    for name in (BUCKETED, BUCKETED_OWN_MASKS):
        AttentionMaskInterface.register(name, sdpa_mask)  # padded batches (evaluation) keep SDPA's masks

"""Doing the same training work faster: padding-free batches and mixed precision where it pays.

Padding-free (packed) batches: the examples of a randomly drawn batch are laid end to end in a few rows,
each attending only to itself (a block-diagonal attention mask) with its own position ids. The batch, the
loss and the gradients are those of the padded batch; only the padding (64% extra sub-tokens on WNUT-16)
is not computed. Whether a model computes packed rows exactly as separate ones is checked on the model
itself before training (absolute, RoBERTa-style or no position ids); when it does not, or the model takes
no position ids or 4D masks, training uses ordinary padded batches.

Mixed precision is turned on where the hardware does it well: bf16 on GPUs that support it, and on CPUs
whose bf16 matrix multiply is measured faster than fp32 (AMX or AVX512-BF16; on others it is much slower).
"""

import logging
import time

import torch

from .tokenization import IGNORE_INDEX

logger = logging.getLogger(__name__)

MIN_ROW = 64  # packed rows hold at least this many sub-tokens (longer when an example is longer); on
# 2 CPU cores rows of 64 beat 128 and the longest example alone: attention and its dropout grow as rows²


def pack_rows(lengths, capacity):
    """First-fit decreasing: indexes of the examples in each row, every row at most `capacity` long."""
    rows, room = [], []
    for index in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        for row, free in enumerate(room):
            if lengths[index] <= free:
                rows[row].append(index)
                room[row] -= lengths[index]
                break
        else:
            rows.append([index])
            room.append(capacity - lengths[index])
    return rows


class PackingCollator:
    """Collate a batch of features into packed rows (see the module docstring).

    `position_start` is where the model's position ids begin (0 for BERT, padding_idx + 1 for RoBERTa), or
    None for models that take no position ids. Features must not be padded already.
    """

    def __init__(self, pad_token_id, position_start, with_token_types):
        self.pad_token_id = pad_token_id
        self.position_start = position_start
        self.with_token_types = with_token_types

    @staticmethod
    def rows(lengths):
        """Indexes of the features in each packed row."""
        return pack_rows(lengths, max(MIN_ROW, max(lengths)))

    def __call__(self, features):
        lengths = [len(feature["input_ids"]) for feature in features]
        rows = self.rows(lengths)
        width = max(sum(lengths[i] for i in row) for row in rows)
        input_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        positions = torch.zeros((len(rows), width), dtype=torch.long)
        segments = torch.full((len(rows), width), -1, dtype=torch.long)
        for row, members in enumerate(rows):
            start = 0
            for segment, index in enumerate(members):
                end = start + lengths[index]
                input_ids[row, start:end] = torch.tensor(features[index]["input_ids"])
                if "labels" in features[index]:
                    labels[row, start:end] = torch.tensor(features[index]["labels"])
                positions[row, start:end] = torch.arange(lengths[index]) + (self.position_start or 0)
                segments[row, start:end] = segment
                start = end
        same = (segments[:, :, None] == segments[:, None, :]) & (segments[:, :, None] >= 0)
        # padding positions attend to themselves only, so no row of the mask is empty
        same |= torch.eye(width, dtype=torch.bool)[None]
        batch = {"input_ids": input_ids, "attention_mask": same[:, None], "labels": labels}
        if self.position_start is not None:
            batch["position_ids"] = positions
        if self.with_token_types:
            batch["token_type_ids"] = torch.zeros_like(input_ids)
        if not any("labels" in feature for feature in features):
            del batch["labels"]
        return batch


def packing_collator(model, tokenizer, sample_features, make_collator=PackingCollator, precision=None):
    """A packing collator (`make_collator`: `PackingCollator` or a subclass) that reproduces this model's
    padded outputs on `sample_features`, or None. With `precision` ('bf16' or 'fp16') both run under
    autocast, as training will, and are compared at that precision's tolerance."""
    with_token_types = "token_type_ids" in sample_features[0]
    samples = [{key: feature[key] for key in ("input_ids", "labels") if key in feature}
               for feature in sample_features]
    candidates = [0, None]
    pad = getattr(model.config, "pad_token_id", None)
    if pad is not None:
        candidates.insert(1, pad + 1)  # RoBERTa-style position ids start after the padding index
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), autocast(model.device.type, precision):
            reference = padded_logits(model, samples, tokenizer.pad_token_id or 0)
            for start in candidates:
                collator = make_collator(tokenizer.pad_token_id or 0, start, with_token_types)
                if _reproduces(model, collator, samples, reference, TOLERANCE[precision]):
                    return collator
    finally:
        model.train(was_training)
    return None


TOLERANCE = {None: (1e-4, 1e-3), "bf16": (5e-2, 5e-2), "fp16": (5e-2, 5e-2)}  # (atol, rtol) on logits; a
# packing mistake (examples attending to each other, wrong positions) moves logits by far more


def autocast(device_type, precision):
    """Autocast to bf16/fp16 as mixed-precision training does, or nothing for fp32."""
    import contextlib

    if precision is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def padded_logits(model, samples, pad_token_id):
    """Each sample's logits from one padded batch (what training without packing computes), in one
    forward pass rather than one per sample."""
    lengths = [len(s["input_ids"]) for s in samples]
    input_ids = torch.full((len(samples), max(lengths)), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    for row, sample in enumerate(samples):
        input_ids[row, :lengths[row]] = torch.tensor(sample["input_ids"])
        attention_mask[row, :lengths[row]] = 1
    logits = model(input_ids=input_ids.to(model.device), attention_mask=attention_mask.to(model.device)).logits
    return [logits[row, :length] for row, length in enumerate(lengths)]


def _reproduces(model, collator, samples, reference, tolerance):
    batch = collator(samples)
    batch.pop("labels", None)
    try:
        logits = model(**{key: value.to(model.device) if torch.is_tensor(value) else value
                          for key, value in batch.items()}).logits
    except (TypeError, ValueError, RuntimeError):  # no position_ids argument, no 4D masks, ...
        return False
    lengths = [len(s["input_ids"]) for s in samples]
    for row, members in enumerate(collator.rows(lengths)):
        start = 0
        for index in members:
            piece = logits[row, start:start + lengths[index]]
            if not torch.allclose(piece.float(), reference[index].float(), atol=tolerance[0], rtol=tolerance[1]):
                return False
            start += lengths[index]
    return True


def choose_packing(model, tokenizer, train_features, enabled, pad_to_max_length, device="cpu", precision=None):
    """The packing collator for training, or None (with the reason logged). On CUDA with flash-attention 2
    and half precision, examples are laid end to end in one row and its variable-length kernel keeps them
    apart (nerkit.varlen); elsewhere, packed rows with a block-diagonal mask. `device`: where training runs."""
    from .varlen import uses_varlen_attention, varlen_packing

    if not enabled or pad_to_max_length or train_features is None:
        return None
    sample = [train_features[i] for i in range(min(8, len(train_features)))]
    if uses_varlen_attention(model, torch.device(device).type, precision):
        collator = varlen_packing(model, tokenizer, sample, device, precision)
        if collator is not None:
            return collator
    collator = packing_collator(model, tokenizer, sample)
    if collator is None:
        logger.info("Padding-free batches do not reproduce this model's outputs; training on padded batches.")
    else:
        logger.info("Training on padding-free batches (packed rows with block-diagonal attention).")
    return collator


def fused_adamw(device_type):
    """Whether AdamW should use its fused kernel on this device type: one pass over the parameters instead
    of the several of the foreach kernels, the same update up to float rounding. The Trainer does so by
    default from torch 2.8 (`adamw_torch_fused`); the Accelerate loop follows it. On an AMD EPYC core an
    optimizer step of MiniLM took 0.03 s of CPU time fused against 0.16 s foreach (median of 10)."""
    from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

    return _torch_at_least(2, 8) and device_type in _get_fused_kernels_supported_devices()


def _torch_at_least(major, minor):
    return tuple(int(part) for part in torch.__version__.split("+")[0].split(".")[:2]) >= (major, minor)


def bf16_pays_on_cpu(size=512, repeats=8):
    """Whether a bf16 matrix multiply is clearly faster than fp32 on this CPU (measured, about 0.2 s)."""
    timings = {}
    for dtype in (torch.float32, torch.bfloat16):
        a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
        a @ b
        started = time.perf_counter()
        for _ in range(repeats):
            a @ b
        timings[dtype] = time.perf_counter() - started
    return timings[torch.bfloat16] * 1.3 < timings[torch.float32]


def automatic_precision(use_cpu=False):
    """'bf16' where the hardware runs it well, else None (fp32)."""
    if torch.cuda.is_available() and not use_cpu:
        return "bf16" if torch.cuda.is_bf16_supported() else None
    return "bf16" if bf16_pays_on_cpu() else None

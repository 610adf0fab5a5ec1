"""Padding-free training on GPUs through flash-attention 2's variable-length kernel.

Packed rows with a 4D block-diagonal mask (nerkit.speed) keep PyTorch's SDPA off its flash kernels, which
take no arbitrary mask. Where the flash-attention 2 package is installed, the model supports it
(`_supports_flash_attn`) and training runs in bf16 or fp16 on CUDA, the examples of a batch are instead
laid end to end in a single row with no mask at all; their boundaries (`cu_seq_lens_q/k`, the way
transformers' `DataCollatorWithFlattening` passes them) keep each example attending only to itself, and
the position ids restart for each example. As for packed rows, the model itself is checked first: the
flattened batch must give the padded batch's logits (at half precision's tolerance), or training falls
back to packed rows with a mask. Nothing changes on CPU, where the masked rows are the faster path.
"""

import itertools
import logging

import torch

from .speed import PackingCollator, packing_collator
from .tokenization import IGNORE_INDEX

logger = logging.getLogger(__name__)

FLASH = "flash_attention_2"


class FlatteningCollator(PackingCollator):
    """Every feature of the batch in one row, in order, with per-example position ids and boundaries."""

    @staticmethod
    def rows(lengths):
        return [list(range(len(lengths)))]

    def __call__(self, features):
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
    previous = model.config._attn_implementation
    model.to(device)  # the check runs where training will; the Trainer and accelerate move it there anyway
    try:
        model.set_attn_implementation(FLASH)
        collator = packing_collator(model, tokenizer, sample, FlatteningCollator, precision)
    except (ImportError, ValueError, RuntimeError) as error:
        logger.info("flash-attention 2 is not usable here (%s).", error)
        collator = None
    if collator is None:
        model.set_attn_implementation(previous)
        return None
    logger.info("Training on padding-free batches: each batch in one row, kept apart by flash-attention 2's "
                "variable-length kernel.")
    return collator

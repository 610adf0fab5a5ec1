"""Doing the same training work faster: padding-free batches and mixed precision where it pays.

Padding-free (packed) batches: the examples of a randomly drawn batch are laid end to end in a few rows,
each attending only to itself (a block-diagonal attention mask) with its own position ids. The batch, the
loss and the gradients are those of the padded batch; only the padding (64% extra sub-tokens on WNUT-16)
is not computed. Whether a model computes packed rows exactly as separate ones is checked on the model
itself before training (absolute, RoBERTa-style or no position ids); when it does not, or the model takes
no position ids or 4D masks, training uses ordinary padded batches. On the CPU, and on GPUs with
flash-attention 2, the examples go in a single row instead, kept apart by their boundaries (nerkit.varlen);
the packed rows are where that is not possible.

Mixed precision is decided once for a run by `decide_precision`: what the command names wins (--fp16/--bf16,
or `accelerate launch`'s configuration); otherwise the automatic choice is bf16 on CUDA GPUs that support it
and on CPUs with bf16 matrix instructions (AMX-BF16 or AVX512-BF16; on other CPUs bf16 is emulated and
several times slower), fp32 elsewhere. `NERKIT_AUTO_PRECISION=bf16|fp32` forces the automatic choice.

On the CPU under glibc, memory that tensors free is kept for the next step rather than returned to the
system and faulted in again (`keep_freed_memory`). On CUDA, cuDNN is left out of the attention kernels, as it
plans afresh for every new batch shape (`leave_out_cudnn_attention`).

predict_ner.py --int8 (CPU only, never automatic, as it changes some labels) runs the linear layers on int8
weights and activations instead (`int8_linear_layers`).
"""

import ctypes
import logging
import os
import platform
import sys
import time
from dataclasses import dataclass

import torch

from .errors import UserError
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


def one_cast_per_weight(accelerator):
    """One autocast region (the run's mixed precision, or none) over a whole evaluation or prediction.

    Autocast keeps the bf16/fp16 copy it makes of each fp32 weight until its outermost region ends, and the
    model's forward is a region of its own, so without an outer one every batch casts every weight again
    (MiniLM: 10.6 million linear weights). Inside this region they are cast once per split, and the copies
    are dropped when it ends: the same copies, so the same outputs. On the AMX Xeon of bench/RESULTS.md,
    WNUT-16's 239 validation sentences at batch 8 took 0.55 s against 0.69 s, the same loss and F1."""
    return accelerator.autocast()


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
    except (TypeError, ValueError, RuntimeError, IndexError):  # no position_ids argument, no 4D masks, positions
        # past the model's table, ...
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


def choose_training_speedups(model, tokenizer, train_features, data_args, device, mixed_precision, fuse=True):
    """The choices for training speed both scripts make once the model has loaded and the precision the
    accelerator will use (`mixed_precision`, as accelerate names it) is known: padding-free batches (returns
    the packing collator, or None for padded batches), cheaper dropout masks and fused attention
    projections (nerkit.dropout, nerkit.projections), each one that gives the same training. Without
    `train_features` (no training) nothing is chosen. `fuse`: whether fusing is left to us (torch.compile
    fuses by itself)."""
    from .dropout import choose_dropout_masks
    from .projections import choose_fused_projections

    if train_features is None:
        return None
    packer = choose_packing(model, tokenizer, train_features, data_args.packing, data_args.pad_to_max_length, device,
                            half_precision(mixed_precision))
    device_type = torch.device(device).type
    choose_dropout_masks(model, data_args.fast_dropout_masks, device_type)
    choose_fused_projections(model, data_args.fused_projections and fuse, device_type, mixed_precision)
    return packer


def half_precision(mixed_precision):
    """"bf16" or "fp16" where accelerate's `mixed_precision` computes in that half type, else None."""
    return mixed_precision if mixed_precision in ("bf16", "fp16") else None


def pad_multiple(mixed_precision):
    """What padded batches' length is rounded up to: a multiple that half-precision kernels (tensor cores)
    run fastest on, none in fp32."""
    return {"fp8": 16, "fp16": 8, "bf16": 8}.get(mixed_precision)


def choose_packing(model, tokenizer, train_features, enabled, pad_to_max_length, device="cpu", precision=None):
    """The packing collator for training, or None (with the reason logged). On CUDA with flash-attention 2
    and half precision, examples are laid end to end in one row and its variable-length kernel keeps them
    apart; on the CPU, one row too, with attention per bucket of similar lengths (both nerkit.varlen);
    elsewhere, or where the model does not reproduce its padded outputs that way, packed rows with a
    block-diagonal mask. `device`: where training runs."""
    from .varlen import bucketed_packing, uses_varlen_attention, varlen_packing

    if train_features is None:  # no training
        return None
    if not enabled or pad_to_max_length:
        logger.info("Training on padded batches (%s).", "--pad_to_max_length pads every batch to the window length"
                    if pad_to_max_length else "--no_packing")
        return None
    sample = packing_sample(train_features)
    device_type = torch.device(device).type
    if uses_varlen_attention(model, device_type, precision):
        collator = varlen_packing(model, tokenizer, sample, device, precision)
        if collator is not None:
            return collator
    if device_type == "cpu":
        collator = bucketed_packing(model, tokenizer, sample, precision)
        if collator is not None:
            return collator
    collator = packing_collator(model, tokenizer, sample)
    if collator is None:
        logger.info("Padding-free batches do not reproduce this model's outputs; training on padded batches.")
    else:
        logger.info("Training on padding-free batches (packed rows with block-diagonal attention).")
    return collator


def packing_sample(features, count=8):
    """The features the packing check runs on: the first few and the longest few. Some models attend
    differently to long inputs (ModernBERT's sliding window, bucketed relative positions) and agree with
    packed rows only on short ones, so a sample of short examples alone could pass a model that packing
    would change."""
    lengths = input_lengths(features)
    longest = set(sorted(range(len(lengths)), key=lengths.__getitem__)[-(count // 2):])
    first = [i for i in range(len(lengths)) if i not in longest][:count - len(longest)]
    return [features[i] for i in sorted(longest.union(first))]


def input_lengths(features):
    """Sub-tokens of each feature; from the Arrow column for a `datasets.Dataset` (no row is decoded)."""
    if hasattr(features, "with_format"):
        import pyarrow.compute

        return pyarrow.compute.list_value_length(features.with_format("arrow")[:]["input_ids"]).to_pylist()
    return [len(feature["input_ids"]) for feature in features]


# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
KEPT_FREE_MEMORY = 1 << 30  # bytes of freed memory at the top of the heap kept before any is returned
KEEP_MEMORY_VARIABLE = "NERKIT_KEEP_FREED_MEMORY"


def keep_freed_memory(device_type, environ=os.environ):
    """On the CPU under glibc, keep the memory that tensors free for the next step instead of handing it
    back to the operating system. glibc maps every block over 32 MB (a word-embedding gradient, the
    attention scores of long windows) afresh and unmaps it when freed, and returns freed memory at the top
    of its heap beyond 128 KB; the next step then pays a page fault for every 4 KB it touches again. With
    no mapped blocks (M_MMAP_MAX 0) and 1 GiB kept (M_TRIM_THRESHOLD), 3 epochs of MiniLM on WNUT-16 took
    0.3 million page faults instead of 4.5 million and 4% less time on a 2-core AMD EPYC, with a peak memory
    1% higher. Results are bit for bit the same: only where tensors live changes. Returns whether glibc took
    the settings; a choice of the user's (a MALLOC_* or GLIBC_TUNABLES variable, an allocator in
    LD_PRELOAD, NERKIT_KEEP_FREED_MEMORY=0) is left alone."""
    if device_type != "cpu" or allocator_chosen_by_user(environ):
        return False
    libc = glibc()
    if libc is None:
        return False
    kept = libc.mallopt(M_MMAP_MAX, 0) == 1 and libc.mallopt(M_TRIM_THRESHOLD, KEPT_FREE_MEMORY) == 1
    if kept:
        logger.info("Memory that tensors free is kept for reuse rather than returned to the system and faulted "
                    "in again (glibc: no separately mapped blocks, up to 1 GiB kept); %s=0 turns this off.",
                    KEEP_MEMORY_VARIABLE)
    return kept


def glibc():
    """The C library when it is glibc (Linux), else None."""
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def return_freed_memory():
    """Hand the memory glibc holds free, inside its heap as well as at its top, back to the system
    (`malloc_trim`); nothing elsewhere. Evaluation and prediction call it every few batches
    (nerkit.decoding.WordDecoder): batches of other shapes free blocks of other sizes, which glibc keeps
    scattered through the heap, so the resident set grew with the number of batches. Evaluating the bench's
    validation set 24 times over in bf16 on an Intel Xeon with AMX peaked at 1,095-1,124 MB against 711 MB
    for one copy; trimmed every 32 batches, at 826 MB against 720 MB, in the same time (bench/RESULTS.md)."""
    libc = glibc()
    if libc is not None:
        libc.malloc_trim(0)


KEEP_CUDNN_VARIABLE, TORCH_CUDNN_VARIABLE = "NERKIT_CUDNN_ATTENTION", "TORCH_CUDNN_SDPA_DEPRIORITIZED"


def leave_out_cudnn_attention(device_type, environ=os.environ):
    """On CUDA, take cuDNN out of the attention kernels PyTorch's SDPA chooses from (flash, memory-efficient
    and math remain). On Hopper and newer GPUs recent torch (2.11 measured) tries cuDNN first for
    half-precision attention, and cuDNN builds an execution plan for every new shape of batch before caching
    it. Batches of sentences change shape at nearly every step, in training (random batches, packed rows)
    and in evaluation alike, so the plans are built again and again. On an H100 (torch 2.11) the first
    masked bf16 attention of a new shape (forward and backward, batch 16, MiniLM's heads) took 347 ms with
    cuDNN against 1.2 ms without, and one epoch of MiniLM on WNUT-16 trained in 12.2 s against 3.3 s
    (bench/RESULTS.md). The attention is the same function; only rounding and the dropout draws differ. A
    choice of the user's is left alone: NERKIT_CUDNN_ATTENTION=1 keeps cuDNN, TORCH_CUDNN_SDPA_DEPRIORITIZED
    (torch's own setting) set either way, or cuDNN attention already turned off. Returns whether cuDNN was
    taken out."""
    if device_type != "cuda" or not hasattr(torch.backends.cuda, "enable_cudnn_sdp"):
        return False
    if environ.get(KEEP_CUDNN_VARIABLE, "").strip().lower() in ("1", "true", "yes", "on"):
        return False
    if environ.get(TORCH_CUDNN_VARIABLE, "").strip():  # torch's own ordering, chosen by the user
        return False
    if not torch.backends.cuda.cudnn_sdp_enabled():
        return False
    torch.backends.cuda.enable_cudnn_sdp(False)
    logger.info("cuDNN attention is left out (it builds a plan for every new batch shape, and batch shapes change "
                "at nearly every step); NERKIT_CUDNN_ATTENTION=1 keeps it.")
    return True


def prepare_device(device_type):
    """What a run changes in its own process for the device it computes on, once, before any model work."""
    keep_freed_memory(device_type)
    leave_out_cudnn_attention(device_type)


def inference_batch_size(device_type, mixed_precision="no"):
    """Windows per batch where the tagger is not told (predict_ner.py without --batch_size): 32 on an
    accelerator and on a CPU that tags in bf16, 8 on a CPU in fp32. On a GPU a small model's batch costs the
    host its kernel launches whatever its size: on an H100 the GPU was busy 17 ms of a 0.55 s call at batch
    8, and batch 32 tagged WNUT-16's test set with three long documents 1.5x faster (22,200 against 14,400
    words/s, MiniLM, bf16). On the CPU the arithmetic decides. In bf16, larger batches keep the bf16 matrix
    units busier: on an Intel Xeon with AMX, 10,300 against 7,600 words/s (the bench's texts, MiniLM); on
    an AMD EPYC with AVX512-BF16, 5,200 against 5,000. In fp32 batch 32 was no faster (4,750 against 4,850
    words/s on the Xeon, 3,200 against 3,400 on the EPYC)."""
    if device_type != "cpu" or mixed_precision == "bf16":
        return 32
    return 8


def allocator_chosen_by_user(environ):
    """Whether the environment already says how memory is allocated, or asks us not to tune it."""
    if environ.get(KEEP_MEMORY_VARIABLE, "").strip().lower() in ("0", "false", "no", "off"):
        return True
    if any(name.startswith("MALLOC_") for name in environ) or "malloc" in environ.get("GLIBC_TUNABLES", ""):
        return True
    return "malloc" in environ.get("LD_PRELOAD", "")  # jemalloc, tcmalloc, mimalloc


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
    """Whether a bf16 matrix multiply is clearly faster than fp32 on this CPU (measured, about 0.2 s).

    For benchmarks only: a run decides from the CPU's instruction sets instead (`cpu_bf16_instructions`),
    since a timing differs between processes that measure at once and costs every process its time."""
    timings = {}
    for dtype in (torch.float32, torch.bfloat16):
        a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
        a @ b
        started = time.perf_counter()
        for _ in range(repeats):
            a @ b
        timings[dtype] = time.perf_counter() - started
    return timings[torch.bfloat16] * 1.3 < timings[torch.float32]


AUTO_PRECISION_VARIABLE = "NERKIT_AUTO_PRECISION"
BF16_INSTRUCTIONS = {"amx_bf16": "AMX-BF16", "avx512_bf16": "AVX512-BF16"}


@dataclass(frozen=True)
class Precision:
    """The mixed precision of a run, as accelerate names it ("no", "fp16", "bf16", "fp8"), and why."""

    mixed_precision: str
    reason: str
    automatic: bool  # chosen by --auto_mixed_precision, not named by the command
    asked: str = None  # the precision the command named, where this device cannot run it (fp16 on the CPU)


def decide_precision(requested=None, automatic=True, use_cpu=False):
    """The run's precision, decided once: `requested` ("fp16"/"bf16" from --fp16/--bf16) wins, then the
    precision `accelerate launch` passes in ACCELERATE_MIXED_PRECISION, then with `automatic`
    (--auto_mixed_precision) the hardware rule of `automatic_precision`; otherwise fp32."""
    if requested:
        return as_run_on(Precision(requested, f"--{requested}", automatic=False), run_device_type(use_cpu))
    launched = os.environ.get("ACCELERATE_MIXED_PRECISION")
    if launched:
        return as_run_on(Precision(launched.lower(), "accelerate launch's configuration", automatic=False),
                         run_device_type(use_cpu))
    if not automatic:
        return Precision("no", "--no_auto_mixed_precision", automatic=False)
    mixed_precision, reason = automatic_precision(use_cpu)
    return Precision(mixed_precision, reason, automatic=True)


def as_run_on(precision, device_type):
    """`precision` as accelerate runs it on `device_type`: fp16 on the CPU is fp32. accelerate's fp16 autocast
    and gradient scaler are for GPUs; on the CPU it keeps the name fp16 and computes everything in fp32, so
    the run would say and write a precision it does not use."""
    if precision.mixed_precision != "fp16" or device_type != "cpu":
        return precision
    return Precision("no", f"{precision.reason} asks for fp16, which accelerate runs on GPUs only; for mixed "
                     "precision on a CPU ask for bf16, or name no precision and let the run choose", automatic=False,
                     asked="fp16")


def check_bf16_runs(precision, model, input_ids, device_type):
    """`precision`, or fp32 where bf16 was chosen automatically for the CPU and `model` fails under bf16
    autocast on `input_ids` (one sequence: the run's longest, where a model may take another attention path,
    such as BigBird's block-sparse one, whose scatter mixes dtypes). Upstream's default, fp32, would run; a
    precision the command names is left to fail as it does upstream."""
    if not (precision.automatic and precision.mixed_precision == "bf16" and device_type == "cpu") or not input_ids:
        return precision
    failure = bf16_failure(model, input_ids)
    if failure is None:
        return precision
    logger.warning("The model fails under bf16 autocast on a %d-sub-token input (%s): this run uses fp32.",
                   len(input_ids), failure)
    return Precision("no", f"the model fails in bf16 on this CPU ({failure})", automatic=True)


def bf16_failure(model, input_ids):
    """The first line of the error `model` raises for `input_ids` in evaluation under bf16 autocast on the
    CPU, or None. Evaluation mode draws no dropout, so the run's random numbers are left as they were."""
    batch = torch.tensor([list(input_ids)])
    training = model.training
    model.eval()
    try:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            model(input_ids=batch, attention_mask=torch.ones_like(batch))
    except RuntimeError as error:
        return str(error).strip().split("\n")[0]
    finally:
        model.train(training)
    return None


def longest_input(features):
    """The input ids of the longest feature among `features` (a dict of splits, `datasets.Dataset`s or
    lists), or None where there is none."""
    longest = None
    for split in features.values():
        lengths = input_lengths(split)
        if lengths:
            index = max(range(len(lengths)), key=lengths.__getitem__)
            if longest is None or lengths[index] > len(longest):
                longest = split[index]["input_ids"]
    return longest


def inference_precision():
    """predict_ner's precision, which has no flag of its own: `accelerate launch`'s, else the automatic
    choice (bf16 inference keeps the results, measured in bench/RESULTS.md)."""
    return decide_precision(None, automatic=True)


def automatic_precision(use_cpu=False):
    """("bf16" or "no", the reason) for this hardware.

    Every process of a run must decide alike (a rank in bf16 beside one in fp32 trains a different model
    than either), so the CPU rule reads the processor's instruction sets, the same for every process on a
    machine and free to read, rather than timing a matrix multiply: under torchrun the processes time at
    once, disturb each other, and can disagree. bf16 pays where the CPU multiplies bf16 matrices natively
    (AMX-BF16, AVX512-BF16); elsewhere it is converted to fp32 and back, several times slower than fp32."""
    forced = os.environ.get(AUTO_PRECISION_VARIABLE)
    if forced:
        if forced.lower() not in ("bf16", "fp32"):
            raise UserError(f"{AUTO_PRECISION_VARIABLE}={forced} is not a precision: set it to bf16 or fp32, or "
                            "unset it to let the hardware decide.")
        return ("bf16" if forced.lower() == "bf16" else "no"), f"forced by {AUTO_PRECISION_VARIABLE}={forced}"
    device = run_device_type(use_cpu)
    if device == "cuda":
        if torch.cuda.is_bf16_supported():
            return "bf16", "this GPU supports bf16"
        return "no", "this GPU has no bf16 support"
    if device != "cpu":
        return "no", f"the automatic choice is bf16 on CUDA GPUs and CPUs only, not on {device}"
    found = cpu_bf16_instructions()
    if found:
        return "bf16", f"this CPU has bf16 matrix instructions: {', '.join(found)}"
    return "no", "this CPU has no bf16 matrix instructions (AMX-BF16, AVX512-BF16), where bf16 is slower than fp32"


def run_device_type(use_cpu=False):
    """The kind of device a run computes on: "cpu" where it is asked onto the CPU (`use_cpu`, or
    `launched_on_cpu`), else the accelerator torch would use ("cuda", "mps", ...), else "cpu"."""
    if use_cpu or launched_on_cpu():
        return "cpu"
    return accelerator_type() or "cpu"


def launched_on_cpu():
    """Whether ACCELERATE_USE_CPU asks for the CPU: `accelerate launch --cpu` sets it, and accelerate's state
    obeys it on a machine with a GPU too."""
    from accelerate.utils import parse_flag_from_env

    return parse_flag_from_env("ACCELERATE_USE_CPU")


def check_processes_fit_gpus(use_cpu=False):
    """Refuse more processes on this machine than it has GPUs, for a run on CUDA, before anything loads:
    NCCL drives one GPU a process, and stopped at the first collective with "Duplicate GPU detected" and a
    traceback from every process."""
    processes = local_processes()
    if processes <= 1 or run_device_type(use_cpu) != "cuda":
        return
    gpus = torch.cuda.device_count()
    if processes > gpus:
        raise UserError(f"{processes} processes were started on this machine, which has {gpus} GPU"
                        f"{'' if gpus == 1 else 's'}: each process needs a GPU of its own. Start {gpus} "
                        f"(torchrun --nproc_per_node {gpus}, accelerate launch --num_processes {gpus}), or train "
                        "on the CPU with accelerate launch --cpu (ACCELERATE_USE_CPU=true).")


def check_cpu_processes_beside_gpus():
    """For the Accelerate loop: refuse several processes on the CPU of a machine with fewer GPUs than
    processes (`accelerate launch --cpu --num_processes 2` there). accelerate 1.15 waits for the processes with
    a barrier on cuda:<local rank>, and the second stopped with "CUDA error: invalid device ordinal" (seen on a
    one-GPU machine); the Trainer's runs are not affected."""
    processes = local_processes()
    if processes > 1 and run_device_type() == "cpu" and 0 < torch.cuda.device_count() < processes:
        raise UserError(f"{processes} processes on the CPU of a machine with {torch.cuda.device_count()} GPU(s): "
                        "accelerate's barrier between them picks a GPU for each process, and fails. Hide the GPUs "
                        "(CUDA_VISIBLE_DEVICES= accelerate launch --cpu ...), or train on the GPUs.")


def local_processes():
    """How many processes the launcher started on this machine (torchrun and accelerate launch set
    LOCAL_WORLD_SIZE); 1 without a launcher."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def accelerator_type():
    """The kind of accelerator torch would use ("cuda", "mps", "xpu", ...), or None for the CPU."""
    if hasattr(torch, "accelerator"):  # torch >= 2.6
        found = torch.accelerator.current_accelerator()
        return found.type if found is not None else None
    return "cuda" if torch.cuda.is_available() else None


def cpu_bf16_instructions():
    """The names of this CPU's bf16 matrix instruction sets (AMX-BF16, AVX512-BF16), possibly none."""
    get_capabilities = getattr(torch.cpu, "get_capabilities", None)
    if get_capabilities is not None:  # torch's own reading of the CPU (cpuinfo), on every OS
        capabilities = get_capabilities()
        present = {name for name in BF16_INSTRUCTIONS if capabilities.get(name)}
    else:  # older torch: the flags Linux reports
        present = linux_cpu_flags() & set(BF16_INSTRUCTIONS)
    return [BF16_INSTRUCTIONS[name] for name in BF16_INSTRUCTIONS if name in present]


def linux_cpu_flags():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def fresh_accelerator(**kwargs):
    """`accelerate.Accelerator(**kwargs)` with exactly these settings, also when an earlier run in this
    process (a test, a notebook, a second main()) left accelerate's process-wide state at another
    precision, where Accelerator() raises "AcceleratorState has already been initialized". The state is
    cleared first, as TrainingArguments does for the Trainer; a torch.distributed process group is kept."""
    from accelerate import Accelerator

    reset_accelerate_state(keep_processes=False)
    return Accelerator(**kwargs)


def reset_accelerate_state(keep_processes):
    """Forget accelerate's shared state (precision, gradient accumulation); with `keep_processes` keep the
    process layout (PartialState) that TrainingArguments has already set up."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=not keep_processes)
    GradientState._reset_state()


def forget_other_precision(mixed_precision):
    """Before the Trainer builds its Accelerator: clear accelerate's shared state when an earlier run in
    this process left it at another precision (the Accelerator would raise); a state at the same precision,
    such as one configured on purpose (`use_configured_state`), is kept."""
    from accelerate.state import AcceleratorState

    in_force = AcceleratorState._shared_state.get("_mixed_precision")
    if in_force is not None and in_force != mixed_precision:
        reset_accelerate_state(keep_processes=True)


def log_precision(accelerator, precision, task):
    """State the precision the accelerator really uses, and why."""
    used = accelerator.mixed_precision
    name = {"no": "fp32"}.get(used, used)
    if used == precision.mixed_precision:
        logger.log(logging.WARNING if precision.asked else logging.INFO, "%s in %s (%s).", task, name,
                   precision.reason)
    else:
        logger.info("%s in %s (the accelerator's setting; %s gave %s).", task, name, precision.reason,
                    precision.mixed_precision)


def check_int8_possible():
    """Refuse --int8 before any weights load where it cannot run: torch's dynamically quantized linear
    layers are CPU kernels, and a precision named by `accelerate launch` would be a second, conflicting
    choice of arithmetic."""
    device = run_device_type()
    if device != "cpu":
        hide = ", or hide it (CUDA_VISIBLE_DEVICES=) to tag on the CPU in int8" if device == "cuda" else ""
        raise UserError(f"--int8 tags on the CPU (torch's int8 linear layers have no {device} kernels), but this "
                        f"machine would tag on its {device} device. Drop --int8 to tag there{hide}.")
    launched = os.environ.get("ACCELERATE_MIXED_PRECISION", "no").lower()
    if launched != "no":
        raise UserError(f"--int8 and accelerate launch's mixed precision ({launched}) both choose the arithmetic. "
                        "Drop --int8, or launch with --mixed_precision no.")
    try:
        from torch.ao.quantization import quantize_dynamic
    except ImportError:
        quantize_dynamic = None
    if quantize_dynamic is None:
        raise UserError(f"--int8 needs torch.ao.quantization.quantize_dynamic, which torch {torch.__version__} "
                        "does not have. Drop --int8, or install a torch that has it (2.13 does).")
    if torch.backends.quantized.engine == "none":
        raise UserError(f"This torch build ({torch.__version__}) has no quantized CPU engine "
                        f"(torch.backends.quantized.supported_engines: {torch.backends.quantized.supported_engines}), "
                        "so --int8 cannot run. Drop --int8.")


def int8_linear_layers(model):
    """`model` (in eval mode) with every nn.Linear swapped for torch's dynamically quantized one: int8
    weights with a scale per output channel, each batch's activations quantized on the fly, int32
    accumulation; attention products, layer norms, embeddings and the softmax stay fp32. Faster on CPUs
    with fast int8 multiply-add, and not automatic: a few words change labels (measured in bench/RESULTS.md)."""
    import warnings

    from torch.ao.nn.quantized.dynamic import Linear as Int8Linear
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    with warnings.catch_warnings():  # torch marks the module deprecated in favour of torchao, whose CPU path
        warnings.simplefilter("ignore")  # measured 20x slower than fp32 in eager mode (torchao 0.18)
        quantized = quantize_dynamic(model, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)
    count = sum(isinstance(module, Int8Linear) for module in quantized.modules())
    logger.info("Tagging with %d linear layer%s in int8 (--int8: weights per output channel, activations per "
                "batch; the rest of the model in fp32).", count, "" if count == 1 else "s")
    return quantized

"""What a checkpoint must share with the run that resumes it: the examples each optimizer step trains on.

A checkpoint counts the optimizer steps it completed, and both scripts find their place from that count
and this run's batch: the epoch, the batches of it already trained on, and the point of the learning-rate
schedule (whose length, in steps, also follows from the batch). Resumed with another number of examples a
step (another --per_device_train_batch_size, --gradient_accumulation_steps or number of processes), the
count marks another place: the run trains again on examples it has seen, skips others, and ends its
schedule elsewhere. The Trainer warns of another per-device batch only, accelerate of nothing. So each
checkpoint records its batch (TRAIN_BATCH_FILE) and a resume with another total is refused before any
weights load. The same total split another way (8 a device on 2 processes for 16 on 1) keeps the place:
it is resumed, with a warning that dropout draws other random numbers than the interrupted run would have.
The file also records how many training examples there were: training data of another size (an edited
file, another --max_train_samples) moves the place just as well, and is refused too; so are the same
examples cut into another number of windows (another window length or tokenizer), since the batches are
made of windows. Data of the same size edited in place (labels corrected, words replaced) keep the place;
a digest of their words and tags tells them apart, and such a resume is warned of.
"""

import dataclasses
import functools
import hashlib
import json
import logging
import os
import typing

from .errors import UserError
from .outputs import write_json

logger = logging.getLogger(__name__)

TRAIN_BATCH_FILE = "train_batch.json"
LOOP_STATE = "loop_state.json"  # beside accelerate's state in each loop checkpoint: counters and best score


@dataclasses.dataclass(frozen=True)
class TrainBatch:
    """The examples of one optimizer step, by the factors a user sets."""

    per_device: int  # --per_device_train_batch_size
    accumulation: int  # --gradient_accumulation_steps
    processes: int  # torchrun / accelerate launch
    devices: int = 1  # GPUs that one process drives (the Trainer's DataParallel)

    @property
    def total(self):
        return self.per_device * self.devices * self.accumulation * self.processes

    def describe(self):
        parts = [f"{self.per_device} a device"]
        if self.devices > 1:
            parts.append(f"{self.devices} devices a process")
        parts.append(f"{self.accumulation} accumulation step{'s' if self.accumulation != 1 else ''}")
        parts.append(f"{self.processes} process{'es' if self.processes != 1 else ''}")
        return f"{self.total} ({' x '.join(parts)})"


class TrainingData:
    """The training examples as a checkpoint records them: their number, the number of windows (features)
    they were cut into, and a digest of their words and tags in order, computed when first needed (a run
    that saves no checkpoint and resumes none never hashes)."""

    def __init__(self, split, windows):
        self.split = split
        self.windows = windows

    @classmethod
    def of(cls, splits, features):
        """The "train" split's, or None where there is none. One per run: the check on resuming and every
        checkpoint then share its digest."""
        return cls(splits["train"], len(features["train"])) if "train" in splits else None

    @property
    def examples(self):
        return len(self.split.tokens)

    @functools.cached_property
    def digest(self):
        digest = hashlib.sha256()
        for words, tags in zip(self.split.tokens, self.split.tags):
            digest.update(json.dumps([words, tags], ensure_ascii=False).encode("utf-8"))
        return digest.hexdigest()


def record_train_batch(folder, batch, data):
    """Write `batch` and what identifies the TrainingData `data` into a checkpoint folder (before the file
    that marks the checkpoint complete)."""
    write_json(os.path.join(folder, TRAIN_BATCH_FILE),
               dict(dataclasses.asdict(batch), train_examples=data.examples, train_windows=data.windows,
                    train_digest=data.digest))


class Record(typing.NamedTuple):
    """What a checkpoint's TRAIN_BATCH_FILE says (None for what files written before it was kept lack)."""

    batch: TrainBatch
    train_examples: int | None
    train_windows: int | None = None
    train_digest: str | None = None


def read_record(checkpoint):
    """The Record a checkpoint holds, or None for one written without it (by upstream's scripts, or before
    it was kept): nothing to compare."""
    path = os.path.join(checkpoint, TRAIN_BATCH_FILE)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            record = json.load(handle)
        batch = TrainBatch(**{field.name: record[field.name] for field in dataclasses.fields(TrainBatch)})
        return Record(batch, record.get("train_examples"), record.get("train_windows"), record.get("train_digest"))
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise UserError(f"{path} cannot be read ({error!r}); it records the batch and the data the checkpoint was "
                        "trained with, which a resumed run must share. Resume from another checkpoint, or start "
                        "afresh with --overwrite_output_dir.") from None


def check_same_training_data(checkpoint, data, window_flag):
    """Refuse to resume `checkpoint` on training data (TrainingData) of another number of examples than it was
    trained on (the file edited, --max_train_samples changed), or cut into another number of windows (another
    `window_flag`, or tokenizer): its step count would mark another place in them. Warn where the same number
    of examples has other words or tags."""
    recorded = read_record(checkpoint) if checkpoint is not None else None
    if recorded is None or recorded.train_examples is None:
        return
    if recorded.train_examples != data.examples:
        raise UserError(f"{checkpoint} was trained on {recorded.train_examples:,} training examples, and the training "
                        f"data now has {data.examples:,} (the file changed, or --max_train_samples). Its step count "
                        "marks its place in the data it was trained on: resumed on these, the run would train again "
                        "on some examples and skip others. Give the data it was trained on to resume it; to train on "
                        f"these data, start afresh with --overwrite_output_dir{new_run(checkpoint)}.")
    if recorded.train_windows not in (None, data.windows):
        raise UserError(f"{checkpoint} was trained on {recorded.train_examples:,} training examples cut into "
                        f"{recorded.train_windows:,} windows, and they now make {data.windows:,} (another "
                        f"{window_flag}, or another tokenizer). Batches are made of windows, and its step count "
                        "marks its place among those it was trained on: resumed on these, the run would train "
                        f"again on some and skip others. Resume with the {window_flag} it was trained with; or "
                        f"start afresh with --overwrite_output_dir{new_run(checkpoint)}.")
    if recorded.train_digest not in (None, data.digest):
        logger.warning("Resuming %s on training data that differ from those it was trained on: %s examples both "
                       "times, but other words or tags in some. The run goes on at its place in these data; the "
                       "steps before it trained on the data as they were.", checkpoint, f"{data.examples:,}")


def check_same_train_batch(checkpoint, batch, per_device_found=False):
    """Refuse to resume `checkpoint` with a batch of another total than the one it recorded; warn where the
    same total is split another way. `per_device_found`: the Trainer's --auto_find_batch_size, which resumes
    with the per-device batch its checkpoint had found."""
    record = read_record(checkpoint)
    if record is None:
        return
    recorded = record.batch
    if per_device_found:
        batch = dataclasses.replace(batch, per_device=recorded.per_device)
    if recorded == batch:
        return
    if recorded.total == batch.total:
        logger.warning("Resuming %s with %s examples an optimizer step, where it was trained with %s: the same "
                       "examples each step, but dropout draws other random numbers than the interrupted run would "
                       "have.", checkpoint, batch.describe(), recorded.describe())
        return
    raise UserError(f"{checkpoint} was trained with {recorded.describe()} examples an optimizer step, and this run "
                    f"has {batch.describe()}. A checkpoint's step count marks its place in the data and in the "
                    "learning-rate schedule only for the batch it was trained with: resumed with another, the run "
                    "would train again on examples it has seen, skip others and end its schedule elsewhere. "
                    f"Resume with {recorded.total} examples a step{same_total_hint(recorded, batch)}; or start "
                    f"afresh with --overwrite_output_dir{new_run(checkpoint)}.")


def new_run(checkpoint):
    """", or fine-tune from its weights as a new run (...)" where the checkpoint is a model folder (the
    Trainer's are; the Accelerate loop's hold accelerate's state without a config.json), else ""."""
    if not os.path.isfile(os.path.join(checkpoint, "config.json")):
        return ""
    return (f", or fine-tune from its weights as a new run (--model_name_or_path {checkpoint} with another "
            "--output_dir, the optimizer starting afresh)")


def same_total_hint(recorded, batch):
    """A per-device batch that gives the recorded total with this run's processes and accumulation."""
    per_step = batch.devices * batch.accumulation * batch.processes
    if recorded.total % per_step:
        return f" (as it was: {recorded.describe()})"
    return (f", for instance --per_device_train_batch_size {recorded.total // per_step} with this run's "
            f"{batch.accumulation} accumulation step{'s' if batch.accumulation != 1 else ''} and "
            f"{batch.processes} process{'es' if batch.processes != 1 else ''}")


def in_folder(checkpoint, folder):
    """Whether `checkpoint` is a checkpoint of the run in `folder` (a folder of it, through links too)."""
    return os.path.dirname(os.path.realpath(checkpoint)) == os.path.realpath(folder)


def check_checkpoint_readable(checkpoint):
    """Every file of the checkpoint opens as its kind: JSON parses, a safetensors header covers its file, a
    torch archive (.pt, .pth, .bin, accelerate's .pkl) has its zip directory. A file cut short (a full disk,
    a copy stopped midway) or overwritten would otherwise stop the resume deep inside the Trainer or
    accelerate, after the weights load, with the library's traceback. Only headers are read."""
    for name in sorted(os.listdir(checkpoint)):
        path = os.path.join(checkpoint, name)
        reason = unreadable(path) if os.path.isfile(path) else None
        if reason:
            raise UserError(f"The checkpoint {checkpoint} is damaged: {name} cannot be read ({reason}). Resume from "
                            "an earlier checkpoint with --resume_from_checkpoint, or start afresh with "
                            "--overwrite_output_dir.")


def unreadable(path):
    """Why the file at `path` cannot be read as its extension says, or None."""
    import zipfile

    extension = os.path.splitext(path)[1]
    try:
        if extension == ".json":
            with open(path, encoding="utf-8") as handle:
                json.load(handle)
        elif extension == ".safetensors":
            return safetensors_damage(path)
        elif extension in (".pt", ".pth", ".bin", ".pkl"):
            with open(path, "rb") as handle:
                if handle.read(1) == b"\x80":  # torch's format before 1.6, a bare pickle: nothing to check cheaply
                    return None
            with zipfile.ZipFile(path) as archive:
                archive.namelist()
    except OSError as error:
        return error.strerror or str(error)
    except (ValueError, zipfile.BadZipFile) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return f"{type(error).__name__}: {error}"
    return None


def safetensors_damage(path):
    """Why a safetensors file is not whole, or None (`safetensors_header`)."""
    try:
        safetensors_header(path)
    except ValueError as error:
        return str(error)
    return None


def safetensors_header(path):
    """{tensor name: {dtype, shape, data_offsets}} of a safetensors file, read by hand from its header (8 bytes
    of length, then JSON): safetensors' own reader pages in the whole file (a second for 90 MB from disk).
    A ValueError says why the file is not whole: a header that does not parse, or tensors that do not end
    where the file ends."""
    size = os.path.getsize(path)
    with open(path, "rb") as handle:
        length = int.from_bytes(handle.read(8), "little")
        if size < 8 or length > size - 8:
            raise ValueError(f"its header claims {length:,} bytes, more than the file's {size:,}")
        try:
            header = json.loads(handle.read(length))
            header.pop("__metadata__", None)
            end = max((entry["data_offsets"][1] for entry in header.values()), default=0)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as error:
            raise ValueError(f"its header does not parse ({type(error).__name__})") from None
    if 8 + length + end != size:
        raise ValueError(f"the file has {size:,} bytes and its header describes {8 + length + end:,}: it was cut "
                         "short")
    return header

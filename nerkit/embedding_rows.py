"""Training only the word-embedding rows that the training data uses: the same training, less work a step.

A row of the word-embedding table whose token never occurs in the training data gets a zero gradient at
every step. Under AdamW (or Adam) without weight decay such a row keeps zero moments and never moves: its
update is 0 / (0 + eps). Yet a dense table costs at every step zeroing a gradient as large as the table,
clipping over it and an AdamW step over every row. For the packaged MiniLM on WNUT-16, 6,488 of 30,522
rows are used, and the table holds half the model's parameters; for XLM-R it is 250,002 rows of 768, two
thirds of the model.

So the input embedding is swapped for `TrainedRows` while training: the used rows are a parameter of their
own, the table a frozen one under its usual name. Its state dict puts the trained rows back into the table,
so checkpoints and the saved model hold an ordinary table; loading such a table refreshes the rows. Each
checkpoint also records the rows (ROWS_FILE), because its optimizer state has their shape: a resumed run
trains the same rows, and a checkpoint without the file resumes with the whole table. After training the
rows are folded back into an ordinary `nn.Embedding`.

Only where it is the same training: torch's AdamW through the Trainer (`--optim adamw_torch` or
`adamw_torch_fused`, the default) or the Accelerate loop, weight decay 0 (the default; decoupled decay
would shrink the unused rows too), a plain `nn.Embedding` tied to no other weight, and neither FSDP nor
DeepSpeed (which shard or flatten the parameters). The results agree with the whole table's to the last
bit without gradient clipping; with it, the clipping norm sums the same squares in another order, which can
move the last bit. `--no_train_used_embedding_rows` trains the whole table.
"""

import json
import logging
import os

import torch
import torch.nn.functional as F
from torch import nn

from .errors import UserError

logger = logging.getLogger(__name__)

ROWS_FILE = "trained_embedding_rows.json"
EXACT_OPTIMIZERS = ("adamw_torch", "adamw_torch_fused")


class TrainedRows(nn.Module):
    """An `nn.Embedding` whose rows `rows` train as the parameter `trained`; `weight` (the whole table,
    frozen) keeps its name, and the state dict writes the trained rows into it."""

    def __init__(self, embedding, rows):
        super().__init__()
        self.padding_idx = embedding.padding_idx
        self.weight = nn.Parameter(embedding.weight.detach(), requires_grad=False)
        rows = torch.as_tensor(rows, dtype=torch.long, device=self.weight.device)
        self.trained = nn.Parameter(self.weight[rows].clone())
        slot = torch.full((self.weight.shape[0],), -1, dtype=torch.long, device=self.weight.device)
        slot[rows] = torch.arange(len(rows), device=self.weight.device)
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("slot", slot, persistent=False)
        self.register_state_dict_post_hook(_table_in_state_dict)
        self.register_load_state_dict_pre_hook(_rows_from_loaded_table)

    @property
    def num_embeddings(self):
        return self.weight.shape[0]

    @property
    def embedding_dim(self):
        return self.weight.shape[1]

    def forward(self, input_ids):
        slot = self.slot[input_ids]
        trained = F.embedding(slot.clamp(min=0), self.trained)
        return torch.where((slot >= 0).unsqueeze(-1), trained, F.embedding(input_ids, self.weight, self.padding_idx))

    def table(self):
        """The whole table with the trained rows in it."""
        table = self.weight.detach().clone()
        table[self.rows] = self.trained.detach().to(table.dtype)
        return table

    def folded(self):
        """An ordinary trainable `nn.Embedding` holding `table()`."""
        embedding = nn.Embedding(*self.weight.shape, padding_idx=self.padding_idx, device=self.weight.device,
                                 dtype=self.weight.dtype)
        embedding.weight = nn.Parameter(self.table())
        return embedding


def _table_in_state_dict(module, state_dict, prefix, local_metadata):
    state_dict[prefix + "weight"] = module.table()
    state_dict.pop(prefix + "trained", None)


def _rows_from_loaded_table(module, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                            error_msgs):
    table = state_dict.get(prefix + "weight")
    if table is not None and prefix + "trained" not in state_dict:
        state_dict[prefix + "trained"] = table[module.rows.to(table.device)]


def used_rows(train_features, embedding, extra_ids=()):
    """Sorted ids of the table's rows that training can give a gradient: every id in the training
    features, plus `extra_ids` (the padding token), less the embedding's padding_idx (never trained)."""
    import numpy as np
    import pyarrow.compute

    if hasattr(train_features, "with_format"):  # a datasets.Dataset: its Arrow column, no row decoded
        column = train_features.with_format("arrow")[:]["input_ids"]
        seen = pyarrow.compute.list_flatten(column).to_numpy()
    else:
        seen = [i for feature in train_features for i in feature["input_ids"]]
    ids = np.unique(np.concatenate([np.asarray(seen, dtype=np.int64), np.asarray(extra_ids, dtype=np.int64)]))
    return [int(i) for i in ids if i != embedding.padding_idx and 0 <= i < embedding.num_embeddings]


def why_whole_table(model, optimizer, weight_decay, sharded):
    """Why training only the used rows would not be the same training for this run, or None."""
    if optimizer not in EXACT_OPTIMIZERS:
        return f"--optim {getattr(optimizer, 'value', optimizer)} is not torch's AdamW"
    if weight_decay:
        return f"--weight_decay {weight_decay} would shrink the unused rows too"
    if sharded:
        return "FSDP or DeepSpeed shards the parameters"
    try:
        embedding = model.get_input_embeddings()
    except NotImplementedError:
        return "the model does not expose its input embeddings"
    if type(embedding) is not nn.Embedding or embedding.max_norm is not None or embedding.sparse or \
            embedding.scale_grad_by_freq or not embedding.weight.requires_grad:
        return "its input embedding is not a plain trainable nn.Embedding"
    shared = [name for name, parameter in model.named_parameters(remove_duplicate=False)
              if parameter is embedding.weight]
    if len(shared) > 1:
        return f"its input embedding is tied to {', '.join(shared[1:])}"
    return None


def train_used_rows(model, train_features, pad_token_id, why_not, checkpoint):
    """Swap the model's input embedding for `TrainedRows` over the rows the training data uses, unless
    `why_not` (from `why_whole_table`) says it would not be the same training; the choice is logged. A
    resumed run trains the rows its checkpoint recorded, and the whole table if it recorded none."""
    if why_not:
        logger.info("Training the whole word-embedding table: %s.", why_not)
        return
    embedding = model.get_input_embeddings()
    rows = used_rows(train_features, embedding, [] if pad_token_id is None else [pad_token_id])
    if checkpoint is not None:
        recorded = read_rows(checkpoint, embedding.num_embeddings)
        if recorded is None:
            logger.info("Training the whole word-embedding table, as the checkpoint %s did.", checkpoint)
            return
        new = sorted(set(rows) - set(recorded))
        if new:
            logger.warning("The training data uses %d word-embedding rows that the checkpoint %s did not train "
                           "(the data changed since it was written); they stay as they are, as its optimizer "
                           "state covers only its own rows. Start afresh with --overwrite_output_dir to train "
                           "them.", len(new), checkpoint)
        rows = recorded
    if len(rows) >= embedding.num_embeddings:
        logger.info("Training the whole word-embedding table: the training data uses every row.")
        return
    model.set_input_embeddings(TrainedRows(embedding, rows))
    logger.info("Training the %s of %s word-embedding rows that the training data uses%s; the others get no "
                "gradient, so AdamW without weight decay would not move them (--no_train_used_embedding_rows "
                "trains the whole table).", f"{len(rows):,}", f"{embedding.num_embeddings:,}",
                f" (as the checkpoint {checkpoint} recorded)" if checkpoint is not None else "")


def flops_per_input_token(model):
    """transformers' estimate of a training step's floating-point operations per input position (the
    Trainer's total_flos: 6 x the parameters outside the embeddings), with the trained rows of `TrainedRows`
    and the table they stand in counted as the embedding they are, not as 14 million more parameters."""
    if not hasattr(model, "num_parameters"):
        return 0
    swapped = sum(parameter.numel() for module in model.modules() if isinstance(module, TrainedRows)
                  for parameter in module.parameters())
    return 6 * (model.num_parameters(exclude_embeddings=True) - swapped)


def fold_rows(model):
    """Put an ordinary `nn.Embedding` with the trained rows back in the model, if `train_used_rows` swapped
    it."""
    embedding = model.get_input_embeddings()
    if isinstance(embedding, TrainedRows):
        model.set_input_embeddings(embedding.folded())


def record_rows(folder, model):
    """Record in a checkpoint folder the rows `train_used_rows` swapped in (its optimizer state has their
    shape); nothing where the whole table trains."""
    embedding = model.get_input_embeddings()
    if isinstance(embedding, TrainedRows):
        with open(os.path.join(folder, ROWS_FILE), "w", encoding="utf-8") as handle:
            json.dump({"rows": embedding.rows.tolist()}, handle)


def read_rows(checkpoint, table_size):
    """The rows a checkpoint recorded, or None if it trained the whole table."""
    path = os.path.join(checkpoint, ROWS_FILE)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            rows = json.load(handle)["rows"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UserError(f"{path} cannot be read ({error}); it records which word-embedding rows the checkpoint "
                        "trained, and its optimizer state needs them. Resume from another checkpoint, or start "
                        "afresh with --overwrite_output_dir.") from None
    if not all(isinstance(row, int) and 0 <= row < table_size for row in rows):
        raise UserError(f"{path} names rows outside the model's word-embedding table of {table_size} rows: the "
                        "checkpoint was trained with another model. Resume with the model it was trained from.")
    return rows

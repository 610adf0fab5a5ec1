"""Milliseconds a training step on the CPU, by how batches are made: this suite's one-row batches with
attention by length buckets, over random or over length-grouped batches, against padded batches, random
(the upstream recipe) or length-grouped (upstream's `--train_sampling_strategy group_by_length`).

    python bench/step_time.py ours|ours-grouped|grouped|random [--steps 40] [--used-rows] [--fast-masks]
        [--folded-clipping] [--fused-projections]

The packaged MiniLM on WNUT-16's training split, batch 16, bf16 autocast where the CPU has bf16
instructions (nerkit.speed.automatic_precision), fused AdamW and clipping at 1.0 as the Trainer does;
5 steps of warm-up, then `--steps` timed. `--used-rows` trains only the word-embedding rows the data uses,
as the scripts do by default (nerkit.embedding_rows); without it the whole table trains. `--fast-masks`
draws dropout masks 16 bits at a time, as the scripts do where that measures faster (nerkit.dropout);
without it torch's dropout. `--folded-clipping` clips in fused AdamW's step, as the scripts do
(nerkit.clipping); without it `torch.nn.utils.clip_grad_norm_`. `--fused-projections` computes attention's
query, key and value as one matrix multiply, as the scripts do (nerkit.projections). Run the modes in turns,
several rounds, and compare within one sitting: bench/RESULTS.md has a reading.
"""

import argparse
import json
import os
import random
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(ROOT, "bench"), ROOT]  # bench.py before the bench folder, nerkit

import torch  # noqa: E402
from accelerate import Accelerator  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForTokenClassification,
    AutoTokenizer,
    DataCollatorForTokenClassification,
)

from bench import prepare_data  # noqa: E402
from nerkit import embedded  # noqa: E402
from nerkit.clipping import clip_gradients  # noqa: E402
from nerkit.data import Split  # noqa: E402
from nerkit.dropout import choose_dropout_masks  # noqa: E402
from nerkit.embedding_rows import train_used_rows  # noqa: E402
from nerkit.projections import choose_fused_projections  # noqa: E402
from nerkit.speed import automatic_precision  # noqa: E402
from nerkit.tokenization import EncodingSettings, encode_split  # noqa: E402
from nerkit.varlen import bucketed_packing  # noqa: E402

BATCH, WARM_UP = 16, 5
MODES = ("ours", "ours-grouped", "grouped", "random")


def features(path, tokenizer):
    with open(path, encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    labels = sorted({tag for row in rows for tag in row["ner_tags"]})
    split = Split("train", path, [row["tokens"] for row in rows], [row["ner_tags"] for row in rows], [""] * len(rows))
    encoded = encode_split(split, tokenizer, {label: i for i, label in enumerate(labels)}, EncodingSettings(512, 64))
    return [dict(feature) for feature in encoded.remove_columns(["word_ids", "example_id"])], len(labels)


def batches(mode, model, tokenizer, rows, count, precision=None):
    """`count` batches of 16: random ones, or upstream's length grouping (one megabatch of 50 batches
    sorted longest first), collated as one row (ours) or padded."""
    order = list(range(len(rows)))
    random.Random(0).shuffle(order)
    if mode in ("grouped", "ours-grouped"):
        order = sorted(order[:50 * BATCH], key=lambda i: -len(rows[i]["input_ids"]))
    groups = [[rows[i] for i in order[s * BATCH:(s + 1) * BATCH]] for s in range(count)]
    if mode.startswith("ours"):
        collator = bucketed_packing(model, tokenizer, [rows[i] for i in order[:8]], precision)
        if collator is None:
            raise SystemExit("this model does not reproduce its padded outputs on one-row batches")
        return [collator([{"input_ids": f["input_ids"], "labels": f["labels"]} for f in group]) for group in groups]
    return [DataCollatorForTokenClassification(tokenizer)(group) for group in groups]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=MODES)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--used-rows", action="store_true", help="train only the word-embedding rows the data uses")
    parser.add_argument("--fast-masks", action="store_true", help="dropout masks 16 bits at a time where that pays")
    parser.add_argument("--folded-clipping", action="store_true", help="clip in fused AdamW's step (nerkit.clipping)")
    parser.add_argument("--fused-projections", action="store_true",
                        help="query, key and value as one matrix multiply (nerkit.projections)")
    options = parser.parse_args()
    data = prepare_data(os.path.join(ROOT, "bench", "out"))
    tokenizer = AutoTokenizer.from_pretrained(embedded.model_path())
    rows, labels = features(data["train.json"], tokenizer)
    torch.manual_seed(0)
    model = AutoModelForTokenClassification.from_pretrained(embedded.model_path(), num_labels=labels).train()
    bf16 = automatic_precision(use_cpu=True)[0] == "bf16"
    steps = batches(options.mode, model, tokenizer, rows, WARM_UP + options.steps, "bf16" if bf16 else None)
    if options.used_rows:
        train_used_rows(model, rows, tokenizer.pad_token_id, None, None)
    masks = options.fast_masks and choose_dropout_masks(model, True, "cpu")
    fused = options.fused_projections and choose_fused_projections(model, True, "cpu", "bf16" if bf16 else "no")
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-5, fused=True)
    launcher = Accelerator(cpu=True)
    for index, batch in enumerate(steps):
        if index == WARM_UP:
            started = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(**batch).loss
        loss.backward()
        if options.folded_clipping:
            clip_gradients(model.parameters(), 1.0, optimizer, launcher)
        else:
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
    seconds = time.perf_counter() - started
    positions = sum(batch["input_ids"].numel() for batch in steps[WARM_UP:])
    chosen = (" (used rows)" if options.used_rows else "") + (" (fast masks)" if masks else "") + \
        (" (folded clipping)" if options.folded_clipping else "") + (" (fused projections)" if fused else "")
    print(f"{options.mode}{chosen}: {seconds / options.steps * 1000:.1f} ms a step ({'bf16' if bf16 else 'fp32'}), "
          f"{positions:,} positions in {options.steps} steps")


if __name__ == "__main__":
    main()

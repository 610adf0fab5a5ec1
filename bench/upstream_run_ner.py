#!/usr/bin/env python
"""The upstream recipe, for the benchmark only: what transformers' examples/pytorch/token-classification/
run_ner.py does, condensed to the path the benchmark takes, written on transformers' public API.

JSON files through `datasets.load_dataset("json")`, labels sorted from the training split, sub-token
alignment with truncation at the model maximum, `DataCollatorForTokenClassification` (dynamic padding,
random batches), `Trainer` with its default AdamW and linear schedule, and the seqeval scores that
`evaluate.load("seqeval")` computes, in-process (the machine is offline) over positions whose label is
not -100. Like the upstream script it saves the model and writes train_results.json and eval_results.json.

    python bench/upstream_run_ner.py --model_name_or_path M --train_file train.json \
        --validation_file validation.json --output_dir OUT --do_train --do_eval [TrainingArguments...]
"""

import sys
from dataclasses import dataclass

import numpy as np
from datasets import load_dataset
from seqeval.metrics import accuracy_score, classification_report
from transformers import (
    AutoConfig,
    AutoModelForTokenClassification,
    AutoTokenizer,
    DataCollatorForTokenClassification,
    HfArgumentParser,
    Trainer,
    TrainingArguments,
    set_seed,
)


@dataclass
class RecipeArguments:
    model_name_or_path: str
    train_file: str
    validation_file: str
    max_train_samples: int | None = None


def align(examples, tokenizer, label_to_id):
    tokenized = tokenizer(examples["tokens"], truncation=True, is_split_into_words=True)
    labels = []
    for index, tags in enumerate(examples["ner_tags"]):
        previous, ids = None, []
        for word in tokenized.word_ids(batch_index=index):
            ids.append(-100 if word is None or word == previous else label_to_id[tags[word]])
            previous = word
        labels.append(ids)
    tokenized["labels"] = labels
    return tokenized


def seqeval_scores(label_list):
    def compute(prediction):
        predicted, gold = np.argmax(prediction.predictions, axis=2), prediction.label_ids
        true_predictions = [[label_list[p] for p, g in zip(row, golds) if g != -100]
                            for row, golds in zip(predicted, gold)]
        true_labels = [[label_list[g] for g in golds if g != -100] for golds in gold]
        overall = classification_report(true_labels, true_predictions, output_dict=True, zero_division=0)["micro avg"]
        return {"precision": overall["precision"], "recall": overall["recall"], "f1": overall["f1-score"],
                "accuracy": accuracy_score(true_labels, true_predictions)}
    return compute


def main():
    recipe, training_args = HfArgumentParser((RecipeArguments, TrainingArguments)).parse_args_into_dataclasses()
    set_seed(training_args.seed)
    raw = load_dataset("json", data_files={"train": recipe.train_file, "validation": recipe.validation_file})
    label_list = sorted({tag for tags in raw["train"]["ner_tags"] for tag in tags})  # upstream: before selecting
    if recipe.max_train_samples is not None:
        raw["train"] = raw["train"].select(range(min(recipe.max_train_samples, len(raw["train"]))))
    label_to_id = {label: i for i, label in enumerate(label_list)}
    config = AutoConfig.from_pretrained(recipe.model_name_or_path, num_labels=len(label_list),
                                        id2label=dict(enumerate(label_list)), label2id=label_to_id)
    tokenizer = AutoTokenizer.from_pretrained(recipe.model_name_or_path)
    model = AutoModelForTokenClassification.from_pretrained(recipe.model_name_or_path, config=config)
    encoded = raw.map(align, batched=True, remove_columns=raw["train"].column_names,
                      fn_kwargs={"tokenizer": tokenizer, "label_to_id": label_to_id})
    trainer = Trainer(model=model, args=training_args, train_dataset=encoded["train"],
                      eval_dataset=encoded["validation"], processing_class=tokenizer,
                      data_collator=DataCollatorForTokenClassification(tokenizer),
                      compute_metrics=seqeval_scores(label_list))
    result = trainer.train()
    trainer.save_model()  # as upstream: the model and the tokenizer, part of the time a user waits for
    trainer.save_metrics("train", dict(result.metrics, train_samples=len(encoded["train"])))
    trainer.save_state()
    trainer.save_metrics("eval", trainer.evaluate())


if __name__ == "__main__":
    sys.exit(main())

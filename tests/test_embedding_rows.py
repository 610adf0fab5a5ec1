"""Training only the word-embedding rows the training data uses (nerkit.embedding_rows): the same weights as
training the whole table, with an optimizer over the used rows only, through checkpoints and resumption."""

import json
import logging
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForMaskedLM, AutoModelForTokenClassification, AutoTokenizer

from nerkit.embedding_rows import ROWS_FILE, TrainedRows, why_whole_table
from test_no_trainer import run_loop
from conftest import examples, write_jsonl
from test_run_ner import run

TABLE = "bert.embeddings.word_embeddings.weight"
SCRIPTS = {"run_ner.py": run, "run_ner_no_trainer.py": run_loop}
# no clipping: the clipping norm would sum the same squares in another order, and the weights could differ in
# the last bit; without it training the used rows must give the whole table's weights exactly
EXACT = {"run_ner.py": ["--do_train", "--max_grad_norm", "0", "--no_auto_mixed_precision"],
         "run_ner_no_trainer.py": ["--no_auto_mixed_precision"]}


def ids_in(path, tokenizer):
    with open(path, encoding="utf-8") as handle:
        words = [json.loads(line)["tokens"] for line in handle]
    return sorted({i for ids in tokenizer(words, is_split_into_words=True)["input_ids"] for i in ids})


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_training_the_used_rows_gives_the_whole_tables_weights(script, tiny_bert, ner_files, tmp_path, caplog):
    train = {"train": ner_files["train"]}
    flags = ["--num_train_epochs", "2", *EXACT[script]]
    with caplog.at_level(logging.INFO, logger="nerkit.embedding_rows"):
        rows = SCRIPTS[script](tiny_bert, tmp_path / "rows", *flags, files=train)
    whole = SCRIPTS[script](tiny_bert, tmp_path / "whole", *flags, "--no_train_used_embedding_rows", files=train)
    used = ids_in(ner_files["train"], AutoTokenizer.from_pretrained(tiny_bert))
    table_size = AutoModelForTokenClassification.from_pretrained(tiny_bert).config.vocab_size
    assert f"Training the {len(used)} of {table_size} word-embedding rows" in caplog.text
    trained, reference = load_file(rows / "model.safetensors"), load_file(whole / "model.safetensors")
    assert trained.keys() == reference.keys() and all(torch.equal(trained[k], reference[k]) for k in trained)
    initial = AutoModelForTokenClassification.from_pretrained(tiny_bert).state_dict()[TABLE]
    moved = (trained[TABLE] != initial).any(dim=1).nonzero().flatten().tolist()
    assert moved and set(moved) <= set(used)  # the padding row is never trained, and no other row moves
    flos = [json.loads((folder / "train_results.json").read_text())["total_flos"] for folder in (rows, whole)]
    assert flos[0] == flos[1] > 0  # the rows trained apart count as the embedding they are, not as parameters


def test_each_checkpoint_records_its_rows_and_its_optimizer_steps_only_those(tiny_bert, ner_files, tmp_path,
                                                                               monkeypatch):
    from transformers import TrainerState

    # a checkpoint counts as complete once trainer_state.json is there: a run killed just after must find the rows
    rows_before_state = []
    save_to_json = TrainerState.save_to_json
    def watched(state, path):
        if os.path.basename(os.path.dirname(path)).startswith("checkpoint-"):  # not the run's own, at its end
            rows_before_state.append(os.path.isfile(os.path.join(os.path.dirname(path), ROWS_FILE)))
        save_to_json(state, path)

    monkeypatch.setattr(TrainerState, "save_to_json", watched)
    output = run(tiny_bert, tmp_path / "o", "--do_train", "--max_steps", "4", "--save_strategy", "steps",
                 "--save_steps", "2", files={"train": ner_files["train"]})
    used = ids_in(ner_files["train"], AutoTokenizer.from_pretrained(tiny_bert))
    for checkpoint in ("checkpoint-2", "checkpoint-4"):
        with open(output / checkpoint / ROWS_FILE, encoding="utf-8") as handle:
            rows = json.load(handle)["rows"]
        assert rows == [i for i in used if i != 0]  # [PAD] is the embedding's padding_idx
        table = load_file(output / checkpoint / "model.safetensors")[TABLE]  # the whole table, as from_pretrained needs
        optimizer = torch.load(output / checkpoint / "optimizer.pt", weights_only=False)
        shapes = {tuple(state["exp_avg"].shape) for state in optimizer["state"].values()}
        assert (len(rows), 32) in shapes and tuple(table.shape) not in shapes
    assert rows_before_state == [True, True]


def test_the_loop_writes_the_rows_before_the_state_that_completes_a_checkpoint(tiny_bert, ner_files, tmp_path,
                                                                               monkeypatch):
    import run_ner_no_trainer

    rows_before_state = []
    write_json = run_ner_no_trainer.write_json

    def watched(path, content):
        if os.path.basename(path) == "loop_state.json":
            rows_before_state.append(os.path.isfile(os.path.join(os.path.dirname(path), ROWS_FILE)))
        write_json(path, content)

    monkeypatch.setattr(run_ner_no_trainer, "write_json", watched)
    run_loop(tiny_bert, tmp_path / "o", "--max_train_steps", "4", "--checkpointing_steps", "2",
             files={"train": ner_files["train"]})
    assert rows_before_state == [True, True]


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_a_checkpoint_of_the_whole_table_resumes_with_the_whole_table(script, tiny_bert, ner_files, tmp_path,
                                                                      caplog):
    train = {"train": ner_files["train"]}
    if script == "run_ner.py":
        first = run(tiny_bert, tmp_path / "o", "--do_train", "--max_steps", "4", "--save_strategy", "steps",
                    "--save_steps", "2", "--no_train_used_embedding_rows", files=train)
        checkpoint = first / "checkpoint-2"
        resume = ["--do_train", "--max_steps", "4", "--resume_from_checkpoint", str(checkpoint)]
    else:
        first = run_loop(tiny_bert, tmp_path / "o", "--max_train_steps", "4", "--checkpointing_steps", "2",
                         "--no_train_used_embedding_rows", files=train)
        checkpoint = first / "step_2"
        resume = ["--max_train_steps", "4", "--resume_from_checkpoint", str(checkpoint)]
    assert not os.path.exists(checkpoint / ROWS_FILE)
    again = tmp_path / "again"
    with caplog.at_level(logging.INFO, logger="nerkit.embedding_rows"):
        SCRIPTS[script](tiny_bert, again, *resume, files=train)
    assert f"Training the whole word-embedding table, as the checkpoint {checkpoint} did." in caplog.text
    assert os.path.isfile(again / "model.safetensors")


def test_weight_decay_trains_the_whole_table(tiny_bert, ner_files, tmp_path, caplog):
    """Decoupled weight decay shrinks every row, used or not: training only the used rows would not be the
    same training, so the whole table trains, and rows the data never uses move."""
    with caplog.at_level(logging.INFO, logger="nerkit.embedding_rows"):
        output = run(tiny_bert, tmp_path / "o", "--do_train", "--max_steps", "3", "--weight_decay", "0.5",
                     files={"train": ner_files["train"]})
    assert "Training the whole word-embedding table: --weight_decay 0.5 would shrink the unused rows too" in caplog.text
    used = set(ids_in(ner_files["train"], AutoTokenizer.from_pretrained(tiny_bert)))
    initial = AutoModelForTokenClassification.from_pretrained(tiny_bert).state_dict()[TABLE]
    moved = (load_file(output / "model.safetensors")[TABLE] != initial).any(dim=1).nonzero().flatten().tolist()
    assert set(moved) - used


def test_rows_module_computes_and_saves_what_the_table_does(tiny_bert):
    torch.manual_seed(0)
    model = AutoModelForTokenClassification.from_pretrained(tiny_bert)
    embedding = model.get_input_embeddings()
    rows = [3, 7, 11, 40]
    swapped = TrainedRows(embedding, rows)
    ids = torch.tensor([[3, 5, 0, 40, 40, 7], [1, 2, 11, 3, 9, 0]])
    assert torch.equal(swapped(ids), embedding(ids))
    weights = torch.randn(2, 6, embedding.embedding_dim)
    (swapped(ids) * weights).sum().backward()
    (embedding(ids) * weights).sum().backward()
    assert torch.allclose(swapped.trained.grad, embedding.weight.grad[rows])
    assert swapped.weight.grad is None
    with torch.no_grad():
        swapped.trained += 1.0
    state = swapped.state_dict()
    assert list(state) == ["weight"] and torch.equal(state["weight"][rows], swapped.trained.detach())
    fresh = TrainedRows(embedding, rows)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.trained, swapped.trained) and torch.equal(fresh.table(), state["weight"])
    assert torch.equal(fresh.folded()(ids), swapped(ids))


def test_tied_or_unusual_embeddings_train_the_whole_table(tiny_bert):
    tied = AutoModelForMaskedLM.from_pretrained(tiny_bert)  # its decoder shares the embedding's weight
    assert why_whole_table(tied, "adamw_torch_fused", 0.0, False).startswith("its input embedding is tied to")
    model = AutoModelForTokenClassification.from_pretrained(tiny_bert)
    assert why_whole_table(model, "adamw_torch_fused", 0.0, False) is None
    assert why_whole_table(model, "adafactor", 0.0, False) == "--optim adafactor is not torch's AdamW"
    assert why_whole_table(model, "adamw_torch", 0.0, True) == "FSDP or DeepSpeed shards the parameters"
    model.get_input_embeddings().max_norm = 1.0
    assert why_whole_table(model, "adamw_torch", 0.0, False) == \
        "its input embedding is not a plain trainable nn.Embedding"


def test_a_checkpoint_naming_rows_outside_the_table_is_refused(tiny_bert, ner_files, tmp_path):
    from nerkit.errors import UserError

    output = run(tiny_bert, tmp_path / "o", "--do_train", "--max_steps", "2", "--save_strategy", "steps",
                 "--save_steps", "1", files={"train": ner_files["train"]})
    checkpoint = tmp_path / "checkpoint"
    shutil.copytree(output / "checkpoint-1", checkpoint)
    (checkpoint / ROWS_FILE).write_text(json.dumps({"rows": [5, 100000]}))
    with pytest.raises(UserError, match="names rows outside the model's word-embedding table"):
        run(tiny_bert, tmp_path / "again", "--do_train", "--max_steps", "2", "--resume_from_checkpoint",
            str(checkpoint), files={"train": ner_files["train"]})


def test_resuming_on_data_with_new_tokens_says_their_rows_stay_as_they_are(tiny_bert, ner_files, tmp_path, caplog):
    """The checkpoint's optimizer state covers its own rows only: rows the changed data adds are not trained,
    and the log says so."""
    output = run(tiny_bert, tmp_path / "o", "--do_train", "--max_steps", "2", "--save_strategy", "steps",
                 "--save_steps", "1", files={"train": ner_files["train"]})
    checkpoint = tmp_path / "checkpoint"
    shutil.copytree(output / "checkpoint-1", checkpoint)
    tweet = "Tweets about the new iPhone spread quickly over the weekend !".split()
    # as many examples as before (data of another size is refused: nerkit.resume), 8 of them new
    changed = write_jsonl(tmp_path / "changed.json", examples(32) + [(tweet, ["O"] * len(tweet))] * 8)
    with caplog.at_level(logging.INFO, logger="nerkit.embedding_rows"):
        run(tiny_bert, tmp_path / "again", "--do_train", "--max_steps", "2", "--resume_from_checkpoint",
            str(checkpoint), files={"train": changed})
    assert "word-embedding rows that the checkpoint" in caplog.text and "did not train" in caplog.text
    assert f"(as the checkpoint {checkpoint} recorded)" in caplog.text

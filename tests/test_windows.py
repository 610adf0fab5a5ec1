"""No word lost: long documents go through windows in training, evaluation and prediction."""

import json
import os

import torch
from transformers import AutoModelForTokenClassification, AutoTokenizer

import run_ner
from conftest import examples, write_jsonl
from nerkit.metrics import EntityScorer
from test_run_ner import predictions, read_json, run


def long_document(filler_words=150):
    """A document about ten 16-sub-token windows long whose only entities sit in its last sentence."""
    tokens, tags = examples(1)[0]
    filler = ("the meeting was reported " * (filler_words // 4)).split()
    return filler + tokens, ["O"] * len(filler) + tags


def test_entities_in_the_last_windows_are_predicted_and_counted(tiny_bert, tmp_path):
    doc = long_document()
    files = {"train": write_jsonl(tmp_path / "train.json", examples(10) + [doc]),
             "validation": write_jsonl(tmp_path / "dev.json", [doc, doc]),
             "test": write_jsonl(tmp_path / "test.json", [doc])}
    output = run(tiny_bert, tmp_path / "o", "--do_train", "--do_eval", "--do_predict", "--num_train_epochs", "1",
                 "--max_seq_length", "16", "--stride", "4", "--return_entity_level_metrics", files=files)
    evaluation = read_json(os.path.join(output, "eval_results.json"))
    assert (evaluation["eval_PER_number"], evaluation["eval_ORG_number"], evaluation["eval_LOC_number"]) == (2, 2, 2)
    assert read_json(os.path.join(output, "predict_results.json"))["predict_LOC_number"] == 1
    assert [len(line) for line in predictions(output)] == [len(doc[0])]
    with open(os.path.join(output, "predictions.jsonl"), encoding="utf-8") as handle:
        record = json.loads(handle.readline())
    assert record["tokens"] == doc[0] and record["labels"] == doc[1]
    assert len(record["predictions"]) == len(record["scores"]) == len(doc[0])


def test_short_examples_are_predicted_exactly_as_one_plain_forward_pass(tiny_bert, ner_files, tmp_path):
    files = {"train": ner_files["train"], "test": ner_files["test"]}
    # fp32, as the plain forward pass below: on a CPU with bf16 instructions the automatic bf16 could flip a
    # near-tie between the run's padded batch and the single example, which is not what this test is about
    output = run(tiny_bert, tmp_path, "--do_train", "--do_predict", "--num_train_epochs", "2", "--decoding", "argmax",
                 "--no_auto_mixed_precision", files=files)
    tokenizer = AutoTokenizer.from_pretrained(output)
    model = AutoModelForTokenClassification.from_pretrained(output).eval()
    expected = []
    for words, _ in examples(5, offset=2):
        encoding = tokenizer(words, is_split_into_words=True, return_tensors="pt")
        with torch.no_grad():
            best = model(**encoding).logits[0].argmax(-1).tolist()
        first = {}
        for position, word in enumerate(encoding.word_ids()):
            if word is not None and word not in first:
                first[word] = position
        expected.append([model.config.id2label[best[first[word]]] for word in range(len(words))])
    assert predictions(output) == expected


def test_predictions_jsonl_records(tiny_bert, ner_files, tmp_path):
    trained_for_jsonl = run(tiny_bert, tmp_path, "--do_train", "--do_predict", "--num_train_epochs", "3",
                            files={"train": ner_files["train"], "test": ner_files["test"]})
    with open(os.path.join(trained_for_jsonl, "predictions.jsonl"), encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle]
    assert [r["tokens"] for r in records] == [t for t, _ in examples(5, offset=2)]
    assert [r["predictions"] for r in records] == predictions(trained_for_jsonl)
    for record in records:
        assert "labels" not in record  # the test file is unlabelled
        assert all(0.0 <= score <= 1.0 for score in record["scores"])
        for entity in record["entities"]:
            span = record["predictions"][entity["start"]:entity["end"]]
            assert span[0][2:] == entity["type"] and all(tag[2:] == entity["type"] for tag in span)
            assert entity["text"] == " ".join(record["tokens"][entity["start"]:entity["end"]])


def test_evaluation_is_decoded_batch_by_batch(tiny_bert, ner_files, tmp_path, monkeypatch):
    calls = []

    class CountingScorer(EntityScorer):
        def __call__(self, eval_prediction, compute_result=None):
            calls.append((tuple(eval_prediction.predictions.shape), compute_result))
            return super().__call__(eval_prediction, compute_result)

    monkeypatch.setattr(run_ner, "EntityScorer", CountingScorer)
    for decoding, width in (("argmax", 2), ("viterbi", 8)):
        calls.clear()
        run(tiny_bert, tmp_path / decoding, "--do_eval", "--per_device_eval_batch_size", "2", "--decoding", decoding,
            files={"train": ner_files["train"], "validation": ner_files["validation"]})
        # 5 examples in batches of 2: three calls, each with one batch reduced to (label id, probability), or
        # for Viterbi to the 8 labels' log-probabilities, never more
        assert [flag for _, flag in calls] == [False, False, True]
        assert all(shape[0] <= 2 and shape[-1] == width for shape, _ in calls)


def test_an_unlabelled_test_file_is_batched_by_length_in_both_scripts(tiny_bert, ner_files, tmp_path, monkeypatch):
    """Short sentences share no batch with a long document's windows (predict_ner.py's rule), and every word is
    still predicted."""
    import run_ner_no_trainer
    from test_no_trainer import run_loop

    widths = {"trainer": [], "loop": []}
    prediction_step, forward_batches = run_ner.NerTrainer.prediction_step, run_ner_no_trainer.forward_batches

    def recording_step(self, model, inputs, *args, **kwargs):
        widths["trainer"].append(inputs["attention_mask"].sum(1).tolist())
        return prediction_step(self, model, inputs, *args, **kwargs)

    def recording_batches(model, loader):
        def recorded():
            for batch in loader:
                widths["loop"].append(batch["attention_mask"].sum(1).tolist())
                yield batch
        return forward_batches(model, recorded())

    monkeypatch.setattr(run_ner.NerTrainer, "prediction_step", recording_step)
    monkeypatch.setattr(run_ner_no_trainer, "forward_batches", recording_batches)
    rows = [long_document()] + examples(12)
    files = {"train": ner_files["train"], "test": write_jsonl(tmp_path / "test.json", rows, labelled=False)}
    flags = ("--stride", "4", "--num_train_epochs", "1")
    outputs = {"trainer": run(tiny_bert, tmp_path / "trainer", "--do_train", "--do_predict", "--max_seq_length", "64",
                              *flags, files=files),
               "loop": run_loop(tiny_bert, tmp_path / "loop", "--max_length", "64", *flags, files=files)}
    for name, output in outputs.items():
        batches = widths[name]
        assert any(max(batch) == 64 for batch in batches), batches  # the document's windows
        assert all(2 * min(batch) >= max(batch) for batch in batches), batches
        assert [len(line) for line in predictions(output)] == [len(tokens) for tokens, _ in rows]


def test_predictions_jsonl_escapes_the_characters_splitlines_breaks_lines_at():
    from nerkit.outputs import predictions_jsonl

    tokens = [["a\u2028b", "c"], ["d\x85e"], ["x\u2029y"]]
    text = predictions_jsonl(tokens, [["O", "O"], ["O"], ["O"]], [[0.9, 0.8], [0.7], [0.6]])
    lines = text.splitlines()
    assert len(lines) == 3 and [json.loads(line)["tokens"] for line in lines] == tokens

"""Query, key and value projections as one matrix multiply (nerkit.projections): the same outputs, gradients
and checkpoints as three, with fewer multiplies, in both scripts."""

import copy
import logging

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from transformers import AutoModelForTokenClassification

from nerkit.projections import ProjectionGroup, SharedInputLinear, choose_fused_projections, fuse_projections
from test_dropout import SCRIPTS, OpCounter, counted_runs
from test_run_ner import read_json


def tiny_model(path):
    torch.manual_seed(0)
    return AutoModelForTokenClassification.from_pretrained(path, num_labels=3).train()


def batch():
    torch.manual_seed(1)
    return {"input_ids": torch.randint(5, 200, (2, 9)), "labels": torch.randint(0, 3, (2, 9))}


def loss_and_gradients(model, inputs, dropout_seed=2):
    torch.manual_seed(dropout_seed)
    loss = model(**inputs).loss
    loss.backward()
    return loss.detach(), {name: parameter.grad for name, parameter in model.named_parameters()}


def test_one_multiply_gives_the_three_projections_outputs_and_gradients(tiny_bert):
    plain = tiny_model(tiny_bert)
    fused = copy.deepcopy(plain)
    assert fuse_projections(fused) == 2  # the tiny BERT's two attention layers
    assert all(type(fused.get_submodule(f"bert.encoder.layer.{i}.attention.self.{name}")) is SharedInputLinear
               for i in range(2) for name in ("query", "key", "value"))
    inputs = batch()
    loss, gradients = loss_and_gradients(plain, inputs)
    fused_loss, fused_gradients = loss_and_gradients(fused, inputs)
    assert torch.allclose(fused_loss, loss, rtol=1e-6)
    assert gradients.keys() == fused_gradients.keys()
    assert all(torch.allclose(fused_gradients[name], gradients[name], rtol=1e-5, atol=1e-7) for name in gradients)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # with gradients, as in training: one multiply
        assert torch.equal(fused.eval()(**inputs).logits, plain.eval()(**inputs).logits)


def test_training_takes_one_matrix_multiply_for_the_three_projections_and_evaluation_three(tiny_bert):
    plain = tiny_model(tiny_bert)
    fused = copy.deepcopy(plain)
    fuse_projections(fused)
    counts = {}
    for name, model in (("plain", plain), ("fused", fused)):
        for gradients in (True, False):
            with torch.set_grad_enabled(gradients), OpCounter() as counter:
                model(**batch())
            counts[name, gradients] = counter.counts.get("addmm", 0)
    assert counts["fused", True] == counts["plain", True] - 2 * 2  # two multiplies fewer in each of two layers
    assert counts["fused", False] == counts["plain", False]


def grouped(*layers):
    group = ProjectionGroup("attention", list(layers))
    for layer in layers:
        layer.__class__, layer.group = SharedInputLinear, group
    return group


def test_the_group_shares_one_input_and_keeps_nothing_after():
    torch.manual_seed(0)
    layers = [nn.Linear(4, 6), nn.Linear(4, 6), nn.Linear(4, 5)]  # sizes may differ (grouped-query attention)
    expected = copy.deepcopy(layers)
    group = grouped(*layers)
    for _ in range(2):
        hidden = torch.randn(3, 4)
        for layer, reference in zip(layers, expected):
            assert torch.allclose(layer(hidden), reference(hidden))
        assert group.shared and group.input is None and not group.waiting  # no activation kept


def test_layers_given_other_inputs_stop_sharing(caplog):
    torch.manual_seed(0)
    layers = [nn.Linear(4, 6), nn.Linear(4, 6), nn.Linear(4, 6)]
    expected = copy.deepcopy(layers)
    group = grouped(*layers)
    hidden, encoder_states = torch.randn(3, 4), torch.randn(5, 4)
    assert torch.allclose(layers[0](hidden), expected[0](hidden))
    with caplog.at_level(logging.INFO, logger="nerkit.projections"):
        # a cross-attention: keys and values read other states than the queries
        assert torch.allclose(layers[1](encoder_states), expected[1](encoder_states))
    assert not group.shared and "attention: its projections read different inputs" in caplog.text
    assert torch.allclose(layers[2](encoder_states), expected[2](encoder_states))
    assert group.input is None and not group.waiting
    changed = grouped(*copy.deepcopy(expected))
    assert torch.allclose(changed.layers[0](hidden), expected[0](hidden))
    hidden.mul_(2)  # changed in place after the group projected it: the outputs waiting for it are stale
    assert torch.allclose(changed.layers[1](hidden), expected[1](hidden)) and not changed.shared


class ScalesQueryInPlace(nn.Module):
    """Attention projections the way Longformer uses them: the query is scaled in place."""

    def __init__(self):
        super().__init__()
        self.query, self.key, self.value = nn.Linear(4, 6), nn.Linear(4, 6), nn.Linear(4, 6)

    def forward(self, hidden):
        query = self.query(hidden)
        query /= 2
        return (query * self.key(hidden) + self.value(hidden)).sum()


def test_a_query_changed_in_place_trains_as_with_three_multiplies():
    torch.manual_seed(0)
    plain = ScalesQueryInPlace()
    fused = copy.deepcopy(plain)
    assert fuse_projections(fused) == 1
    hidden = torch.randn(3, 4)
    plain(hidden).backward()
    fused(hidden).backward()  # autograd refuses an in-place change of one of several views of a tensor
    assert all(torch.allclose(a.grad, b.grad) for a, b in zip(plain.parameters(), fused.parameters()))


def test_only_training_in_bf16_on_the_cpu_fuses_plain_linear_layers(tiny_bert, caplog):
    model = tiny_model(tiny_bert)
    assert choose_fused_projections(model, False, "cpu", "bf16") == 0
    assert choose_fused_projections(model, True, "cuda", "bf16") == 0
    assert choose_fused_projections(model, True, "cpu", "no") == 0  # fp32: measured slower
    assert not any(isinstance(module, SharedInputLinear) for module in model.modules())
    with caplog.at_level(logging.INFO, logger="nerkit.projections"):
        assert choose_fused_projections(model, True, "cpu", "bf16") == 2
    assert "Training computes query, key and value as one matrix multiply in 2 attention modules" in caplog.text
    assert fuse_projections(model) == 0  # already fused layers are not nn.Linear exactly


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_training_in_bf16_fuses_the_projections_and_saves_the_same_checkpoint(script, tiny_bert, ner_files,
                                                                              tmp_path, monkeypatch, on_the_cpu):
    monkeypatch.setenv("NERKIT_AUTO_PRECISION", "bf16")  # the automatic choice, on any CPU
    files = {"train": ner_files["train"], "validation": ner_files["validation"]}
    fused, three = counted_runs(script, tiny_bert, files, tmp_path, ["--num_train_epochs", "1",
                                                                     "--no_fast_dropout_masks"],
                                "--no_fused_projections")
    assert fused["addmm"] < three["addmm"]
    weights, three_weights = (load_file(tmp_path / name / "model.safetensors") for name in ("on", "off"))
    assert {name: (tensor.shape, tensor.dtype) for name, tensor in weights.items()} == \
        {name: (tensor.shape, tensor.dtype) for name, tensor in three_weights.items()}
    # the input's gradient is rounded to bf16 once instead of three times: the same training to bf16's precision
    for name, key in (("train_results.json", "train_loss"), ("eval_results.json", "eval_loss")):
        assert read_json(tmp_path / "on" / name)[key] == pytest.approx(read_json(tmp_path / "off" / name)[key],
                                                                       rel=1e-2)

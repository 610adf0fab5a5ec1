"""Dropout masks drawn 16 bits at a time (nerkit.dropout): torch's dropout distribution and scaling, used
only where they measure faster, and what training really draws its masks with."""

import logging
import shutil

import pytest
import torch
from safetensors.torch import load_file
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils._python_dispatch import TorchDispatchMode
from transformers import AutoModelForTokenClassification

from nerkit import dropout
from nerkit.dropout import MaskDropout, choose_dropout_masks, keep_scale
from nerkit.varlen import BUCKETED, BUCKETED_OWN_MASKS, attention_with_masks, bucketed_packing
from test_no_trainer import run_loop
from test_run_ner import read_json, run

SCRIPTS = {"run_ner.py": (run, ["--do_train", "--do_eval"]), "run_ner_no_trainer.py": (run_loop, [])}


class OpCounter(TorchDispatchMode):
    """Counts the aten operators that run, however they are reached (C++ decompositions included)."""

    def __init__(self):
        super().__init__()
        self.counts = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        self.counts[name] = self.counts.get(name, 0) + 1
        return func(*args, **(kwargs or {}))


@pytest.fixture
def probe_stubbed(monkeypatch, on_the_cpu):  # the masks are a CPU choice
    # the log's probe calls torch's dropout (bernoulli_) too, which these tests count
    monkeypatch.setattr(dropout, "time_dropouts", lambda: (0.4, 1.2))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("p", [0.1, 0.5])
def test_masks_keep_each_element_with_probability_1_minus_p_and_scale_as_torch_does(dtype, p):
    torch.manual_seed(0)
    noise = keep_scale(torch.empty(1000, 1000, dtype=dtype), p)
    assert noise.dtype == dtype and noise.shape == (1000, 1000)
    torch_scale = torch.nn.functional.dropout(torch.ones(100000, dtype=dtype), p, True).max()
    assert set(noise.unique().tolist()) == {0.0, torch_scale.item()}
    kept = (noise > 0).double()
    assert kept.mean().item() == pytest.approx(1 - p, abs=5 * (p * (1 - p) / kept.numel()) ** 0.5)
    # the four numbers read from one 64-bit integer are independent: neighbours are dropped together p^2 of the time
    flat = kept.flatten()
    for lag in (1, 2, 3, 4):
        both_dropped = ((1 - flat[:-lag]) * (1 - flat[lag:])).mean().item()
        assert both_dropped == pytest.approx(p * p, abs=5 * (p * p / flat.numel()) ** 0.5)


def test_masks_come_from_torchs_generator():
    like = torch.empty(64, 64)
    torch.manual_seed(3)
    first = keep_scale(like, 0.1)
    torch.manual_seed(3)
    assert torch.equal(keep_scale(like, 0.1), first)  # --seed and a checkpoint's random state cover them
    assert not torch.equal(keep_scale(like, 0.1), first)


def test_mask_dropout_multiplies_by_the_mask_in_training_only():
    layer = MaskDropout(0.1)
    x = torch.randn(50, 40, requires_grad=True)
    torch.manual_seed(1)
    y = layer(x)
    torch.manual_seed(1)
    noise = keep_scale(x, 0.1)
    assert torch.equal(y, x * noise)
    y.sum().backward()
    assert torch.equal(x.grad, noise)  # the gradient passes where the element was kept, scaled alike
    assert torch.equal(layer.eval()(x), x)
    torch.manual_seed(2)
    expected = torch.nn.functional.dropout(x, 1e-6, True)
    torch.manual_seed(2)
    assert torch.equal(MaskDropout(1e-6).train()(x), expected)  # p that 16 bits cannot hold: torch's dropout


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_attention_with_masks_computes_what_sdpa_computes(dtype, monkeypatch):
    torch.manual_seed(0)
    query, key, value = (torch.randn(3, 2, 7, 8, dtype=dtype) for _ in range(3))
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3, [1] * 2 + [0] * 5], dtype=torch.bool)[:, None, None, :]
    monkeypatch.setattr(dropout, "kept", lambda like, p, dtype=None: torch.ones_like(like, dtype=dtype))  # keeps all
    bias = torch.zeros(mask.shape).masked_fill(~mask, float("-inf"))
    ours = attention_with_masks(query, key, value, bias, 0.1, None) * 0.9  # kept weights are scaled by 1 / 0.9
    with sdpa_kernel(SDPBackend.MATH):
        reference = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=mask)
    assert ours.dtype == dtype
    torch.testing.assert_close(ours, reference)  # SDPA scales query and key by the root of the scale each


def test_attention_with_masks_drops_attention_weights():
    torch.manual_seed(0)
    query, key = torch.zeros(1, 1, 4, 8), torch.zeros(1, 1, 4, 8)  # uniform attention: each weight 1/4
    value = torch.eye(4)[None, None].repeat(1, 1, 1, 2)  # the output is the (dropped) attention weights
    output = attention_with_masks(query, key, value, None, 0.5, None)[0, 0, :, :4]
    assert set(output.unique().tolist()) <= {0.0, 0.5} and 0 < (output == 0).sum() < 16


def test_training_on_the_cpu_takes_the_masks(tiny_bert, ner_files, monkeypatch, caplog):
    from transformers import AutoTokenizer

    model = AutoModelForTokenClassification.from_pretrained(tiny_bert, num_labels=3).train()
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    sample = [{"input_ids": tokenizer(words)["input_ids"]} for words in ("John Smith", "a much longer sentence here")]
    assert bucketed_packing(model, tokenizer, sample) is not None and model.config._attn_implementation == BUCKETED
    layers = [name for name, module in model.named_modules() if type(module) is torch.nn.Dropout]
    assert not choose_dropout_masks(model, False, "cpu")
    assert not choose_dropout_masks(model, True, "cuda")
    assert all(type(model.get_submodule(name)) is torch.nn.Dropout for name in layers)
    monkeypatch.setattr(dropout, "time_dropouts", lambda: (0.4, 1.2))
    with caplog.at_level(logging.INFO, logger="nerkit.dropout"):
        assert choose_dropout_masks(model, True, "cpu")
    assert f"the model's {len(layers)} nn.Dropout layers and in attention by length buckets: 0.40 ms" in caplog.text
    assert all(type(model.get_submodule(name)) is MaskDropout for name in layers)
    assert model.config._attn_implementation == BUCKETED_OWN_MASKS
    caplog.clear()
    quiet = AutoModelForTokenClassification.from_pretrained(tiny_bert, num_labels=3, attention_probs_dropout_prob=0.0)
    assert bucketed_packing(quiet, tokenizer, sample) is not None
    quiet_layers = dropout.dropout_layers(quiet)
    with caplog.at_level(logging.INFO, logger="nerkit.dropout"):  # ALBERT's default: attention draws no mask
        assert choose_dropout_masks(quiet, True, "cpu")
    assert f"the model's {len(quiet_layers)} nn.Dropout layers: 0.40 ms" in caplog.text


def test_the_probe_leaves_torchs_random_state_as_it_was():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    ours, theirs = dropout.time_dropouts()
    assert ours > 0 and theirs > 0 and torch.equal(torch.rand(3), expected)


def counted_runs(script, model, files, folder, flags, off_flag):
    """The aten operator counts of two runs of `script` with `flags`: as they are, in folder / "on", and with
    `off_flag` added, in folder / "off"."""
    runner, script_flags = SCRIPTS[script]
    counts = []
    for name, extra in (("on", []), ("off", [off_flag])):
        with OpCounter() as counter:
            runner(model, folder / name, *script_flags, *flags, *extra, files=files)
        counts.append(counter.counts)
    return counts


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_training_draws_no_mask_with_bernoulli(script, tiny_bert, ner_files, tmp_path, probe_stubbed):
    files = {"train": ner_files["train"], "validation": ner_files["validation"]}
    ours, theirs = counted_runs(script, tiny_bert, files, tmp_path, ["--num_train_epochs", "1",
                                                                     "--no_auto_mixed_precision"],
                                "--no_fast_dropout_masks")
    assert theirs.get("bernoulli_", 0) > 0 and ours.get("bernoulli_", 0) == 0
    assert ours.get("random_", 0) > theirs.get("random_", 0)
    assert read_json(tmp_path / "on" / "eval_results.json")["eval_loss"] != \
        read_json(tmp_path / "off" / "eval_results.json")["eval_loss"]  # other masks, another model


def test_a_resumed_run_draws_the_masks_an_uninterrupted_one_draws(tiny_bert, ner_files, tmp_path, probe_stubbed):
    files = {"train": ner_files["train"], "validation": ner_files["validation"]}
    common = ["--num_train_epochs", "2", "--checkpointing_steps", "4"]
    whole = run_loop(tiny_bert, tmp_path / "whole", *common, files=files)
    resumed = tmp_path / "resumed"
    shutil.copytree(whole / "step_4", resumed / "step_4")
    run_loop(tiny_bert, resumed, *common, "--resume_from_checkpoint", "latest", files=files)
    weights, resumed_weights = load_file(whole / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert all((weights[name] - resumed_weights[name]).abs().max() < 1e-5 for name in weights)

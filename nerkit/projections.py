"""Attention's query, key and value projections as one matrix multiply, training in bf16 on the CPU.

An encoder's self-attention (BERT's `query`, `key` and `value`, DistilBERT's `q_lin`..., others' `q_proj`...)
projects the same hidden states three times. One linear layer with the three weights stacked computes the
same outputs with one matrix multiply, one cast of the input to bf16 under autocast instead of three, and in
the backward pass one product for the input's gradient, summed in float32 inside the kernel, instead of
three rounded to bf16 and added. On the AMX Xeon of bench/RESULTS.md a bf16 training step of MiniLM took
107.0-110.5 ms against 111.7-115.7 ms with three (in one process, the same batches, taking turns).

The three layers stay `nn.Linear` with their own weights, so checkpoints, the optimizer and the saved model
are unchanged: each becomes a `SharedInputLinear` whose `group` computes all three outputs the first time one
of them is called with an input and hands the other two out when they are called with that same tensor.
Where one is called with another input while its output waits (a cross-attention's keys and values read
the encoder's states), the group stops sharing and each layer computes alone from then on, which the log
says.

Only where this was measured to pay: training in bf16 on the CPU. In fp32 the three casts it saves do not
exist, and a step took 158.5-160.2 ms against 156.8-158.5 ms with three on the same Xeon. Evaluation (without
gradients) keeps three multiplies: there the stacked weights are built again at each call, and a bf16
forward of 32 sentences of 40 sub-tokens took 46.4 ms against 42.2 ms with three. `--no_fused_projections`
keeps three multiplies in training too.
"""

import logging

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

NAMES = (("query", "key", "value"), ("q_proj", "k_proj", "v_proj"), ("q_lin", "k_lin", "v_lin"))


class ProjectionGroup:
    """Linear layers that read the same input: one `F.linear` with their weights stacked computes all their
    outputs, kept in `waiting` until each layer asks for its own. `input` and `version` say which tensor
    (and which state of it, should it change in place) they were computed from. A layer asking with
    another input while its output waits (a cross-attention's keys and values read other states than its
    queries) ends the sharing: from then on each layer of the group computes alone."""

    def __init__(self, name, layers):
        self.name, self.layers = name, layers
        self.sizes = [layer.out_features for layer in layers]
        self.input, self.version, self.waiting = None, None, {}
        self.shared = True

    def output(self, layer, input):
        if not torch.is_grad_enabled() or not self.shared:  # evaluation: one multiply measured no faster there
            return F.linear(input, layer.weight, layer.bias)
        if layer in self.waiting:
            if input is not self.input or input._version != self.version:
                return self.stop_sharing(layer, input)
            output = self.waiting.pop(layer)
        else:
            weight = torch.cat([member.weight for member in self.layers])
            bias = None if self.layers[0].bias is None else torch.cat([member.bias for member in self.layers])
            # copies, not views of one tensor: a model may scale its query in place (Longformer's
            # `query_vectors /= sqrt(head_dim)`), which autograd refuses on one of several views
            outputs = torch.split_with_sizes_copy(F.linear(input, weight, bias), self.sizes, dim=-1)
            self.waiting = dict(zip(self.layers, outputs))
            self.input, self.version = input, input._version
            output = self.waiting.pop(layer)
        if not self.waiting:
            self.input = None  # the group keeps no activation once every layer has its output
        return output

    def stop_sharing(self, layer, input):
        logger.info("%s: its projections read different inputs, so they are computed apart from now on.",
                    self.name)
        self.shared, self.input, self.waiting = False, None, {}
        return F.linear(input, layer.weight, layer.bias)


class SharedInputLinear(nn.Linear):
    """An `nn.Linear` whose output its `group` computes together with its siblings'."""

    group: ProjectionGroup

    def forward(self, input):
        return self.group.output(self, input)


def projection_triples(model):
    """{module name: its (query, key, value) `nn.Linear` layers} for each attention module of `model` whose
    projections can share one multiply: plain linear layers of the same input size, dtype and device, all
    with a bias or none."""
    triples = {}
    for module_name, module in model.named_modules():
        for names in NAMES:
            layers = [getattr(module, name, None) for name in names]
            if all(type(layer) is nn.Linear for layer in layers) and len(
                    {(layer.in_features, layer.weight.dtype, layer.weight.device, layer.bias is None)
                     for layer in layers}) == 1:
                triples[module_name] = layers
    return triples


def fuse_projections(model):
    """Make each triple of `projection_triples` one `ProjectionGroup`; returns how many."""
    triples = projection_triples(model)
    for name, layers in triples.items():
        group = ProjectionGroup(name, layers)
        for layer in layers:
            layer.__class__ = SharedInputLinear
            layer.group = group
    return len(triples)


def choose_fused_projections(model, enabled, device_type, mixed_precision):
    """Fuse `model`'s projections for training in bf16 (`mixed_precision`, as accelerate names it) on a CPU,
    if `enabled`; log it. Returns how many attention modules were fused."""
    if not enabled or device_type != "cpu" or mixed_precision != "bf16":
        return 0
    count = fuse_projections(model)
    if count:
        logger.info("Training computes query, key and value as one matrix multiply in %d attention modules, "
                    "one cast of their input to bf16 instead of three (--no_fused_projections keeps three).",
                    count)
    return count

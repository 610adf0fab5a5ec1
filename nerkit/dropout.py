"""Dropout masks drawn 16 bits at a time, training on the CPU, where torch's own masks are slow to draw.

On the CPU, torch's dropout draws its mask with `bernoulli_`, through MKL's Bernoulli generator. On the AMD
EPYC of bench/RESULTS.md that takes about 6 ns an element whatever the number of threads: 1.1 ms for one
activation of 490 sub-tokens x 384, some 35 ms of a 250 ms bf16 training step of MiniLM (13 dropout layers
and attention's). On an Intel Xeon with AMX it is no faster: 1.0-1.1 ms for a 512 x 384 activation, against
0.21-0.25 ms for these masks. `kept` instead fills 64-bit integers (`random_words`: numpy's SFC64 seeded
from torch's generator, so `--seed` and the random state a checkpoint saves cover them) and reads each as
four 16-bit numbers; an element is kept where its number is at least p x 65,536. That is the same Bernoulli
distribution with p rounded to the nearest 1/65,536, and `keep_scale` scales the kept elements by 1/(1 - p)
in the activation's dtype, as torch's dropout scales them (attention by length buckets scales the product of
the kept weights with the values instead, nerkit.varlen.attention_with_masks).

Training on the CPU swaps the model's `nn.Dropout` layers for `MaskDropout`, and attention by length
buckets (nerkit.varlen) computes its dropout with the same masks, on every CPU (not on CUDA, whose dropout
is a fused kernel). The choice is not made by a timing: a timing taken while the machine is busy could
waver between two runs of one command and give them other masks (it did, in a test suite run beside
another job). `time_dropouts` still times both ways for the log. `--no_fast_dropout_masks` keeps torch's
dropout.
"""

import logging
import time

import numpy
import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

LEVELS = 1 << 16  # a 16-bit number per element
PROBE_SHAPE = (512, 384)


def representable(p):
    """Whether p rounds to a keep probability strictly between 0 and 1 at 16 bits."""
    return 0 < round(p * LEVELS) < LEVELS


def kept(like, p, dtype=None):
    """Where dropout with probability `p` keeps `like`'s elements: 1 where kept, 0 where dropped (with
    probability round(p x 65,536) / 65,536), in `dtype` (`like`'s by default), of its shape on its device.
    The comparison writes the numbers straight in `dtype`: a bool mask, and `torch.where` or `masked_fill`
    on it, take several times as long on the CPU (torch does not vectorise bool tensors)."""
    count = like.numel()
    numbers = random_words((count + 3) // 4, like.device).view(torch.int16)[:count].view(like.shape)
    # each number uniform over -32,768..32,767
    out = torch.empty(like.shape, dtype=dtype or like.dtype, device=like.device)
    return torch.ge(numbers, round(p * LEVELS) - LEVELS // 2, out=out)


def random_words(count, device):
    """`count` random 64-bit integers on `device`. On the CPU they come from numpy's SFC64 generator, seeded
    with a number drawn from torch's generator, so `--seed` and the random state a checkpoint saves cover them
    as they cover torch's own draws: on the Xeon of bench/RESULTS.md SFC64 fills them in about half the time
    of torch's Mersenne twister (64 against 125 us for 49,152), which draws one number after another on one
    core. Elsewhere torch's generator fills them (`random_`)."""
    if device.type != "cpu":
        return torch.empty(count, dtype=torch.int64, device=device).random_(-2 ** 63, None)
    seed = int(torch.empty((), dtype=torch.int64).random_())  # 0..2^63 - 1
    return torch.from_numpy(numpy.random.SFC64(seed).random_raw(count).view(numpy.int64))


def keep_scale(like, p):
    """What dropout with probability `p` multiplies `like` by: 0 where not `kept`, else 1/(1 - p) (rounded to
    its dtype, as torch's dropout rounds it), in its dtype and on its device."""
    return kept(like, p).mul_(1 / (1 - p))


class MaskDropout(nn.Dropout):
    """`nn.Dropout` whose mask comes from `keep_scale` when it trains on the CPU."""

    def forward(self, input):
        if not (self.training and input.device.type == "cpu" and representable(self.p)):
            return super().forward(input)
        noise = keep_scale(input, self.p)
        return input.mul_(noise) if self.inplace else input * noise


def time_dropouts(rounds=5):
    """Milliseconds for one dropout (p 0.1) of a 512 x 384 float32 activation, (keep_scale's, torch's): the
    best of `rounds`, taking turns. Torch's random state is left as it was."""
    with torch.random.fork_rng(devices=[]):
        activation = torch.randn(*PROBE_SHAPE)
        ways = (lambda: activation * keep_scale(activation, 0.1), lambda: F.dropout(activation, 0.1, True))
        best = [float("inf")] * len(ways)
        for _ in range(rounds):
            for index, way in enumerate(ways):
                started = time.perf_counter()
                way()
                best[index] = min(best[index], (time.perf_counter() - started) * 1000)
    return tuple(best)


ATTENTION_DROPOUT_NAMES = ("attention_probs_dropout_prob", "attention_dropout", "attn_pdrop")


def attention_dropout(config):
    """The dropout probability of the attention weights that `config` names (0.0 if it names none): with 0
    (ALBERT's default) attention draws no masks."""
    return next((float(getattr(config, name)) for name in ATTENTION_DROPOUT_NAMES
                 if isinstance(getattr(config, name, None), (int, float))), 0.0)


def dropout_layers(model):
    """Names of the model's `nn.Dropout` layers whose p the masks can draw."""
    return [name for name, module in model.named_modules()
            if type(module) is nn.Dropout and representable(module.p)]


def choose_dropout_masks(model, enabled, device_type):
    """Train `model` with `keep_scale`'s masks when training on a CPU; log the choice with both timings.
    Returns whether the masks are used."""
    from .varlen import BUCKETED, BUCKETED_OWN_MASKS

    layers = dropout_layers(model)
    if not enabled or device_type != "cpu" or not layers:  # a model without dropout layers trains none
        return False
    ours, theirs = time_dropouts()
    shape = " x ".join(map(str, PROBE_SHAPE))
    for name in layers:
        old = model.get_submodule(name)
        model.set_submodule(name, MaskDropout(old.p, old.inplace))
    bucketed = model.config._attn_implementation == BUCKETED
    if bucketed:
        model.set_attn_implementation(BUCKETED_OWN_MASKS)
    logger.info("Dropout masks drawn 16 bits at a time (p rounded to 1/65,536) in the model's %d nn.Dropout "
                "layers%s: %.2f ms for a %s activation here against %.2f ms for torch's dropout, timed once for "
                "this line (the masks are used on every CPU whatever it says: a timing on a busy machine wavers, and "
                "would give two runs of one command other masks; --no_fast_dropout_masks keeps torch's).", len(layers),
                " and in attention by length buckets" if bucketed and attention_dropout(model.config) else "",
                ours, shape, theirs)
    return True

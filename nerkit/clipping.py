"""Gradient clipping folded into fused AdamW's step, as both scripts clip (the Trainer's `_clip_grad_norm`,
the Accelerate loop's `--max_grad_norm`).

`torch.nn.utils.clip_grad_norm_` reads every gradient once for the norm and then reads and writes each
again to multiply it by min(1, max_norm / (norm + 1e-6)). Torch's fused Adam and AdamW kernels already
divide each gradient by the optimizer's `grad_scale`, where one is set (GradScaler sets it to unscale fp16
gradients), in the pass that reads it for the update, and write the divided gradient back. Setting
`grad_scale` to the inverse of the clipping coefficient gives the same clipped gradients, to float
rounding (a division by 1/c instead of a multiplication by c), without the extra pass: on the AMX Xeon of
bench/RESULTS.md the multiplication took 2.1 ms of a 143 ms bf16 step of MiniLM (13.3M trained
parameters), and the fused step is no slower with the division.

On the CPU the norm of float32 gradients comes from one BLAS dot product per tensor: 1.25 ms against
2.04 ms for `torch.nn.utils.get_total_norm` (`_foreach_norm`) on the same 103 tensors; elsewhere, and
for other dtypes, from torch's own function. Either way it is the square root of the sum of squares,
summed in another order.

Clipping is folded only where nothing else uses `grad_scale` and the gradients are whole on each process:
a fused torch Adam or AdamW, no GradScaler (fp16), a single process or DDP (whose gradients are already
averaged), plain tensors. Anything else (FSDP, DeepSpeed, tensor parallelism's DTensors, another
optimizer) clips the library's way.
"""

import torch
from accelerate.utils import DistributedType

WHOLE_GRADIENTS = (DistributedType.NO, DistributedType.MULTI_CPU, DistributedType.MULTI_GPU)


def gradient_norm(grads):
    """The 2-norm of all `grads` together, as a float32 tensor."""
    if all(grad.device.type == "cpu" and grad.dtype == torch.float32 for grad in grads):
        flat = [grad.reshape(-1) for grad in grads]
        return torch.stack([torch.dot(grad, grad) for grad in flat]).sum().sqrt()
    return torch.nn.utils.get_total_norm(grads).float()


def foldable(optimizer, accelerator, grads):
    """Whether clipping `grads` can be folded into `optimizer` (unwrapped from accelerate's): plain tensors
    (not a tensor-parallel DTensor's shards) on the processes of a fused torch Adam or AdamW."""
    return (isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW)) and bool(optimizer.defaults.get("fused"))
            and accelerator.scaler is None and accelerator.distributed_type in WHOLE_GRADIENTS
            and getattr(optimizer, "found_inf", None) is None and all(type(grad) is torch.Tensor for grad in grads))


def clip_in_step(parameters, max_norm, optimizer, accelerator):
    """Clip the gradients of `parameters` to a total 2-norm of `max_norm` in `optimizer`'s next step, and
    return the norm before clipping; None, changing nothing, where that cannot be done (`foldable`), for
    the caller to clip its library's way."""
    inner = getattr(optimizer, "optimizer", optimizer)
    grads = [parameter.grad for parameter in parameters if parameter.grad is not None]
    if not grads or not foldable(inner, accelerator, grads):
        return None
    norm = gradient_norm(grads)
    coefficient = torch.clamp(max_norm / (norm + 1e-6), max=1.0)  # clip_grad_norm_'s own formula
    inner.grad_scale = (1 / coefficient).to(grads[0].device)  # the fused step divides each gradient by it
    if not getattr(inner, "_nerkit_forgets_scale", False):
        inner.register_step_post_hook(forget_scale)
        inner._nerkit_forgets_scale = True
    return norm


def clip_gradients(parameters, max_norm, optimizer, accelerator):
    """`clip_in_step`, else `accelerator.clip_grad_norm_`; returns the norm before clipping either way."""
    parameters = list(parameters)
    norm = clip_in_step(parameters, max_norm, optimizer, accelerator)
    return norm if norm is not None else accelerator.clip_grad_norm_(parameters, max_norm)


def forget_scale(optimizer, args, kwargs):
    """A step applies the scale it was given once: a step not clipped before it divides by nothing."""
    optimizer.grad_scale = None

"""Gradient clipping folded into fused AdamW's step (nerkit.clipping)."""

import types

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook
from accelerate.utils import DistributedType

from nerkit.clipping import clip_gradients, gradient_norm
from nerkit.speed import fresh_accelerator


def small_model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 5))


def give_gradients(model, seed):
    generator = torch.Generator().manual_seed(seed)
    for parameter in model.parameters():
        parameter.grad = torch.randn(parameter.shape, generator=generator)


def total_norm(tensors):
    return torch.linalg.vector_norm(torch.cat([tensor.double().reshape(-1) for tensor in tensors]))


@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-6), (torch.bfloat16, 2 ** -8)])
def test_gradient_norm_is_the_norm_of_all_gradients_together(dtype, tolerance):
    """By dot products in float32; bf16 gradients by torch's own norm, which rounds it to bf16."""
    generator = torch.Generator().manual_seed(0)
    grads = [torch.randn(shape, generator=generator).to(dtype) for shape in ((7, 3), (11,), (4, 5, 6))]
    norm = gradient_norm(grads)
    assert norm.dtype == torch.float32
    assert norm.item() == pytest.approx(total_norm(grads).item(), rel=tolerance)


@pytest.mark.parametrize("max_norm", [0.5, 1e6])
def test_folded_clipping_takes_the_step_that_clipping_first_takes(max_norm):
    """Three steps with clip_gradients and the fused step give the parameters (and gradients) of
    clip_grad_norm_ followed by the same step; the gradients are left as they are until the step divides
    them, and a later step that was not clipped divides by nothing."""
    launcher = fresh_accelerator(cpu=True)  # also after a run in this process left accelerate on a GPU
    ours, theirs = small_model(), small_model()
    our_step = torch.optim.AdamW(ours.parameters(), lr=1e-2, fused=True)
    their_step = torch.optim.AdamW(theirs.parameters(), lr=1e-2, fused=True)
    for step in range(4):
        give_gradients(ours, step), give_gradients(theirs, step)
        if step < 3:
            before = [parameter.grad.clone() for parameter in ours.parameters()]
            norm = clip_gradients(ours.parameters(), max_norm, our_step, launcher)
            their_norm = torch.nn.utils.clip_grad_norm_(theirs.parameters(), max_norm)
            assert norm.item() == pytest.approx(their_norm.item(), rel=1e-6)
            assert all(torch.equal(grad, parameter.grad) for grad, parameter in zip(before, ours.parameters()))
        our_step.step(), their_step.step()
        assert our_step.grad_scale is None
        # Dividing inside the step rounds otherwise than clip_grad_norm_'s product: each update (of size lr,
        # 1e-2) may differ by a float32 rounding of it, about 1e-9, and an AVX512 CPU showed 1.9e-9 within
        # four steps. A wrong scale moves a parameter far more (a max norm 1.5x too large: 1.9e-3).
        for mine, other in zip(ours.parameters(), theirs.parameters()):
            torch.testing.assert_close(mine.grad, other.grad, rtol=1e-6, atol=1e-9)
            torch.testing.assert_close(mine, other, rtol=1e-6, atol=1e-8)
    if max_norm < 1:  # the clipped gradients are what the step applied
        assert total_norm([parameter.grad for parameter in ours.parameters()]) > max_norm * 2  # step 4: unclipped


@pytest.mark.parametrize("why", ["foreach optimizer", "grad scaler", "fsdp"])
def test_clipping_is_the_librarys_where_it_cannot_be_folded(why):
    """A step that is not fused, a GradScaler (which sets grad_scale itself), or sharded gradients: the
    gradients are clipped at once, by accelerate's clip_grad_norm_, and the optimizer gets no scale."""
    model = small_model()
    give_gradients(model, 0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, fused=why != "foreach optimizer")
    calls = []

    def library_clip(parameters, max_norm):
        calls.append(max_norm)
        return torch.nn.utils.clip_grad_norm_(parameters, max_norm)

    launcher = types.SimpleNamespace(scaler=object() if why == "grad scaler" else None,
                                     distributed_type=DistributedType.FSDP if why == "fsdp" else DistributedType.NO,
                                     clip_grad_norm_=library_clip)
    norm = clip_gradients(model.parameters(), 0.5, optimizer, launcher)
    assert calls == [0.5] and norm > 0.5
    assert total_norm([parameter.grad for parameter in model.parameters()]).item() == pytest.approx(0.5, rel=1e-5)
    assert getattr(optimizer, "grad_scale", None) is None


@pytest.fixture
def applied_gradient_norms():
    """The total norm of the gradients each optimizer step applied (read after the step, which writes the
    divided gradients back) and the scale it was given."""
    seen = []

    def before(optimizer, args, kwargs):
        seen.append([getattr(optimizer, "grad_scale", None)])

    def after(optimizer, args, kwargs):
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        seen[-1].append(total_norm(grads).item())

    handles = [register_optimizer_step_pre_hook(before),
               register_optimizer_step_post_hook(after)]
    yield seen
    for handle in handles:
        handle.remove()


@pytest.mark.parametrize("script", ["run_ner", "run_ner_no_trainer"])
def test_both_scripts_clip_in_the_fused_step(script, tiny_bert, ner_files, tmp_path, applied_gradient_norms):
    """With --max_grad_norm 0.01 every step is given a scale above 1 and applies gradients of norm 0.01."""
    from test_precision import run_loop
    from test_run_ner import run

    if torch.cuda.is_available():
        pytest.skip("the scripts would run on the GPU")
    flags = ("--max_grad_norm", "0.01")
    if script == "run_ner":
        run(tiny_bert, tmp_path / "o", "--do_train", "--max_steps", "2", *flags, files={"train": ner_files["train"]})
    else:
        run_loop(tiny_bert, tmp_path / "o", {"train": ner_files["train"]}, "--max_train_steps", "2", *flags)
    assert len(applied_gradient_norms) == 2
    for scale, applied in applied_gradient_norms:
        assert scale is not None and scale.item() > 1
        assert applied == pytest.approx(0.01, rel=1e-4)

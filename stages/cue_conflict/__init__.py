"""Texture vs shape (Geirhos et al., ICLR 2019): the shape bias of the model by the published recipe, and
where the cue-conflict stimuli land on the atlas (``atlas cue-conflict``, docs/experiments.md)."""

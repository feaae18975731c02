"""The model registry: load a classifier, split it at a layer, find its weights, pick a device."""

"""align: aligned activation atlases of two models or two layers (same image locations, one shared layout)."""

"""reduce: lay the collected activations out in 2-D (UMAP, t-SNE or PCA)."""

from stages.reduce.stage import run

__all__ = ["run"]

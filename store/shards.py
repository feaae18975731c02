"""How a sharded stage splits its units (collect blocks, render batches, tiles levels) between array tasks."""

from __future__ import annotations

from store.errors import AtlasError


def shard_blocks(n_blocks: int, shard: int, n_shards: int) -> range:
    """Contiguous, disjoint block ranges: shard i of n gets blocks [i*B//n, (i+1)*B//n)."""
    if n_shards < 1 or not 0 <= shard < n_shards:
        raise AtlasError(f"--shard {shard}/{n_shards}: need 0 <= i < n, e.g. --shard 0/4")
    return range(shard * n_blocks // n_shards, (shard + 1) * n_blocks // n_shards)

"""Rewrite a store of an older schema version (and every group derived from it) as the current one.

Schema 1 differs from 2 only in how chunks are kept (store/schema.py): no checksum codec, and
chunks equal to the fill value left out. Migrating copies every array chunk by chunk into a new
group with the checksum codec and every chunk written (a chunk absent in version 1 reads as the
fill value, which is exactly what it held), keeps every attribute, sets the new version, and
publishes the copy in place of the old group (store/atomic.py): a migration killed half way
leaves each group either old or new, and running ``atlas migrate`` again finishes the rest. Array
contents do not change (``store.digest.group_digests`` is equal before and after), so the layout
records the migrated store's rows token and nothing downstream becomes stale.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from store import schema
from store.atlas_store import AtlasStore, open_foreign_checked
from store.atomic import lock_for, write_aside
from store.errors import AtlasError
from store.icons import FORMAT as ICONS_FORMAT
from store.icons import VERSION as ICONS_VERSION
from store.subset import ROWS, STAGE_GROUPS, SubsetStore
from store.zarrio import chunk_grid, create_array, has_checksum, open_group, writable

log = logging.getLogger(__name__)


def _copy(src: zarr.Group, dst: zarr.Group) -> None:
    for name, member in sorted(src.members(), key=lambda kv: kv[0]):
        if isinstance(member, zarr.Group):
            sub = dst.create_group(name)
            sub.attrs.update(dict(member.attrs))
            _copy(member, sub)
            continue
        array = create_array(
            dst,
            name,
            shape=member.shape,
            chunks=member.chunks,
            dtype=member.dtype,
            fill_value=member.fill_value,
            attributes=dict(member.attrs),
        )
        out = writable(array)
        for coords in np.ndindex(*chunk_grid(member)):
            out.set_block_selection(coords, member.get_block_selection(coords))


def rewrite_group(path: str | Path, attrs: dict[str, Any] | None = None) -> None:
    """Copy the group at ``path`` with today's codecs (store/zarrio.py), ``attrs`` updated, and publish it."""
    path = Path(path)
    with lock_for(path):
        source = open_group(path, mode="r")
        with write_aside(path, locked=True) as tmp:
            target = open_group(tmp, mode="w")
            _copy(source, target)
            target.attrs.update({**dict(source.attrs), **(attrs or {})})


def needs_rewrite(path: Path) -> bool:
    """Whether a group has an array without the checksum codec, or is an icons group of an older version."""
    group = open_group(path, mode="r")
    if group.attrs.get("format") == ICONS_FORMAT and group.attrs.get("version") != ICONS_VERSION:
        return True

    def arrays(g: zarr.Group) -> Any:
        for _, member in g.members():
            if isinstance(member, zarr.Group):
                yield from arrays(member)
            else:
                yield member

    return any(not has_checksum(a) for a in arrays(group))


def _derived_groups(store: AtlasStore) -> list[tuple[Path, Any]]:
    """(group path, the store it belongs to) for the store's groups and every class / comparison subset's."""
    out: list[tuple[Path, Any]] = [(store.derived_path(name), store) for name in STAGE_GROUPS]
    for kind in ("classes", "compare"):
        folder = store.path.with_name(f"{store.path.stem}.{kind}")
        for rows in sorted(folder.glob(f"*.{ROWS}.zarr")) if folder.is_dir() else []:
            name = rows.name[: -len(f".{ROWS}.zarr")]
            out.append((rows, None))
            subset = SubsetStore(store, name, np.zeros(0, np.int64), base=folder)
            out.extend((subset.derived_path(g), (name, folder)) for g in STAGE_GROUPS)
    return [(p, owner) for p, owner in out if (p / "zarr.json").exists()]


def migrate_store(path: str | Path) -> list[str]:
    """Migrate the store at ``path`` and its derived groups; one line per group rewritten."""
    p = Path(path)
    group = open_foreign_checked(p, "r")
    version = group.attrs.get("schema_version")
    lines = []
    if version != schema.SCHEMA_VERSION:
        if version not in schema.MIGRATABLE_VERSIONS:
            raise AtlasError(
                f"store {p} has schema version {version!r}; `atlas migrate` rewrites versions "
                f"{', '.join(map(str, schema.MIGRATABLE_VERSIONS))} as {schema.SCHEMA_VERSION}"
            )
        rewrite_group(p, {"schema_version": schema.SCHEMA_VERSION})
        lines.append(f"{p}: schema version {version} -> {schema.SCHEMA_VERSION}, every chunk checksummed")
    store = AtlasStore.open(p)
    for target, owner in _derived_groups(store):
        updates: dict[str, Any] = {}
        if target.name.endswith(".icons.zarr"):
            updates["version"] = ICONS_VERSION
        if target.name.endswith(".layout.zarr"):
            attrs = dict(open_group(target, mode="r").attrs)
            if attrs.get("rows_token") is None:
                holder = store if owner is store else SubsetStore.open(store, owner[0], base=owner[1])
                updates["rows_token"] = holder.content_token()
        if not updates.get("rows_token") and not needs_rewrite(target):
            continue
        rewrite_group(target, updates)
        lines.append(
            f"{target}: rewritten with chunk checksums" + (" (icons version 2)" if "version" in updates else "")
        )
    log.info("migrated %s: %d groups rewritten", p, len(lines))
    return lines

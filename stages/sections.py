"""The ``section`` of every stage's ``run(section, ctx)``: the typed parameters that stage reads.

The rule: a stage that reads one section of :class:`stages.config.Config` and nothing else takes
that section itself (reduce: ``ReduceConfig``, grid: ``GridConfig``); a stage that reads several
takes the bundle below named after it, whose fields are exactly those sections under their
``Config`` names (so ``section.model`` here is ``config.model`` there), plus the few inputs of one
call that are not parameters in ``params.yaml`` (the image explained, the pair patched, whether to
export). ``Bundle.of(config, ...)`` picks the sections out of a whole ``Config``; a stage never
sees the sections it does not read, so what a stage depends on is written in its signature.

Variants are made with typed ``model_copy(update=...)`` of a section, never by merging dicts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field

from stages.config import (
    AlignConfig,
    ClassesConfig,
    CollectConfig,
    CompareConfig,
    Config,
    CueConflictConfig,
    DataConfig,
    ExplainConfig,
    GridConfig,
    ModelConfig,
    PatchesConfig,
    ReduceConfig,
    RenderConfig,
    TilesConfig,
)


class Bundle(BaseModel):
    """The sections one stage reads, under their ``Config`` names."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    @classmethod
    def of(cls, config: Config, **inputs: Any) -> Self:
        """This stage's sections of ``config``, then ``inputs``: the call's other fields, or a section replaced."""
        sections = {name: getattr(config, name) for name in cls.model_fields if name in Config.model_fields}
        return cls(**{**sections, **inputs})


def provenance(config: Config) -> dict[str, Any]:
    """The whole configuration as JSON, recorded in a collect store's attributes (``params``)."""
    return config.model_dump(mode="json")


class CollectSection(Bundle):
    data: DataConfig
    model: ModelConfig
    collect: CollectConfig
    record: dict[str, Any] | None = Field(
        None, description="the configuration recorded as the store's params (None: these sections)"
    )

    @classmethod
    def of(cls, config: Config, **inputs: Any) -> Self:
        return super().of(config, **{"record": provenance(config), **inputs})


class RenderSection(Bundle):
    model: ModelConfig
    render: RenderConfig


class TilesSection(Bundle):
    data: DataConfig
    tiles: TilesConfig


class ClassesSection(Bundle):
    """Class atlases (``atlases="classes"``: ``classes.names``) or comparisons (``"compare"``: ``compare.pairs``)."""

    data: DataConfig
    model: ModelConfig
    reduce: ReduceConfig
    grid: GridConfig
    render: RenderConfig
    tiles: TilesConfig
    classes: ClassesConfig
    compare: CompareConfig
    atlases: Literal["classes", "compare"] = "classes"
    export: bool = True


class ExplainSection(Bundle):
    """One image through the atlas; without a store (``ctx.store`` None) only the layers figure."""

    data: DataConfig
    model: ModelConfig
    collect: CollectConfig
    render: RenderConfig
    tiles: TilesConfig
    explain: ExplainConfig
    image: str | Path = Field(..., description="the photo explained")


class AlignSection(Bundle):
    data: DataConfig
    collect: CollectConfig
    reduce: ReduceConfig
    grid: GridConfig
    render: RenderConfig
    tiles: TilesConfig
    align: AlignConfig
    export: bool = True
    record: dict[str, Any] | None = Field(None, description="the configuration each side's collect store records")

    @classmethod
    def of(cls, config: Config, **inputs: Any) -> Self:
        return super().of(config, **{"record": provenance(config), **inputs})


class VerifySection(Bundle):
    data: DataConfig
    repair: bool = False


class CueConflictSection(Bundle):
    data: DataConfig
    model: ModelConfig
    collect: CollectConfig
    cue_conflict: CueConflictConfig
    write: bool = Field(True, description="write the report and the page (off: only return the result)")


class PatchesSection(Bundle):
    data: DataConfig
    model: ModelConfig
    compare: CompareConfig
    patches: PatchesConfig
    pair: list[str] | None = Field(None, description="one [A, B] pair (None: every compare.pairs direction)")

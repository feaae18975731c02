"""The classes stage: class-filtered atlases (``atlas classes``) or class comparisons (``atlas compare``).

Both build atlases on a row subset of the collect store with the same reduce / grid / render /
tiles code as the main atlas; ``section.atlases`` picks which (:mod:`stages.classes.atlas` builds
``classes.names``, :mod:`stages.classes.compare` builds ``compare.pairs``).
"""

from __future__ import annotations

from stages.classes import atlas, compare
from stages.context import StageContext
from stages.sections import ClassesSection


def run(section: ClassesSection, ctx: StageContext) -> list[atlas.ClassAtlasResult] | list[compare.CompareResult]:
    """Every class atlas of ``classes.names`` or every comparison of ``compare.pairs`` in ``ctx.store``.

    ``ctx.on_atlas(name, icons)`` when each atlas starts, ``ctx.progress(k)`` per rendered batch.
    """
    if section.atlases == "compare":
        return compare.run(section, ctx)
    return atlas.run(section, ctx)

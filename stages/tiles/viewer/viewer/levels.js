/* Which zoom level to show, as pure functions of the on-screen size of the atlas.
 *
 * Every level is a separate rendering of the same layout (the reference's levels are separate
 * binnings, each rendered on its own), placed at the same world rectangle 0..1 x 0..1. A level's
 * icons are drawn at `cell_px` pixels; we show the finest level whose cells are still at least
 * cell_px / sqrt(2) screen pixels, i.e. the level whose icons are closest to their native size
 * (levels usually double, so exactly one level falls in [cell_px / sqrt2, cell_px * sqrt2)).
 * A second floor keeps the reference viewer's behaviour for small atlases: the home view always
 * shows the coarsest level (a finer level needs cells of at least ~0.7 x the coarsest level's
 * cells at home), so zooming in is what reveals the finer levels.
 * The next finer level fades in over the last part of the way to its switch, so the switch is a
 * cross-fade, not a jump.
 */
(function (ns) {
  "use strict";

  var SWITCH_FRACTION = Math.SQRT1_2; // cells >= ~0.71 cell_px on screen
  var FADE_FROM = 0.75; // the finer level starts fading in at 75% of its switch size

  /** Screen pixels one cell of an n x n level spans when the world (width 1) is `worldPx` wide. */
  function cellScreenPx(level, worldPx) {
    return worldPx / level.n;
  }

  /** Smallest on-screen cell side (px) at which `level` may be shown. */
  function minCellPx(levels, level, homeWorldPx) {
    var homeCoarse = homeWorldPx > 0 ? cellScreenPx(levels[0], homeWorldPx) : 0;
    return SWITCH_FRACTION * Math.max(level.cell_px, homeCoarse);
  }

  /** Index (into `levels`, sorted coarse to fine) of the level to show at this world width. */
  function chooseLevel(levels, worldPx, homeWorldPx) {
    var chosen = 0;
    for (var k = 1; k < levels.length; k++) {
      if (cellScreenPx(levels[k], worldPx) >= minCellPx(levels, levels[k], homeWorldPx)) chosen = k;
    }
    return chosen;
  }

  /** Opacity of every level: the chosen one opaque, the next finer one fading in near its switch.
   * `worldPx` / `homeWorldPx`: on-screen width of the world now and at the home zoom. */
  function levelOpacities(levels, worldPx, homeWorldPx) {
    var chosen = chooseLevel(levels, worldPx, homeWorldPx);
    var out = levels.map(function (_, k) { return k === chosen ? 1 : 0; });
    var next = chosen + 1;
    if (next < levels.length) {
      var ratio = cellScreenPx(levels[next], worldPx) / minCellPx(levels, levels[next], homeWorldPx);
      out[next] = Math.max(0, Math.min(1, (ratio - FADE_FROM) / (1 - FADE_FROM)));
    }
    return { chosen: chosen, opacity: out };
  }

  /** The cell of `level` under world point (x, y), or null (empty cell / outside the canvas). */
  function cellAt(level, byPosition, x, y) {
    if (!byPosition || x < 0 || y < 0 || x >= 1 || y >= 1) return null;
    var i = Math.floor(x * level.n), j = Math.floor(y * level.n);
    return byPosition.get(j * level.n + i) || null;
  }

  /** The nearest kept cell of `level` from column i, row j in direction (di, dj) along that row
   * or column (empty cells are skipped), or null at the edge. Keyboard navigation. */
  function stepCell(level, byPosition, i, j, di, dj) {
    for (var s = 1; s < level.n; s++) {
      var ii = i + di * s, jj = j + dj * s;
      if (ii < 0 || jj < 0 || ii >= level.n || jj >= level.n) return null;
      var cell = byPosition.get(jj * level.n + ii);
      if (cell) return cell;
    }
    return null;
  }

  /** Columns/rows [i0, i1] x [j0, j1] of an n x n level that intersect the world rectangle
   * (x, y, width, height), clamped to the grid (the cells worth drawing on screen). */
  function visibleRange(n, rect) {
    var clamp = function (v) { return Math.max(0, Math.min(n - 1, v)); };
    return { i0: clamp(Math.floor(rect.x * n)), i1: clamp(Math.floor((rect.x + rect.width) * n)),
             j0: clamp(Math.floor(rect.y * n)), j1: clamp(Math.floor((rect.y + rect.height) * n)) };
  }

  /** Index of the level of side `n` in `levels`, -1 if none. */
  function levelIndex(levels, n) {
    for (var k = 0; k < levels.length; k++) if (levels[k].n === n) return k;
    return -1;
  }

  ns.levels = {
    chooseLevel: chooseLevel,
    levelOpacities: levelOpacities,
    cellAt: cellAt,
    cellScreenPx: cellScreenPx,
    minCellPx: minCellPx,
    stepCell: stepCell,
    visibleRange: visibleRange,
    levelIndex: levelIndex,
  };
})(window.AtlasViewerParts = window.AtlasViewerParts || {});

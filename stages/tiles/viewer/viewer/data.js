/* Loading an exported atlas (docs/export_format.md) without XHR, and only what the view needs.
 *
 * Chromium blocks XHR/fetch from file:// pages, so every JSON file of the export has a .js twin
 * that assigns the object to a global (ATLAS_MANIFESTS, ATLAS_CELLS, ATLAS_LAYOUTS,
 * ATLAS_HIGHLIGHT_INDEX, ATLAS_HIGHLIGHT); we load those with <script> tags and define each
 * level's tile source inline instead of fetching its .dzi.
 *
 * Opening an atlas loads its manifest and mini-map layout only. A level's cells.js is loaded when
 * that level is first shown (or starts fading in), the highlight index when the search box is
 * first used, and one small file per (level, class) when a class is highlighted: a 1M-sample
 * atlas (8.5k cells at level 160) opens with the coarsest level's cells alone.
 */
(function (ns) {
  "use strict";

  var scripts = {};
  var loadedFiles = [];

  /** Load a script once; resolves when it has run, rejects with the file name if it is missing. */
  function loadScript(src) {
    if (!scripts[src]) {
      scripts[src] = new Promise(function (resolve, reject) {
        var tag = document.createElement("script");
        tag.src = src;
        tag.onload = function () { loadedFiles.push(src); resolve(); };
        tag.onerror = function () {
          delete scripts[src];
          tag.remove();
          reject(new Error("could not load " + src + " (is the export complete?)"));
        };
        document.head.appendChild(tag);
      });
    }
    return scripts[src];
  }

  /** Cells of one level keyed by grid position (j * n + i) for O(1) hover look-up. */
  function indexCells(cells, n) {
    var byPosition = new Map();
    cells.forEach(function (cell) { byPosition.set(cell.j * n + cell.i, cell); });
    return byPosition;
  }

  /** The manifest of one ATLAS_INDEX entry; the mini-map layout (`layoutLoading`, a Promise)
   * and the levels' cells (loadLevel) come later. Each level gets `cells` / `byPosition` (null
   * until loaded). */
  function loadAtlas(entry) {
    var base = entry.path;
    return loadScript(base + "manifest.js").then(function () {
      var manifest = (window.ATLAS_MANIFESTS || {})[entry.id];
      if (!manifest) throw new Error(base + "manifest.js does not define ATLAS_MANIFESTS['" + entry.id + "']");
      // the mini-map's layout arrives on its own (atlas.layoutLoading); nothing waits for it
      var layout = manifest.layout
        ? loadScript(base + manifest.layout).then(function () {
            return (window.ATLAS_LAYOUTS || {})[entry.id] || null;
          }, function (err) { console.warn(err.message); return null; })
        : Promise.resolve(null);
      var levels = manifest.levels.map(function (lv) {
        // the manifest's `cells` is the count; `cells` becomes the list once cells.js is loaded
        return Object.assign({}, lv, { cells_count: lv.cells, cells: null, byPosition: null, loading: null });
      });
      var atlas = { entry: entry, base: base, manifest: manifest, levels: levels, layout: null, layoutLoading: layout,
                    highlightIndex: null, highlightValues: {} };
      layout.then(function (points) { atlas.layout = points; });
      return atlas;
    });
  }

  /** Load one level's cells.js (once); resolves with the level, its `cells` and `byPosition` set. */
  function loadLevel(atlas, level) {
    if (!level.loading) {
      var t0 = performance.now();
      level.loading = loadScript(atlas.base + level.cells_js).then(function () {
        var cells = (window.ATLAS_CELLS || {})[atlas.entry.id + "/" + level.n];
        if (!cells) throw new Error(atlas.base + level.cells_js + " does not define ATLAS_CELLS['" + atlas.entry.id + "/" + level.n + "']");
        level.cells = cells;
        level.byPosition = indexCells(cells, level.n);
        level.loadMs = performance.now() - t0; // request to indexed cells (bench/viewer.py)
        return level;
      });
      level.loading.catch(function () { level.loading = null; });
    }
    return level.loading;
  }

  /** The atlas's highlight index (class names, data-set labels, which files each level has);
   * resolves with null when the export has none (class and comparison atlases). */
  function loadHighlightIndex(atlas) {
    if (!atlas.manifest.highlight) return Promise.resolve(null);
    if (!atlas.highlightIndexLoading) {
      atlas.highlightIndexLoading = loadScript(atlas.base + atlas.manifest.highlight).then(function () {
        atlas.highlightIndex = (window.ATLAS_HIGHLIGHT_INDEX || {})[atlas.entry.id] || null;
        if (atlas.highlightIndex) {
          atlas.highlightIndex.levelSets = {};
          Object.keys(atlas.highlightIndex.levels).forEach(function (n) {
            var lv = atlas.highlightIndex.levels[n];
            atlas.highlightIndex.levelSets[n] = { "class": new Set(lv.classes), label: new Set(lv.labels) };
          });
        }
        return atlas.highlightIndex;
      });
    }
    return atlas.highlightIndexLoading;
  }

  /** One level's values of one highlight (kind "class" | "label", index): resolves with
   * {values: Float32Array by cell number (NaN: no support), max, cells: number supported}.
   * A (level, class) without support is known from the index: no file is requested. */
  function loadHighlight(atlas, level, kind, index) {
    var key = level.n + "/" + kind + "/" + index;
    if (!atlas.highlightValues[key]) {
      atlas.highlightValues[key] = loadHighlightIndex(atlas).then(function (hx) {
        var values = new Float32Array(level.cells_count);
        values.fill(NaN);
        var sets = hx && hx.levelSets[String(level.n)];
        if (!sets || !sets[kind] || !sets[kind].has(index)) return { values: values, max: 0, cells: 0 };
        var file = hx.files.replace("{n}", level.n).replace("{kind}", kind).replace("{index}", index);
        return loadScript(atlas.base + file).then(function () {
          var rec = (window.ATLAS_HIGHLIGHT || {})[atlas.entry.id + "/" + key];
          if (!rec) throw new Error(atlas.base + file + " does not define its values");
          for (var k = 0; k < rec.cells.length; k++) values[rec.cells[k]] = rec.values[k];
          return { values: values, max: rec.max, cells: rec.cells.length };
        });
      });
      atlas.highlightValues[key].catch(function () { delete atlas.highlightValues[key]; });
    }
    return atlas.highlightValues[key];
  }

  /** An inline OpenSeadragon tile source for one level's DZI pyramid (no .dzi request). */
  function tileSource(base, level) {
    var url = base + level.tiles;
    if (url.charAt(url.length - 1) !== "/") url += "/";
    return {
      width: level.canvas_px,
      height: level.canvas_px,
      tileSize: level.tile_size,
      tileOverlap: level.overlap,
      getTileUrl: function (z, x, y) { return url + z + "/" + x + "_" + y + "." + level.format; },
    };
  }

  /** Class names of the mini-map's labels: the layout's own `names`, else the loaded cells'. */
  function classNames(atlas) {
    var names = new Map();
    var given = atlas.layout && atlas.layout.names;
    if (given) {
      Object.keys(given).forEach(function (k) { names.set(Number(k), given[k]); });
      return names;
    }
    atlas.levels.forEach(function (lv) {
      (lv.cells || []).forEach(function (cell) {
        (cell.classes || []).forEach(function (c) { names.set(c.index, c.name); });
      });
    });
    return names;
  }

  ns.data = {
    loadScript: loadScript, loadAtlas: loadAtlas, loadLevel: loadLevel, loadHighlightIndex: loadHighlightIndex,
    loadHighlight: loadHighlight, tileSource: tileSource, classNames: classNames,
    loadedFiles: function () { return loadedFiles.slice(); },
  };
})(window.AtlasViewerParts = window.AtlasViewerParts || {});

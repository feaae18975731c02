/* Loading an exported atlas (docs/export_format.md) without XHR.
 *
 * Chromium blocks XHR/fetch from file:// pages, so every JSON file of the export has a .js twin
 * that assigns the object to a global (ATLAS_MANIFESTS, ATLAS_CELLS, ATLAS_LAYOUTS); we load those
 * with <script> tags and define each level's tile source inline instead of fetching its .dzi.
 */
(function (ns) {
  "use strict";

  var scripts = {};

  /** Load a script once; resolves when it has run, rejects with the file name if it is missing. */
  function loadScript(src) {
    if (!scripts[src]) {
      scripts[src] = new Promise(function (resolve, reject) {
        var tag = document.createElement("script");
        tag.src = src;
        tag.onload = function () { resolve(); };
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

  /** Manifest, every level's cells and the layout subsample of one ATLAS_INDEX entry. */
  function loadAtlas(entry) {
    var base = entry.path;
    return loadScript(base + "manifest.js").then(function () {
      var manifest = (window.ATLAS_MANIFESTS || {})[entry.id];
      if (!manifest) throw new Error(base + "manifest.js does not define ATLAS_MANIFESTS['" + entry.id + "']");
      var cellScripts = manifest.levels.map(function (lv) { return loadScript(base + lv.cells_js); });
      var layout = manifest.layout
        ? loadScript(base + manifest.layout).then(function () {
            return (window.ATLAS_LAYOUTS || {})[entry.id] || null;
          }, function (err) { console.warn(err.message); return null; })
        : Promise.resolve(null);
      return Promise.all([Promise.all(cellScripts), layout]).then(function (done) {
        var levels = manifest.levels.map(function (lv) {
          var cells = (window.ATLAS_CELLS || {})[entry.id + "/" + lv.n] || [];
          return Object.assign({}, lv, { cells: cells, byPosition: indexCells(cells, lv.n) });
        });
        return { entry: entry, base: base, manifest: manifest, levels: levels, layout: done[1] };
      });
    });
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

  /** The index of class names seen in a level's cells (for the mini-map legend). */
  function classNames(levels) {
    var names = new Map();
    levels.forEach(function (lv) {
      lv.cells.forEach(function (cell) {
        (cell.classes || []).forEach(function (c) { names.set(c.index, c.name); });
      });
    });
    return names;
  }

  ns.data = { loadScript: loadScript, loadAtlas: loadAtlas, tileSource: tileSource, classNames: classNames };
})(window.AtlasViewerParts = window.AtlasViewerParts || {});

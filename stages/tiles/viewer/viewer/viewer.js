/* The activation-atlas viewer: wires the exported data (data.js), level switching (levels.js), the
 * tooltip and panel (cell_info.js) and the mini-map (minimap.js) to one OpenSeadragon viewer.
 * Exposes window.atlasViewer, a small read-only hook the browser tests use.
 */
(function (parts) {
  "use strict";

  var $ = function (id) { return document.getElementById(id); };
  var state = { atlas: null, chosen: 0, hovered: null, tilesLoaded: 0, opened: false, error: null, loading: null, selected: null };
  var viewer = null, minimap = null;

  function setStatus(text, isError) {
    var status = $("status");
    status.textContent = text || "";
    status.classList.toggle("error", Boolean(isError));
    if (isError) state.error = text;
  }

  /** On-screen width of the whole world (one atlas side), in CSS pixels. */
  function worldPx() {
    return viewer.viewport.deltaPixelsFromPoints(new OpenSeadragon.Point(1, 0), true).x;
  }

  /** Pick the level for the current zoom, cross-fade, update badge and mini-map. */
  function updateLevels() {
    if (!state.atlas || !state.opened) return;
    var levels = state.atlas.levels;
    if (viewer.world.getItemCount() !== levels.length) return;
    var now = worldPx();
    var home = now * viewer.viewport.getHomeZoom() / viewer.viewport.getZoom(true);
    var pick = parts.levels.levelOpacities(levels, now, home);
    pick.opacity.forEach(function (op, k) {
      var item = viewer.world.getItemAt(k);
      if (item.getOpacity() !== op) item.setOpacity(op);
    });
    if (pick.chosen !== state.chosen) {
      state.chosen = pick.chosen;
      state.hovered = null;
      $("tooltip").hidden = true;
    }
    outlineCell(state.hovered); // follows the cell while the view pans/zooms
    var lv = levels[state.chosen];
    var next = levels[state.chosen + 1];
    $("level-badge").textContent = lv.n + "\u00d7" + lv.n + " cells" + (next ? " \u00b7 zoom in for " + next.n + "\u00d7" + next.n : "");
    minimap.draw(viewer.viewport.getBounds(true));
  }

  /** Let the user zoom to 3 screen px per pixel of the finest level, and in any case far enough
   * past the home view to reach every level (a tiny export's finest canvas may be smaller than
   * the screen, which would otherwise forbid zooming in at all). */
  function setZoomLimits() {
    var levels = state.atlas.levels, finest = levels[levels.length - 1];
    var vp = viewer.viewport;
    var native = finest.canvas_px * 3 / vp.getContainerSize().x;
    var reveal = vp.getHomeZoom() * 4 * finest.n / levels[0].n;
    vp.maxZoomLevel = Math.max(native, reveal);
  }

  function showAxes(axes) {
    [["axis-x", axes && axes.x], ["axis-y", axes && axes.y]].forEach(function (pair) {
      $(pair[0]).textContent = pair[1] || "";
      $(pair[0]).hidden = !pair[1];
    });
  }

  function currentLevel() {
    return state.atlas ? state.atlas.levels[state.chosen] : null;
  }

  /** The cell under a pointer event on the atlas, in the level shown now. */
  function cellUnder(clientX, clientY) {
    var level = currentLevel();
    if (!level || !state.opened) return null;
    var rect = viewer.container.getBoundingClientRect();
    var p = viewer.viewport.pointFromPixel(new OpenSeadragon.Point(clientX - rect.left, clientY - rect.top), true);
    return parts.levels.cellAt(level, level.byPosition, p.x, p.y);
  }

  /** Outline the hovered cell (null: hide), in container pixels from its world bounds. */
  function outlineCell(cell) {
    var box = $("hover-box");
    state.hovered = cell;
    if (!cell) { box.hidden = true; return; }
    var b = cell.bounds;
    var p0 = viewer.viewport.pixelFromPoint(new OpenSeadragon.Point(b[0], b[1]), true);
    var p1 = viewer.viewport.pixelFromPoint(new OpenSeadragon.Point(b[2], b[3]), true);
    box.style.left = p0.x + "px";
    box.style.top = p0.y + "px";
    box.style.width = (p1.x - p0.x) + "px";
    box.style.height = (p1.y - p0.y) + "px";
    box.hidden = false;
  }

  function onPointerMove(ev) {
    var cell = cellUnder(ev.clientX, ev.clientY);
    var tooltip = $("tooltip");
    outlineCell(cell);
    if (!cell) { tooltip.hidden = true; return; }
    parts.cellInfo.showTooltip(tooltip, cell, currentLevel().n, ev.clientX, ev.clientY);
  }

  function onCanvasClick(ev) {
    if (!ev.quick) return; // a drag, not a click
    var rect = viewer.container.getBoundingClientRect();
    var cell = cellUnder(ev.position.x + rect.left, ev.position.y + rect.top);
    state.selected = cell ? { n: currentLevel().n, cell: cell.cell } : null;
    parts.cellInfo.showPanel($("cell-info"), state.atlas.base, currentLevel(), cell);
  }

  /** Open one atlas of ATLAS_INDEX: all its levels as tiled images over the same world rect. */
  function selectAtlas(id) {
    var entry = (window.ATLAS_INDEX.atlases || []).filter(function (a) { return a.id === id; })[0];
    if (!entry) { setStatus("no atlas '" + id + "' in atlases.js", true); return Promise.resolve(); }
    $("picker").value = id;
    setStatus("loading " + entry.title + "\u2026");
    var request = state.request = (state.request || 0) + 1;
    state.loading = parts.data.loadAtlas(entry).then(function (atlas) {
      if (request !== state.request) return; // the user picked another atlas meanwhile
      state.atlas = atlas;
      state.opened = false;
      state.chosen = 0;
      state.selected = null;
      $("title").textContent = atlas.manifest.title || entry.title;
      var layer = (window.ATLAS_INDEX.model || {}).layer;
      $("model").hidden = !layer || $("title").textContent.indexOf(layer) >= 0; // no repeats
      showAxes(atlas.manifest.axes);
      $("tooltip").hidden = true;
      outlineCell(null);
      parts.cellInfo.showPanel($("cell-info"), atlas.base, atlas.levels[0], null);
      minimap.setLayout(atlas.layout, parts.data.classNames(atlas.levels));
      viewer.open(atlas.levels.map(function (lv, k) {
        return { tileSource: parts.data.tileSource(atlas.base, lv), x: 0, y: 0, width: 1, opacity: k === 0 ? 1 : 0 };
      }));
      if (window.location.hash !== "#" + encodeURIComponent(id)) {
        window.history.replaceState(null, "", "#" + encodeURIComponent(id));
      }
      setStatus("");
    }).catch(function (err) { setStatus(err.message, true); });
    return state.loading;
  }

  function fillPicker(atlases) {
    var picker = $("picker");
    var groups = { main: "main atlas", "class": "class atlases", compare: "class comparisons" };
    Object.keys(groups).forEach(function (kind) {
      var items = atlases.filter(function (a) { return a.kind === kind; });
      if (!items.length) return;
      var group = document.createElement("optgroup");
      group.label = groups[kind];
      items.forEach(function (a) { group.appendChild(new Option(a.title || a.id, a.id)); });
      picker.appendChild(group);
    });
    picker.disabled = atlases.length < 2;
    picker.addEventListener("change", function () { selectAtlas(picker.value); });
  }

  function createViewer() {
    viewer = OpenSeadragon({
      element: $("atlas"),
      prefixUrl: "viewer/openseadragon/images/",
      drawer: "canvas", // the WebGL drawer cannot use file:// images (tainted textures)
      showNavigator: false, // the layout mini-map plays that role
      gestureSettingsMouse: { clickToZoom: false }, // a click selects a cell
      visibilityRatio: 0.3,
      minZoomImageRatio: 0.6,
      zoomPerScroll: 1.5,
      blendTime: 0.15,
      animationTime: 0.8,
    });
    viewer.addHandler("open", function () { state.opened = true; setZoomLimits(); updateLevels(); });
    viewer.addHandler("animation", updateLevels);
    viewer.addHandler("update-viewport", updateLevels);
    viewer.addHandler("resize", updateLevels);
    viewer.addHandler("tile-loaded", function () { state.tilesLoaded += 1; });
    viewer.addHandler("open-failed", function (ev) { setStatus("could not open tiles: " + ev.message, true); });
    viewer.addHandler("canvas-click", onCanvasClick);
    viewer.container.addEventListener("mousemove", onPointerMove);
    viewer.container.addEventListener("mouseleave", function () { $("tooltip").hidden = true; outlineCell(null); });
    var box = document.createElement("div");
    box.id = "hover-box";
    box.hidden = true;
    viewer.container.appendChild(box);
    minimap = new parts.Minimap($("minimap"), $("legend"), function (x, y) {
      viewer.viewport.panTo(new OpenSeadragon.Point(x, y));
    });
  }

  function start() {
    if (!window.ATLAS_INDEX || !window.ATLAS_INDEX.atlases || !window.ATLAS_INDEX.atlases.length) {
      setStatus("atlases.js is missing or lists no atlas: open the index.html of a folder written by `atlas tiles`", true);
      return;
    }
    var model = window.ATLAS_INDEX.model || {};
    $("model").textContent = model.name ? model.name + " \u00b7 " + model.layer : "";
    createViewer();
    fillPicker(window.ATLAS_INDEX.atlases);
    var wanted = decodeURIComponent(window.location.hash.slice(1));
    var ids = window.ATLAS_INDEX.atlases.map(function (a) { return a.id; });
    selectAtlas(ids.indexOf(wanted) >= 0 ? wanted : ids[0]);
  }

  /** Test hook (tests/test_viewer_browser.py): read-only views of the viewer's state. */
  window.atlasViewer = {
    ready: function () { return state.opened && !!viewer && viewer.world.getItemCount() === (state.atlas ? state.atlas.levels.length : -1); },
    atlasId: function () { return state.atlas ? state.atlas.entry.id : null; },
    atlases: function () { return (window.ATLAS_INDEX && window.ATLAS_INDEX.atlases || []).map(function (a) { return a.id; }); },
    levels: function () { return state.atlas ? state.atlas.levels.map(function (lv) { return lv.n; }) : []; },
    currentLevel: function () { var lv = currentLevel(); return lv ? lv.n : null; },
    tilesLoaded: function () { return state.tilesLoaded; },
    levelFullyLoaded: function () { return !!viewer && state.opened && viewer.world.getItemAt(state.chosen).getFullyLoaded(); },
    selected: function () { return state.selected; },
    error: function () { return state.error; },
    /** Client (CSS pixel) coordinates of world point (x, y), e.g. a cell's centre from its bounds. */
    worldToClient: function (x, y) {
      var rect = viewer.container.getBoundingClientRect();
      var p = viewer.viewport.pixelFromPoint(new OpenSeadragon.Point(x, y), true);
      return { x: p.x + rect.left, y: p.y + rect.top };
    },
    selectAtlas: selectAtlas,
  };

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})(window.AtlasViewerParts);

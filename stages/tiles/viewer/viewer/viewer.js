/* The activation-atlas viewer: wires the exported data (data.js), level switching (levels.js), the
 * tooltip and panel (cell_info.js), the mini-map (minimap.js), the class highlight (highlight.js,
 * search.js), region labels (labels.js) and the URL state (hash.js) to one OpenSeadragon viewer.
 * Exposes window.atlasViewer, a small read-only hook the browser tests and bench/viewer.py use.
 */
(function (parts) {
  "use strict";

  var $ = function (id) { return document.getElementById(id); };
  var state = {
    atlas: null, chosen: 0, opacity: [], hovered: null, tilesLoaded: 0, opened: false, error: null, loading: null,
    selected: null, highlight: null, labelsShown: [], restore: null, hashTimer: null, applying: false,
    perf: { hover: [], draw: [] },
    tileUrls: [], // every tile loaded (bench/viewer.py sums their bytes; file:// has no resource timing)
    marks: {}, // performance.now() when the first atlas opened, got its cells, drew all its tiles
  };
  var viewer = null, minimap = null, overlay = null, search = null;
  var KEEP_TIMINGS = 500;

  function setStatus(text, isError) {
    var status = $("status");
    status.textContent = text || "";
    status.title = text || ""; // the whole message when the header cuts it short
    status.classList.toggle("error", Boolean(isError));
    if (isError) state.error = text;
  }

  /** Record how long `fn` took (ms) under perf[name]; the bench reads these. */
  function timed(name, fn) {
    return function () {
      var t0 = performance.now();
      var out = fn.apply(this, arguments);
      var list = state.perf[name];
      list.push(performance.now() - t0);
      if (list.length > KEEP_TIMINGS) list.shift();
      return out;
    };
  }

  /** On-screen width of the whole world (one atlas side), in CSS pixels. */
  function worldPx() {
    return viewer.viewport.deltaPixelsFromPoints(new OpenSeadragon.Point(1, 0), true).x;
  }

  function homeWorldPx(now) {
    return now * viewer.viewport.getHomeZoom() / viewer.viewport.getZoom(true);
  }

  function currentLevel() {
    return state.atlas ? state.atlas.levels[state.chosen] : null;
  }

  /** Number of coarse levels that carry region labels: the coarser half (at least one). */
  function labelLevels() {
    return Math.max(1, Math.floor(state.atlas.levels.length / 2));
  }

  // ------------------------------------------------------------------ levels and the overlay
  /** Pick the level for the current zoom, cross-fade, load what it needs, redraw the overlay. */
  function updateLevels() {
    if (!state.atlas || !state.opened) return;
    var levels = state.atlas.levels;
    if (viewer.world.getItemCount() !== levels.length) return;
    var now = worldPx();
    var pick = parts.levels.levelOpacities(levels, now, homeWorldPx(now));
    pick.opacity.forEach(function (op, k) {
      var item = viewer.world.getItemAt(k);
      if (item.getOpacity() !== op) item.setOpacity(op);
      if (op > 0) needLevel(k);
    });
    state.opacity = pick.opacity;
    if (pick.chosen !== state.chosen) {
      state.chosen = pick.chosen;
      state.hovered = null;
      $("tooltip").hidden = true;
      updateLegend();
    }
    outlineCell(state.hovered); // follows the cell while the view pans/zooms
    var lv = levels[state.chosen];
    var next = levels[state.chosen + 1];
    $("level-badge").textContent = lv.n + "\u00d7" + lv.n + " cells" + (next ? " \u00b7 zoom in for " + next.n + "\u00d7" + next.n : "");
    minimap.draw(viewer.viewport.getBounds(true));
    drawOverlay();
    scheduleHash();
  }

  /** Start loading level k's cells (and, with a highlight, its values) if not done yet. */
  function needLevel(k) {
    var atlas = state.atlas, level = atlas.levels[k];
    if (!level.cells && !level.loading) {
      parts.data.loadLevel(atlas, level).then(function () {
        if (atlas !== state.atlas) return;
        if (state.marks.cells === undefined) state.marks.cells = performance.now();
        level.regions = null;
        drawOverlay();
      }, function (err) { setStatus(err.message, true); });
    }
    if (state.highlight) needHighlight(level);
  }

  function needHighlight(level) {
    var atlas = state.atlas, hl = state.highlight;
    var key = level.n + "/" + hl.kind + "/" + hl.index;
    if (level.hlKey === key) return;
    level.hlKey = key;
    level.hl = null;
    parts.data.loadHighlight(atlas, level, hl.kind, hl.index).then(function (values) {
      if (atlas !== state.atlas || level.hlKey !== key) return;
      level.hl = values;
      if (level === currentLevel()) updateLegend();
      drawOverlay();
    }, function (err) { setStatus(err.message, true); });
  }

  /** The overlay canvas's size follows the atlas container (device pixels). */
  function sizeOverlay() {
    var c = viewer.container, dpr = window.devicePixelRatio || 1;
    var w = Math.round(c.clientWidth * dpr), h = Math.round(c.clientHeight * dpr);
    if (overlay.width !== w || overlay.height !== h) {
      overlay.width = w;
      overlay.height = h;
      overlay.style.width = c.clientWidth + "px";
      overlay.style.height = c.clientHeight + "px";
    }
  }

  /** World -> overlay pixel affine map [ax, bx, ay, by] (no rotation). */
  function worldToOverlay() {
    var dpr = window.devicePixelRatio || 1;
    var p0 = viewer.viewport.pixelFromPoint(new OpenSeadragon.Point(0, 0), true);
    var p1 = viewer.viewport.pixelFromPoint(new OpenSeadragon.Point(1, 1), true);
    return [(p1.x - p0.x) * dpr, p0.x * dpr, (p1.y - p0.y) * dpr, p0.y * dpr];
  }

  /** Tint (highlight), region labels and the selection outline, for the current viewport. */
  var drawOverlay = timed("draw", function () {
    if (!overlay || !state.atlas || !state.opened) return;
    sizeOverlay();
    var ctx = overlay.getContext("2d"), dpr = window.devicePixelRatio || 1;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, overlay.width, overlay.height);
    var levels = state.atlas.levels, toPx = worldToOverlay();
    var bounds = viewer.viewport.getBounds(true);
    if (state.highlight) {
      [state.chosen, state.chosen + 1].forEach(function (k) {
        var level = levels[k], alpha = state.opacity[k] || 0;
        if (!level || alpha <= 0 || !level.hl || !level.byPosition) return;
        parts.highlight.drawTint(ctx, level, level.hl.values, level.hl.max, toPx,
                                 parts.levels.visibleRange(level.n, bounds), alpha);
      });
    }
    state.labelsShown = [];
    if ($("labels-toggle").checked && state.chosen < labelLevels()) {
      var level = levels[state.chosen];
      if (level.cells) {
        if (!level.regions) level.regions = parts.labels.regions(level.cells, level.n);
        var next = state.chosen + 1 >= labelLevels() ? (state.opacity[state.chosen + 1] || 0) : 0;
        ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
        state.labelsShown = parts.labels.place(level.regions, function (x, y) {
          return { x: (toPx[0] * x + toPx[1]) / dpr, y: (toPx[2] * y + toPx[3]) / dpr };
        }, parts.labels.measurer(ctx), { width: overlay.width / dpr, height: overlay.height / dpr });
        parts.labels.draw(ctx, state.labelsShown, 1 - next);
        ctx.setTransform(1, 0, 0, 1, 0, 0);
      }
    }
    var sel = selectedCell();
    if (sel) {
      var b = sel.cell.bounds;
      ctx.lineWidth = 3 * dpr;
      ctx.strokeStyle = "#1f6fd1";
      ctx.strokeRect(toPx[0] * b[0] + toPx[1], toPx[2] * b[1] + toPx[3], toPx[0] * (b[2] - b[0]), toPx[2] * (b[3] - b[1]));
    }
  });

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

  // ------------------------------------------------------------------ hover, click, selection
  /** The cell under a pointer position on the atlas, in the level shown now. */
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

  /** The highlight's value for `cell` of `level` ({kind, name, value}) or null. */
  function highlightOf(level, cell) {
    if (!state.highlight) return null;
    var v = level.hl ? level.hl.values[cell.cell] : undefined; // undefined: still loading
    return { kind: state.highlight.kind, name: state.highlight.name, value: v };
  }

  var onPointerMove = timed("hover", function (ev) {
    var cell = cellUnder(ev.clientX, ev.clientY);
    var tooltip = $("tooltip");
    outlineCell(cell);
    if (!cell) { tooltip.hidden = true; return; }
    parts.cellInfo.showTooltip(tooltip, cell, currentLevel().n, ev.clientX, ev.clientY,
                               highlightOf(currentLevel(), cell));
  });

  /** {level, cell} of the selection when its level's cells are loaded, else null. */
  function selectedCell() {
    if (!state.selected || !state.atlas) return null;
    var k = parts.levels.levelIndex(state.atlas.levels, state.selected.n);
    var level = state.atlas.levels[k];
    if (!level || !level.cells) return null;
    var cell = level.cells[state.selected.cell];
    return cell ? { level: level, cell: cell } : null;
  }

  /** Select cell number `number` of level `n` (null: clear); `push` adds a history entry. */
  function select(n, number, push) {
    var atlas = state.atlas;
    if (n === null || number === null) {
      state.selected = null;
      parts.cellInfo.showPanel($("cell-info"), atlas.base, currentLevel(), null);
      $("save-cell").disabled = true;
      drawOverlay();
      writeHash(push);
      return Promise.resolve(null);
    }
    var k = parts.levels.levelIndex(atlas.levels, n);
    if (k < 0) { setStatus("this atlas has no level " + n, true); return Promise.resolve(null); }
    state.selected = { n: n, cell: number };
    return parts.data.loadLevel(atlas, atlas.levels[k]).then(function (level) {
      if (atlas !== state.atlas || !state.selected || state.selected.n !== n || state.selected.cell !== number) return null;
      var cell = level.cells[number];
      if (!cell) { state.selected = null; setStatus("level " + n + " has no cell " + number, true); return null; }
      parts.cellInfo.showPanel($("cell-info"), atlas.base, level, cell);
      $("save-cell").disabled = false;
      drawOverlay();
      writeHash(push);
      return cell;
    });
  }

  function onCanvasClick(ev) {
    if (!ev.quick) return; // a drag, not a click
    var rect = viewer.container.getBoundingClientRect();
    var cell = cellUnder(ev.position.x + rect.left, ev.position.y + rect.top);
    if (cell) select(currentLevel().n, cell.cell, true);
    else if (state.selected) select(null, null, true);
  }

  /** Pan so that world rectangle b = [x0, y0, x1, y1] is inside the view (with a margin). */
  function keepInView(b) {
    var v = viewer.viewport.getBounds(true), m = 0.1 * v.width;
    var cx = v.x + v.width / 2, cy = v.y + v.height / 2;
    if (b[0] < v.x) cx -= v.x - b[0] + m;
    else if (b[2] > v.x + v.width) cx += b[2] - v.x - v.width + m;
    if (b[1] < v.y) cy -= v.y - b[1] + m;
    else if (b[3] > v.y + v.height) cy += b[3] - v.y - v.height + m;
    if (cx !== v.x + v.width / 2 || cy !== v.y + v.height / 2) viewer.viewport.panTo(new OpenSeadragon.Point(cx, cy));
  }

  /** Arrow keys: the neighbouring kept cell of the level shown (from the selection, or from the
   * cell nearest the view's centre when nothing is selected there). */
  function moveSelection(di, dj) {
    var level = currentLevel();
    if (!level || !level.byPosition) return;
    var from = null, sel = selectedCell();
    if (sel) {
      var b = sel.cell.bounds;
      from = parts.levels.cellAt(level, level.byPosition, (b[0] + b[2]) / 2, (b[1] + b[3]) / 2);
      if (!from) from = { i: Math.floor((b[0] + b[2]) / 2 * level.n), j: Math.floor((b[1] + b[3]) / 2 * level.n), virtual: true };
    }
    var target;
    if (!from) {
      var c = viewer.viewport.getCenter(true), best = Infinity;
      level.cells.forEach(function (cell) {
        var d = Math.pow((cell.i + 0.5) / level.n - c.x, 2) + Math.pow((cell.j + 0.5) / level.n - c.y, 2);
        if (d < best) { best = d; target = cell; }
      });
    } else if (from.virtual || (sel && sel.level !== level)) {
      target = from.virtual ? parts.levels.stepCell(level, level.byPosition, from.i, from.j, di, dj) : from;
    } else {
      target = parts.levels.stepCell(level, level.byPosition, from.i, from.j, di, dj);
    }
    if (!target) return;
    select(level.n, target.cell, true);
    keepInView(target.bounds);
  }

  function zoomBy(factor) {
    viewer.viewport.zoomBy(factor);
    viewer.viewport.applyConstraints();
  }

  function onKeyDown(ev) {
    var tag = (ev.target && ev.target.tagName) || "";
    if (tag === "INPUT" || tag === "SELECT" || tag === "TEXTAREA" || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    if (!state.atlas || !state.opened) return;
    var moves = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };
    if (moves[ev.key]) {
      ev.preventDefault();
      moveSelection(moves[ev.key][0], moves[ev.key][1]);
    } else if (ev.key === "+" || ev.key === "=") {
      ev.preventDefault();
      zoomBy(1.5);
    } else if (ev.key === "-" || ev.key === "_") {
      ev.preventDefault();
      zoomBy(1 / 1.5);
    } else if (ev.key === "Escape") {
      if (state.selected) select(null, null, true);
      else if (state.highlight) setHighlight(null, true);
    }
  }

  // ------------------------------------------------------------------ highlight
  /** Highlight {kind, index, name} (null: none) on every level; `push` adds a history entry. */
  function setHighlight(hl, push) {
    state.highlight = hl ? { kind: hl.kind, index: hl.index, name: hl.name } : null;
    $("search").value = hl ? hl.name : "";
    $("search-clear").hidden = !hl;
    state.atlas.levels.forEach(function (level, k) {
      level.hlKey = null;
      level.hl = null;
      if (hl && (state.opacity[k] || 0) > 0) needHighlight(level);
    });
    updateLegend();
    drawOverlay();
    writeHash(push);
  }

  /** A highlight from the URL ({kind, index}): its name comes from the highlight index. */
  function restoreHighlight(hl) {
    if (!hl) { if (state.highlight) setHighlight(null, false); return Promise.resolve(); }
    return parts.data.loadHighlightIndex(state.atlas).then(function (index) {
      if (!index) { setStatus("this atlas has no highlight data", true); return; }
      var name = hl.kind === "class" ? index.classes[hl.index]
        : ((index.labels || []).filter(function (l) { return l.index === hl.index; })[0] || {}).name;
      if (name === undefined) { setStatus("no " + hl.kind + " " + hl.index + " in this atlas", true); return; }
      setHighlight({ kind: hl.kind, index: hl.index, name: name }, false);
    });
  }

  function updateLegend() {
    var level = currentLevel();
    var hl = state.highlight;
    parts.highlight.showLegend($("hl-legend"), hl, level && level.hl ? level.hl.max : 0,
                               level && level.hl ? level.hl.cells : 0, level ? level.n : 0,
                               function (v) { return hl && hl.kind === "label" ? Math.round(100 * v) + "%" : parts.cellInfo.fmt(v, 3); });
  }

  function searchEntries() {
    if (!state.atlas) return Promise.resolve([]);
    var atlas = state.atlas;
    return parts.data.loadHighlightIndex(atlas).then(function (index) {
      if (!index) return [];
      if (!atlas.searchEntries) atlas.searchEntries = parts.search.entries(index);
      return atlas.searchEntries;
    });
  }

  /** Whether an entry has support at the level shown (sorted first, unsupported greyed). */
  function supportedNow(entry) {
    var index = state.atlas && state.atlas.highlightIndex, level = currentLevel();
    var sets = index && level && index.levelSets[String(level.n)];
    return Boolean(sets && sets[entry.kind] && sets[entry.kind].has(entry.index));
  }

  // ------------------------------------------------------------------ URL state and history
  function viewState() {
    if (!state.atlas) return null;
    var out = { atlas: state.atlas.entry.id, level: null, view: null, cell: state.selected, hl: null };
    if (state.opened) {
      var b = viewer.viewport.getBounds(true);
      out.level = currentLevel().n;
      out.view = { x: b.x + b.width / 2, y: b.y + b.height / 2, width: b.width };
    }
    if (state.highlight) out.hl = { kind: state.highlight.kind, index: state.highlight.index };
    return out;
  }

  /** Put the view in the hash: a new history entry (`push`, for selections) or in place. */
  function writeHash(push) {
    if (state.applying || !state.atlas) return;
    clearTimeout(state.hashTimer);
    state.hashTimer = null;
    var hash = parts.hash.format(viewState());
    if (hash === window.location.hash) return;
    if (push) window.history.pushState(null, "", hash);
    else window.history.replaceState(null, "", hash);
  }

  /** Viewport changes rewrite the current entry once the view settles (no entry per frame). */
  function scheduleHash() {
    if (state.applying) return;
    clearTimeout(state.hashTimer);
    state.hashTimer = setTimeout(function () { state.hashTimer = null; writeHash(false); }, 250);
  }

  /** Set the viewport from a parsed hash's view, then make sure its level is the one shown. */
  function restoreView(view, levelN) {
    var vp = viewer.viewport, cw = vp.getContainerSize().x;
    if (view) {
      vp.zoomTo(1 / view.width, null, true);
      vp.panTo(new OpenSeadragon.Point(view.x, view.y), true);
    }
    var levels = state.atlas.levels, k = levelN === null ? -1 : parts.levels.levelIndex(levels, levelN);
    if (k < 0) return;
    var now = worldPx(), home = homeWorldPx(now);
    if (parts.levels.chooseLevel(levels, now, home) === k) return;
    // another window size: zoom (about the same centre) to where level k is shown, 20% past its switch
    var target = 1.2 * parts.levels.minCellPx(levels, levels[k], home) * levels[k].n;
    var centre = vp.getCenter(true);
    vp.zoomTo(target / cw, centre, true);
    vp.panTo(centre, true);
  }

  /** Apply a parsed hash to the open atlas: view, level, selection, highlight; then write the
   * hash back in place, or as a new history entry with `push` (another atlas picked). */
  function applyState(s, push) {
    state.applying = true;
    try {
      restoreView(s.view, s.level);
      updateLevels();
      var done = [restoreHighlight(s.hl)];
      if (s.cell) done.push(select(s.cell.n, s.cell.cell, false));
      else if (state.selected) done.push(select(null, null, false));
    } finally {
      state.applying = false;
    }
    return Promise.all(done).then(function () { writeHash(push); });
  }

  function onPopState() {
    var s = parts.hash.parse(window.location.hash);
    if (s.atlas && (!state.atlas || s.atlas !== state.atlas.entry.id)) selectAtlas(s.atlas, s, false);
    else if (state.atlas && state.opened) applyState(s);
  }

  // ------------------------------------------------------------------ downloads
  function download(name, blob) {
    var a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = name;
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(function () { URL.revokeObjectURL(a.href); }, 10000);
  }

  function fileStem() {
    return "atlas-" + state.atlas.entry.id.replace(/[^A-Za-z0-9_-]+/g, "_");
  }

  /** The view as drawn (tiles + tint + labels + selection) as a PNG Blob (a Promise). */
  function viewPng() {
    var src = viewer.drawer.canvas;
    var out = document.createElement("canvas");
    out.width = src.width;
    out.height = src.height;
    var ctx = out.getContext("2d");
    ctx.fillStyle = "#ffffff";
    ctx.fillRect(0, 0, out.width, out.height);
    ctx.drawImage(src, 0, 0);
    ctx.drawImage(overlay, 0, 0, out.width, out.height);
    return new Promise(function (resolve, reject) {
      try {
        out.toBlob(function (blob) { blob ? resolve(blob) : reject(new Error("the browser made no PNG")); }, "image/png");
      } catch (err) { reject(err); }
    });
  }

  var FILE_NOTE = "this browser does not let a page opened from file:// read its images' pixels; " +
                  "open it with `atlas serve` to save pictures";

  function saveView() {
    return viewPng().then(function (blob) {
      download(fileStem() + "-view.png", blob);
      setStatus("saved the view as " + fileStem() + "-view.png");
      return blob.size;
    }, function (err) {
      setStatus(err.name === "SecurityError" ? "could not save the view: " + FILE_NOTE : "could not save the view: " + err.message, true);
      state.error = null; // a refused download is not a broken page
      return null;
    });
  }

  /** The selected cell's data + icon (PNG data URL, null where the pixels cannot be read). */
  function cellRecord() {
    var sel = selectedCell();
    if (!sel) return Promise.resolve(null);
    var hl = highlightOf(sel.level, sel.cell);
    var record = {
      atlas: state.atlas.entry.id, title: state.atlas.manifest.title, model: (window.ATLAS_INDEX || {}).model || null,
      level: sel.level.n, cell: sel.cell,
      highlight: hl ? { kind: state.highlight.kind, index: state.highlight.index, name: hl.name,
                        value: hl.value > 0 ? hl.value : 0, measure: parts.highlight.measureName(hl.kind) } : null,
      link: window.location.href, icon: null, icon_px: null,
    };
    return parts.cellInfo.iconDataUrl(state.atlas.base, sel.level, sel.cell).then(function (url) {
      record.icon = url;
      var b = sel.cell.icon_bounds || sel.cell.bounds;
      record.icon_px = Math.round((b[2] - b[0]) * sel.level.canvas_px);
      return record;
    }, function (err) {
      record.icon_note = err.name === "SecurityError" ? FILE_NOTE : err.message;
      return record;
    });
  }

  function saveCell() {
    return cellRecord().then(function (record) {
      if (!record) { setStatus("select a cell first (click it, or use the arrow keys)"); return null; }
      var name = fileStem() + "-level" + record.level + "-cell" + record.cell.cell + ".json";
      var blob = new Blob([JSON.stringify(record, null, 1)], { type: "application/json" });
      download(name, blob);
      setStatus("saved " + name + (record.icon ? "" : " (without the icon: " + record.icon_note + ")"));
      return record;
    });
  }

  // ------------------------------------------------------------------ atlases
  /** Open one atlas of ATLAS_INDEX: all its levels as tiled images over the same world rect;
   * `restore` (a parsed hash) is applied once it is open; `push` adds a history entry. */
  function selectAtlas(id, restore, push) {
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
      state.opacity = [];
      state.selected = null;
      state.highlight = null;
      state.restore = restore || { atlas: id, level: null, view: null, cell: null, hl: null };
      state.pushOnOpen = Boolean(push);
      $("title").textContent = atlas.manifest.title || entry.title;
      var layer = (window.ATLAS_INDEX.model || {}).layer;
      $("model").hidden = !layer || $("title").textContent.indexOf(layer) >= 0; // no repeats
      showAxes(atlas.manifest.axes);
      $("tooltip").hidden = true;
      $("search").value = "";
      $("search").disabled = !atlas.manifest.highlight;
      $("search").placeholder = atlas.manifest.highlight ? "highlight a class or label\u2026" : "no highlight data in this atlas";
      $("search-clear").hidden = true;
      $("save-cell").disabled = true;
      updateLegend();
      outlineCell(null);
      parts.cellInfo.showPanel($("cell-info"), atlas.base, atlas.levels[0], null);
      minimap.setLayout(undefined, new Map());
      atlas.layoutLoading.then(function () {
        if (atlas === state.atlas) { minimap.setLayout(atlas.layout, parts.data.classNames(atlas)); updateLevels(); }
      });
      needLevel(0); // the coarsest level's cells load while the tiles open
      viewer.open(atlas.levels.map(function (lv, k) {
        return { tileSource: parts.data.tileSource(atlas.base, lv), x: 0, y: 0, width: 1, opacity: k === 0 ? 1 : 0 };
      }));
      setStatus("");
    }).catch(function (err) { setStatus(err.message, true); });
    return state.loading;
  }

  function onOpen() {
    state.opened = true;
    if (state.marks.open === undefined) {
      state.marks.open = performance.now();
      viewer.world.getItemAt(0).addHandler("fully-loaded-change", function (ev) {
        if (ev.fullyLoaded && state.marks.tiles === undefined) state.marks.tiles = performance.now();
      });
    }
    setZoomLimits();
    var restore = state.restore || {};
    state.restore = null;
    var push = state.pushOnOpen;
    state.pushOnOpen = false;
    applyState(restore, push);
  }

  function fillPicker(atlases) {
    var picker = $("picker");
    var groups = { main: "main atlas", "class": "class atlases", compare: "class comparisons",
                   dataset: "dataset maps", explain: "explained images", experiment: "experiments" };
    Object.keys(groups).forEach(function (kind) {
      var items = atlases.filter(function (a) { return a.kind === kind; });
      if (!items.length) return;
      var group = document.createElement("optgroup");
      group.label = groups[kind];
      items.forEach(function (a) { group.appendChild(new Option(a.title || a.id, a.id)); });
      picker.appendChild(group);
    });
    picker.disabled = atlases.length < 2;
    picker.addEventListener("change", function () {
      var entry = atlases.filter(function (a) { return a.id === picker.value; })[0];
      if (entry && entry.page) { window.location.href = entry.page; return; } // `atlas explain` pages: their own HTML
      selectAtlas(picker.value, null, true);
    });
  }

  function createViewer() {
    viewer = OpenSeadragon({
      element: $("atlas"),
      prefixUrl: "viewer/openseadragon/images/",
      drawer: "canvas", // the WebGL drawer cannot use file:// images (tainted textures)
      showNavigator: false, // the layout mini-map plays that role
      keyboardNavEnabled: false, // the page's own keys: arrows move the selection, +/- zoom, Esc
      gestureSettingsMouse: { clickToZoom: false }, // a click selects a cell
      visibilityRatio: 0.3,
      minZoomImageRatio: 0.6,
      zoomPerScroll: 1.5,
      blendTime: 0.15,
      animationTime: 0.8,
    });
    viewer.addHandler("open", onOpen);
    viewer.addHandler("animation", updateLevels);
    viewer.addHandler("update-viewport", updateLevels);
    viewer.addHandler("resize", updateLevels);
    viewer.addHandler("tile-loaded", function (ev) {
      state.tilesLoaded += 1;
      if (state.tileUrls.length < 20000) state.tileUrls.push(ev.tile.getUrl ? ev.tile.getUrl() : ev.tile.url);
    });
    viewer.addHandler("open-failed", function (ev) { setStatus("could not open tiles: " + ev.message, true); });
    viewer.addHandler("canvas-click", onCanvasClick);
    viewer.container.addEventListener("mousemove", onPointerMove);
    viewer.container.addEventListener("mouseleave", function () { $("tooltip").hidden = true; outlineCell(null); });
    overlay = document.createElement("canvas");
    overlay.id = "overlay";
    viewer.container.appendChild(overlay);
    var box = document.createElement("div");
    box.id = "hover-box";
    box.hidden = true;
    viewer.container.appendChild(box);
    minimap = new parts.Minimap($("minimap"), $("legend"), function (x, y) {
      viewer.viewport.panTo(new OpenSeadragon.Point(x, y));
    });
  }

  function wireControls() {
    search = new parts.search.Search($("search"), $("search-results"), searchEntries, function (entry) {
      setHighlight(entry, true);
    }, supportedNow);
    $("search-clear").addEventListener("click", function () { setHighlight(null, true); });
    $("labels-toggle").addEventListener("change", function () { drawOverlay(); });
    $("save-view").addEventListener("click", saveView);
    $("save-cell").addEventListener("click", saveCell);
    document.addEventListener("keydown", onKeyDown);
    window.addEventListener("popstate", onPopState);
  }

  function start() {
    if (!window.ATLAS_INDEX || !window.ATLAS_INDEX.atlases || !window.ATLAS_INDEX.atlases.length) {
      setStatus("atlases.js is missing or lists no atlas: open the index.html of a folder written by `atlas tiles`", true);
      return;
    }
    var model = window.ATLAS_INDEX.model || {};
    $("model").textContent = model.name ? model.name + " \u00b7 " + model.layer : "";
    createViewer();
    wireControls();
    fillPicker(window.ATLAS_INDEX.atlases);
    var wanted = parts.hash.parse(window.location.hash);
    var ids = window.ATLAS_INDEX.atlases.map(function (a) { return a.id; });
    if (wanted.atlas && ids.indexOf(wanted.atlas) < 0) {
      setStatus("no atlas '" + wanted.atlas + "' in this export; showing " + ids[0]);
      wanted = parts.hash.parse("");
    }
    selectAtlas(wanted.atlas || ids[0], wanted, false);
  }

  function stats(list) {
    if (!list.length) return { n: 0, max: 0, mean: 0, p95: 0 };
    var sorted = list.slice().sort(function (a, b) { return a - b; }), sum = 0;
    sorted.forEach(function (v) { sum += v; });
    return { n: sorted.length, max: sorted[sorted.length - 1], mean: sum / sorted.length,
             p95: sorted[Math.min(sorted.length - 1, Math.floor(0.95 * sorted.length))] };
  }

  /** Test hook (tests/test_viewer_browser.py, bench/viewer.py): read-only views of the viewer's state. */
  window.atlasViewer = {
    ready: function () { return state.opened && !!viewer && viewer.world.getItemCount() === (state.atlas ? state.atlas.levels.length : -1); },
    atlasId: function () { return state.atlas ? state.atlas.entry.id : null; },
    atlases: function () { return (window.ATLAS_INDEX && window.ATLAS_INDEX.atlases || []).map(function (a) { return a.id; }); },
    levels: function () { return state.atlas ? state.atlas.levels.map(function (lv) { return lv.n; }) : []; },
    /** Levels whose cells.js has been loaded (lazy loading). */
    loadedLevels: function () { return state.atlas ? state.atlas.levels.filter(function (lv) { return lv.cells; }).map(function (lv) { return lv.n; }) : []; },
    /** ms from requesting each loaded level's cells.js to its cells indexed, by level. */
    levelLoads: function () {
      var out = {};
      (state.atlas ? state.atlas.levels : []).forEach(function (lv) { if (lv.cells) out[lv.n] = lv.loadMs; });
      return out;
    },
    currentLevel: function () { var lv = currentLevel(); return lv ? lv.n : null; },
    /** Opacity of every level now (the cross-fade). */
    opacities: function () { return state.opacity.slice(); },
    tilesLoaded: function () { return state.tilesLoaded; },
    tileUrls: function () { return state.tileUrls.slice(); },
    /** Whether the view is still moving (zoom or centre springs not at their targets) or its hash not yet written. */
    animating: function () {
      var vp = viewer && viewer.viewport;
      return !!vp && !(vp.zoomSpring.isAtTargetValue() && vp.centerSpringX.isAtTargetValue() &&
                       vp.centerSpringY.isAtTargetValue());
    },
    settled: function () { return !!viewer && state.opened && !window.atlasViewer.animating() && state.hashTimer === null; },
    levelFullyLoaded: function () { return !!viewer && state.opened && viewer.world.getItemAt(state.chosen).getFullyLoaded(); },
    /** Whether level `n`'s tiled image has drawn tiles (during a fade both have). */
    levelDrawn: function (n) {
      var k = state.atlas ? parts.levels.levelIndex(state.atlas.levels, n) : -1;
      if (k < 0) return false;
      var item = viewer.world.getItemAt(k);
      return item.getOpacity() > 0 && (item.lastDrawn || []).length > 0;
    },
    cellsReady: function () { var lv = currentLevel(); return !!(lv && lv.cells); },
    selected: function () { return state.selected; },
    highlight: function () { return state.highlight; },
    /** The shown highlight's value of cell number `cell` of level `n` (null: not loaded; NaN -> null). */
    highlightValue: function (n, cell) {
      var k = state.atlas ? parts.levels.levelIndex(state.atlas.levels, n) : -1;
      var lv = k >= 0 ? state.atlas.levels[k] : null;
      if (!lv || !lv.hl) return null;
      var v = lv.hl.values[cell];
      return isNaN(v) ? 0 : v;
    },
    highlightReady: function () { var lv = currentLevel(); return !!(state.highlight && lv && lv.hl && lv.byPosition); },
    /** The labels drawn now: [{text, name, index, anchor, x, y, w, h}] (CSS px in the atlas box). */
    labels: function () { return state.labelsShown.map(function (b) { return Object.assign({}, b); }); },
    view: function () { var s = viewState(); return s && s.view; },
    error: function () { return state.error; },
    loadedFiles: function () { return parts.data.loadedFiles(); },
    /** Milliseconds of work per hover (tooltip), overlay redraw (tint + labels) and search keystroke. */
    perf: function () { return { hover: stats(state.perf.hover), draw: stats(state.perf.draw), search: stats(search.timings) }; },
    /** performance.now() (ms since navigation) at the first open, cells and fully drawn home level. */
    marks: function () { return Object.assign({}, state.marks); },
    resetPerf: function () { state.perf.hover = []; state.perf.draw = []; search.timings = []; },
    /** Client (CSS pixel) coordinates of world point (x, y), e.g. a cell's centre from its bounds. */
    worldToClient: function (x, y) {
      var rect = viewer.container.getBoundingClientRect();
      var p = viewer.viewport.pixelFromPoint(new OpenSeadragon.Point(x, y), true);
      return { x: p.x + rect.left, y: p.y + rect.top };
    },
    selectAtlas: function (id) { return selectAtlas(id, null, true); },
    /** Show world centre (x, y) with the view `width` world units wide, at once (as a link does). */
    setView: function (x, y, width) { restoreView({ x: x, y: y, width: width }, null); updateLevels(); },
    setHighlight: function (kind, index) { return restoreHighlight(kind === null ? null : { kind: kind, index: index }); },
    cellRecord: cellRecord,
    viewPng: function () { return viewPng().then(function (b) { return b.size; }); },
  };

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})(window.AtlasViewerParts);

/* Two aligned atlases side by side, in sync (aligned.html, written by `atlas align`; docs/viewer.md).
 *
 * Both atlases share one layout frame (one UMAP over both models' rows), so world point (x, y) and
 * cell (i, j) of a level are the same region of the map on both sides. Each side is its own
 * OpenSeadragon viewer built from the main viewer's modules (data.js loads an atlas, levels.js
 * picks and cross-fades the level for a zoom, cell_info.js draws a cell's panel); this file keeps
 * them in sync: the side the user moves leads and the other copies its view every frame (so both
 * show the same level), hover outlines the same cell on both sides, click selects it on both, and
 * the panel shows both cells with their agreement figures from align.js (kNN overlap, same-cell
 * share, top classes). A label is never shown without its credibility: each side's name carries its
 * label ceiling (the share of its labelled cells whose top-5 attributed classes meet the 5 classes its
 * own model most often predicts for the cell's members, and how many cells that is), and the tooltip and
 * the panel say for the cell at hand whether its label meets its members' own predictions.
 * window.alignedViewer is a small read-only hook for tests and benchmarks.
 */
(function (parts) {
  "use strict";

  var $ = function (id) { return document.getElementById(id); };
  var SIDES = ["a", "b"];
  var OTHER = { a: "b", b: "a" };
  var state = { sides: {}, leader: "a", hovered: null, selected: null, error: null, align: null, syncs: 0 };

  function setStatus(text, isError) {
    $("status").textContent = text || "";
    $("status").classList.toggle("error", Boolean(isError));
    if (isError) state.error = text;
  }

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function pct(v) {
    if (typeof v !== "number" || !isFinite(v)) return "n/a";
    return Math.abs(v) < 0.1 ? (100 * v).toFixed(1) + "%" : Math.round(100 * v) + "%";
  }
  function num(v) { return parts.cellInfo.fmt(v, 3); }

  function opened(key) { var s = state.sides[key]; return !!(s && s.opened); }
  function allOpen() { return SIDES.every(opened); }

  function worldPx(side) {
    return side.viewer.viewport.deltaPixelsFromPoints(new OpenSeadragon.Point(1, 0), true).x;
  }

  // ------------------------------------------------------------------ levels (per side, from its own view)
  function updateLevels(side) {
    if (!side.opened) return;
    var levels = side.atlas.levels;
    if (side.viewer.world.getItemCount() !== levels.length) return;
    var now = worldPx(side);
    var home = now * side.viewer.viewport.getHomeZoom() / side.viewer.viewport.getZoom(true);
    var pick = parts.levels.levelOpacities(levels, now, home);
    pick.opacity.forEach(function (op, k) {
      var item = side.viewer.world.getItemAt(k);
      if (item.getOpacity() !== op) item.setOpacity(op);
      if (op > 0 && !levels[k].cells && !levels[k].loading) {
        parts.data.loadLevel(side.atlas, levels[k]).then(function () { drawBoxes(); }, function (err) { setStatus(err.message, true); });
      }
    });
    side.chosen = pick.chosen;
    if (side.key === state.leader) {
      var lv = levels[side.chosen], next = levels[side.chosen + 1];
      $("level-badge").textContent = lv.n + "\u00d7" + lv.n + " cells" + (next ? " \u00b7 zoom in for " + next.n + "\u00d7" + next.n : "");
    }
    drawBoxes();
  }

  // ------------------------------------------------------------------ sync: the leader's view, copied
  function follow(leaderKey) {
    var lead = state.sides[leaderKey], other = state.sides[OTHER[leaderKey]];
    if (!lead || !other || !lead.opened || !other.opened || state.leader !== leaderKey) return;
    var b = lead.viewer.viewport.getBounds(true);
    var o = other.viewer.viewport.getBounds(true);
    var eps = 1e-9 * Math.max(1, b.width);
    if (Math.abs(b.x - o.x) < eps && Math.abs(b.y - o.y) < eps && Math.abs(b.width - o.width) < eps) return;
    other.viewer.viewport.fitBounds(b, true); // immediately: the follower shows the leader's current frame
    state.syncs += 1;
  }

  function lead(key) { state.leader = key; }

  // ------------------------------------------------------------------ cells at a position, boxes, tooltip
  /** {n, i, j} of the level shown under world point (x, y) of `side`, or null outside the map. */
  function positionAt(side, x, y) {
    if (!side.opened || x < 0 || y < 0 || x >= 1 || y >= 1) return null;
    var n = side.atlas.levels[side.chosen].n;
    return { n: n, i: Math.floor(x * n), j: Math.floor(y * n) };
  }

  /** Side `key`'s kept cell at position p ({level, cell} with cell null when that side dropped it). */
  function cellOf(key, p) {
    var side = state.sides[key];
    if (!side || !side.opened || !p) return null;
    var k = parts.levels.levelIndex(side.atlas.levels, p.n);
    var level = side.atlas.levels[k];
    if (!level) return null;
    return { level: level, cell: level.byPosition ? level.byPosition.get(p.j * p.n + p.i) || null : null };
  }

  /** Agreement figures of side `key`'s cell number `cell` at level n (align.js), or null. */
  function agreementOf(key, n, cell) {
    var lv = (state.align.cells || {})[String(n)];
    var arr = lv && lv[key];
    if (!arr || cell === null || cell === undefined) return null;
    return { knn: arr.knn[cell], same: arr.same_cell[cell], partner: arr.partner[cell],
             meets: arr.meets ? arr.meets[cell] : undefined };
  }

  /** Whether a cell's label meets its members' own predictions, in words ("" when align.js does not say). */
  function meetsText(ag) {
    if (!ag || ag.meets === undefined) return "";
    if (ag.meets === null) return "no label to judge";
    return ag.meets ? "label meets its members' own predictions" : "label misses its members' own predictions";
  }

  /** A side's label ceiling in words: "labels meet members' predictions in 68% of 86 cells". */
  function ceilingText(key) {
    var side = ((state.align || {}).sides || {})[key], c = side && side.label_ceiling;
    if (!c || !c.cells) return "";
    return "labels meet members' own predictions in " + pct(c.fraction) + " of " + c.cells + " cells";
  }

  function placeBox(side, box, p) {
    if (!p || !side.opened) { box.hidden = true; return; }
    var vp = side.viewer.viewport;
    var p0 = vp.pixelFromPoint(new OpenSeadragon.Point(p.i / p.n, p.j / p.n), true);
    var p1 = vp.pixelFromPoint(new OpenSeadragon.Point((p.i + 1) / p.n, (p.j + 1) / p.n), true);
    box.style.left = p0.x + "px";
    box.style.top = p0.y + "px";
    box.style.width = (p1.x - p0.x) + "px";
    box.style.height = (p1.y - p0.y) + "px";
    box.hidden = false;
  }

  function drawBoxes() {
    SIDES.forEach(function (key) {
      var side = state.sides[key];
      if (!side) return;
      placeBox(side, side.hoverBox, state.hovered);
      placeBox(side, side.selectBox, state.selected);
    });
  }

  function classLine(cell) {
    var names = (cell.classes || []).slice(0, 3).map(function (c) { return c.name; });
    return names.length ? names.join(", ") : "no attributed classes";
  }

  function showTooltip(p, clientX, clientY) {
    var tip = $("tooltip");
    tip.textContent = "";
    tip.appendChild(el("div", "tt-head", "cell (" + p.i + ", " + p.j + ") of " + p.n + "\u00d7" + p.n));
    SIDES.forEach(function (key) {
      var got = cellOf(key, p), line = el("div", "tt-side " + key);
      line.appendChild(el("b", null, key.toUpperCase() + " "));
      if (!got || !got.cell) line.appendChild(document.createTextNode("no cell here (too few samples)"));
      else {
        var ag = agreementOf(key, p.n, got.cell.cell);
        var judged = meetsText(ag);
        line.appendChild(document.createTextNode(got.cell.count + " samples: " + classLine(got.cell) +
          (judged ? " (" + judged + ")" : "") + (ag ? " \u00b7 kNN overlap " + pct(ag.knn) : "")));
      }
      tip.appendChild(line);
    });
    tip.hidden = false;
    var pad = 16, w = tip.offsetWidth, h = tip.offsetHeight;
    var x = clientX + pad, y = clientY + pad;
    if (x + w > window.innerWidth) x = clientX - pad - w;
    if (y + h > window.innerHeight) y = clientY - pad - h;
    tip.style.left = Math.max(0, x) + "px";
    tip.style.top = Math.max(0, y) + "px";
  }

  function onMove(side, ev) {
    if (!side.opened) return;
    var rect = side.viewer.container.getBoundingClientRect();
    var w = side.viewer.viewport.pointFromPixel(new OpenSeadragon.Point(ev.clientX - rect.left, ev.clientY - rect.top), true);
    var p = positionAt(side, w.x, w.y);
    state.hovered = p;
    drawBoxes();
    if (!p) { $("tooltip").hidden = true; return; }
    showTooltip(p, ev.clientX, ev.clientY);
  }

  // ------------------------------------------------------------------ selection and the panel
  function agreementTable(p) {
    var box = $("agree");
    box.textContent = "";
    box.appendChild(el("h2", null, "cell (" + p.i + ", " + p.j + ") of " + p.n + "\u00d7" + p.n + " on both sides"));
    var got = { a: cellOf("a", p), b: cellOf("b", p) };
    var icons = el("div", "pair-icons");
    SIDES.forEach(function (key) {
      var fig = el("figure", "pair-icon " + key);
      var canvas = el("canvas");
      canvas.width = canvas.height = 128;
      fig.appendChild(canvas);
      fig.appendChild(el("figcaption", null, key.toUpperCase() + (got[key] && got[key].cell ? "" : ": no cell")));
      if (got[key] && got[key].cell) parts.cellInfo.drawIcon(canvas, state.sides[key].atlas.base, got[key].level, got[key].cell);
      icons.appendChild(fig);
    });
    box.appendChild(icons);
    var table = el("table"), head = el("tr");
    ["", "A", "B"].forEach(function (t) { head.appendChild(el("th", null, t)); });
    table.appendChild(head);
    var ag = {};
    SIDES.forEach(function (key) { ag[key] = got[key] && got[key].cell ? agreementOf(key, p.n, got[key].cell.cell) : null; });
    var rows = [
      ["samples", function (k) { return got[k] && got[k].cell ? String(got[k].cell.count) : "\u2014"; }],
      ["kNN overlap", function (k) { return ag[k] ? pct(ag[k].knn) : "\u2014"; }],
      ["same cell in other", function (k) { return ag[k] ? pct(ag[k].same) : "\u2014"; }],
      ["label vs members' predictions", function (k) {
        if (!ag[k] || ag[k].meets === undefined) return "\u2014";
        return ag[k].meets === null ? "no label" : ag[k].meets ? "meets" : "misses";
      }],
      ["top class", function (k) { var c = got[k] && got[k].cell && (got[k].cell.classes || [])[0]; return c ? c.name : "\u2014"; }],
      ["2nd, 3rd", function (k) {
        var cs = got[k] && got[k].cell ? (got[k].cell.classes || []).slice(1, 3) : [];
        return cs.length ? cs.map(function (c) { return c.name; }).join(", ") : "\u2014";
      }],
    ];
    rows.forEach(function (row) {
      var tr = el("tr");
      tr.appendChild(el("td", null, row[0]));
      SIDES.forEach(function (key) { tr.appendChild(el("td", null, row[1](key))); });
      table.appendChild(tr);
    });
    box.appendChild(table);
  }

  function select(p) {
    state.selected = p;
    drawBoxes();
    SIDES.forEach(function (key) {
      var container = $("cell-" + key), side = state.sides[key];
      if (!p) { container.textContent = ""; return; }
      var got = cellOf(key, p);
      container.textContent = "";
      if (!got || !got.cell) {
        container.appendChild(el("h2", null, key.toUpperCase() + ": no cell here"));
        container.appendChild(el("p", "hint", "this side keeps no cell at (" + p.i + ", " + p.j + "): too few samples"));
        return;
      }
      parts.cellInfo.showPanel(container, side.atlas.base, got.level, got.cell);
      var title = container.querySelector("h2");
      if (title) title.textContent = key.toUpperCase() + " \u00b7 " + title.textContent;
    });
    if (p) agreementTable(p);
  }

  function onClick(side, ev) {
    if (!ev.quick) return;
    lead(side.key);
    var w = side.viewer.viewport.pointFromPixel(ev.position, true);
    var p = positionAt(side, w.x, w.y);
    var k = p ? parts.levels.levelIndex(side.atlas.levels, p.n) : -1;
    var loads = p ? SIDES.map(function (key) { return parts.data.loadLevel(state.sides[key].atlas, state.sides[key].atlas.levels[k]); }) : [];
    Promise.all(loads).then(function () { select(p); }, function (err) { setStatus(err.message, true); });
  }

  // ------------------------------------------------------------------ header and summary
  function summary(align) {
    var box = $("summary");
    box.textContent = "";
    box.appendChild(el("h2", null, "what the alignment is worth"));
    var m = align.maps || {};
    var maps = el("div", "maps");
    maps.textContent = "linear maps, R\u00b2 on held-out photos (" + (m.n_test || 0) + " rows): A\u2192B " +
      num((m.a_to_b || {}).r2_test) + ", B\u2192A " + num((m.b_to_a || {}).r2_test) + ". " + align.rows +
      " image locations seen by both; kNN overlap by chance " + pct(align.knn_chance) + ".";
    box.appendChild(maps);
    var credible = el("div", "ceilings");
    credible.textContent = "How far each side's labels track its own model (a cell's top-5 attributed classes meet " +
      "the 5 classes the model most often predicts for its members): " + SIDES.map(function (k) {
        return k.toUpperCase() + " " + (ceilingText(k) || "not measured");
      }).join("; ") + ". Labels of the two sides can only agree as far as both track their models.";
    box.appendChild(credible);
    var table = el("table"), head = el("tr");
    ["level", "cells A/B", "kNN A/B", "same cell", "top-1 =", "top-5 \u2229", "labels meet A/B"].forEach(function (t) { head.appendChild(el("th", null, t)); });
    table.appendChild(head);
    (align.levels || []).forEach(function (lv) {
      var tr = el("tr");
      [lv.n + "\u00d7" + lv.n, lv.cells_a + "/" + lv.cells_b, pct(lv.knn_overlap_a) + "/" + pct(lv.knn_overlap_b),
       pct(lv.same_cell_a) + "/" + pct(lv.same_cell_b), pct(lv.top1_agree), pct(lv.top5_overlap),
       pct(lv.ceiling_a) + "/" + pct(lv.ceiling_b)].forEach(function (t) {
        tr.appendChild(el("td", null, t));
      });
      table.appendChild(tr);
    });
    box.appendChild(table);
  }

  // ------------------------------------------------------------------ opening the two atlases
  function createViewer(key) {
    var viewer = OpenSeadragon({
      element: $("atlas-" + key),
      prefixUrl: "viewer/openseadragon/images/",
      drawer: "canvas", // file:// images cannot be WebGL textures
      showNavigationControl: key === "a",
      showNavigator: false,
      keyboardNavEnabled: false,
      gestureSettingsMouse: { clickToZoom: false },
      visibilityRatio: 0.3,
      minZoomImageRatio: 0.6,
      zoomPerScroll: 1.5,
      blendTime: 0.15,
      animationTime: 0.8,
    });
    var side = { key: key, viewer: viewer, atlas: null, opened: false, chosen: 0 };
    side.hoverBox = el("div", "pane-box");
    side.hoverBox.hidden = true;
    side.selectBox = el("div", "pane-box selected");
    side.selectBox.hidden = true;
    viewer.container.appendChild(side.hoverBox);
    viewer.container.appendChild(side.selectBox);
    ["canvas-press", "canvas-scroll", "canvas-drag"].forEach(function (name) {
      viewer.addHandler(name, function () { lead(key); });
    });
    viewer.container.addEventListener("pointerenter", function () { lead(key); });
    viewer.addHandler("update-viewport", function () { follow(key); updateLevels(side); });
    viewer.addHandler("animation", function () { follow(key); });
    viewer.addHandler("animation-finish", function () { follow(key); updateLevels(side); });
    viewer.addHandler("resize", function () { updateLevels(side); });
    viewer.addHandler("open-failed", function (ev) { setStatus("could not open tiles: " + ev.message, true); });
    viewer.addHandler("canvas-click", function (ev) { onClick(side, ev); });
    viewer.container.addEventListener("mousemove", function (ev) { onMove(side, ev); });
    viewer.container.addEventListener("mouseleave", function () {
      $("tooltip").hidden = true;
      state.hovered = null;
      drawBoxes();
    });
    state.sides[key] = side;
    return side;
  }

  function openSide(key, entry) {
    var side = createViewer(key);
    return parts.data.loadAtlas(entry).then(function (atlas) {
      side.atlas = atlas;
      $("name-" + key).textContent = atlas.manifest.title || entry.title;
      $("ceiling-" + key).textContent = ceilingText(key) ? "\u00b7 " + ceilingText(key) : "";
      return new Promise(function (resolve) {
        side.viewer.addOnceHandler("open", function () {
          var levels = atlas.levels, finest = levels[levels.length - 1], vp = side.viewer.viewport;
          vp.maxZoomLevel = Math.max(finest.canvas_px * 3 / vp.getContainerSize().x, vp.getHomeZoom() * 4 * finest.n / levels[0].n);
          side.opened = true;
          parts.data.loadLevel(atlas, levels[0]).then(function () { updateLevels(side); });
          resolve(side);
        });
        side.viewer.open(atlas.levels.map(function (lv, k) {
          return { tileSource: parts.data.tileSource(atlas.base, lv), x: 0, y: 0, width: 1, opacity: k === 0 ? 1 : 0 };
        }));
      });
    });
  }

  function start() {
    var index = window.ATLAS_INDEX, align = window.ATLAS_ALIGN;
    if (!index || !align) {
      setStatus("atlases.js or align.js is missing: open the aligned.html of a folder written by `atlas align`", true);
      return;
    }
    state.align = align;
    var entries = {};
    (index.atlases || []).forEach(function (a) { entries[a.id] = a; });
    var missing = SIDES.filter(function (k) { return !entries[k]; });
    if (missing.length) { setStatus("atlases.js lists no atlas '" + missing[0] + "'; rerun `atlas align`", true); return; }
    var sides = align.sides || {};
    $("pair").textContent = (sides.a ? sides.a.label : "A") + "  vs  " + (sides.b ? sides.b.label : "B");
    summary(align);
    Promise.all(SIDES.map(function (k) { return openSide(k, entries[k]); })).then(function () {
      lead("a");
      follow("a");
      setStatus("");
    }).catch(function (err) { setStatus(err.message, true); });
  }

  function bounds(key) {
    var s = state.sides[key];
    if (!s || !s.opened) return null;
    var b = s.viewer.viewport.getBounds(true);
    return { x: b.x, y: b.y, width: b.width, height: b.height };
  }

  /** Test hook (tests/test_align_viewer.py, README screenshot): read-only views, plus the moves a user makes. */
  window.alignedViewer = {
    ready: function () { return allOpen() && SIDES.every(function (k) { return !!state.sides[k].atlas.levels[0].cells; }); },
    levels: function () { return allOpen() ? state.sides.a.atlas.levels.map(function (lv) { return lv.n; }) : []; },
    currentLevel: function (key) { var s = state.sides[key]; return s && s.opened ? s.atlas.levels[s.chosen].n : null; },
    view: bounds,
    leader: function () { return state.leader; },
    /** Whether either side's view is still moving (its zoom or centre springs not at their targets). */
    animating: function () {
      return SIDES.some(function (k) {
        var s = state.sides[k], vp = s && s.viewer && s.viewer.viewport;
        return !!vp && !(vp.zoomSpring.isAtTargetValue() && vp.centerSpringX.isAtTargetValue() &&
                         vp.centerSpringY.isAtTargetValue());
      });
    },
    syncs: function () { return state.syncs; },
    hovered: function () { return state.hovered; },
    selected: function () { return state.selected; },
    /** Client (CSS px) coordinates of world point (x, y) on side `key`. */
    worldToClient: function (key, x, y) {
      var s = state.sides[key], rect = s.viewer.container.getBoundingClientRect();
      var p = s.viewer.viewport.pixelFromPoint(new OpenSeadragon.Point(x, y), true);
      return { x: p.x + rect.left, y: p.y + rect.top };
    },
    /** The hover/selection outline of side `key` in client px ({left, top, width, height}) or null when hidden. */
    box: function (key, which) {
      var s = state.sides[key], box = which === "selected" ? s.selectBox : s.hoverBox;
      if (box.hidden) return null;
      var r = box.getBoundingClientRect();
      return { left: r.left, top: r.top, width: r.width, height: r.height };
    },
    /** Zoom side `key` by `factor` about its centre, as the mouse wheel would (that side leads). */
    zoomBy: function (key, factor) { lead(key); state.sides[key].viewer.viewport.zoomBy(factor); state.sides[key].viewer.viewport.applyConstraints(); },
    panTo: function (key, x, y) { lead(key); state.sides[key].viewer.viewport.panTo(new OpenSeadragon.Point(x, y)); },
    error: function () { return state.error; },
  };

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})(window.AtlasViewerParts);

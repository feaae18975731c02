/* What the viewer says about one cell: the hover tooltip (count, top-5 attributed classes, icon
 * cos-sim, as in the reference's viewer) and the side panel (the icon enlarged, cropped from the
 * current level's full-resolution tiles, plus the cell's dataset examples).
 */
(function (ns) {
  "use strict";

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  /** `digits` significant digits, without exponent notation for the usual magnitudes. */
  function fmt(value, digits) {
    if (typeof value !== "number" || !isFinite(value)) return "n/a";
    return Math.abs(value) >= 1e-3 || value === 0 ? Number(value.toPrecision(digits)).toString() : value.toExponential(1);
  }

  /** An ordered list of the cell's top attributed classes with their values. */
  function classList(cell) {
    var list = el("ol", "classes");
    (cell.classes || []).slice(0, 5).forEach(function (c) {
      var item = el("li");
      item.appendChild(el("span", "class-name", c.name));
      item.appendChild(el("span", "class-value", fmt(c.value, 3)));
      list.appendChild(item);
    });
    if (!list.children.length) list.appendChild(el("li", "none", "no attributed classes"));
    return list;
  }

  /** The highlighted class's value of a cell, as one line ({name, kind, value} or null). */
  function highlightLine(hl) {
    var line = el("div", "tt-highlight");
    var name = hl.kind === "label" ? "photos labelled \u201c" + hl.name + "\u201d" : hl.name;
    line.appendChild(el("span", "class-name", name));
    var text = hl.value === undefined ? "\u2026" : !(hl.value > 0) ? "no support"
      : hl.kind === "label" ? (100 * hl.value).toFixed(hl.value < 0.1 ? 1 : 0) + "% of samples" : fmt(hl.value, 3);
    line.appendChild(el("span", "class-value", text));
    return line;
  }

  /** Fill #tooltip for `cell` of an n x n level and place it next to the pointer; `hl` (optional):
   * the highlighted class or label and this cell's value for it, shown beside the top 5. */
  function showTooltip(tooltip, cell, n, clientX, clientY, hl) {
    // moving within one cell only moves the tooltip: no rebuild, no layout read
    var key = n + ":" + cell.cell + (hl ? ":" + hl.kind + ":" + hl.name + ":" + hl.value : "");
    if (tooltip.hidden || tooltip.dataset.key !== key) {
      tooltip.textContent = "";
      tooltip.appendChild(el("div", "tt-head", cell.count + " samples \u00b7 cell (" + cell.i + ", " + cell.j +
                                               ") of " + n + "\u00d7" + n));
      if (hl) tooltip.appendChild(highlightLine(hl));
      tooltip.appendChild(classList(cell));
      tooltip.appendChild(el("div", "tt-foot", "icon cos-sim " + fmt(cell.cossim, 2)));
      tooltip.hidden = false;
      tooltip.dataset.key = key;
      tooltip.dataset.w = tooltip.offsetWidth;
      tooltip.dataset.h = tooltip.offsetHeight;
    }
    var pad = 16, w = Number(tooltip.dataset.w), h = Number(tooltip.dataset.h);
    var x = clientX + pad, y = clientY + pad;
    if (x + w > window.innerWidth) x = clientX - pad - w;
    if (y + h > window.innerHeight) y = clientY - pad - h;
    tooltip.style.left = Math.max(0, x) + "px";
    tooltip.style.top = Math.max(0, y) + "px";
  }

  /** The DZI tiles of the finest pyramid level that cover canvas pixels [x0, x1) x [y0, y1). */
  function coveringTiles(level, x0, y0, x1, y1) {
    var ts = level.tile_size, ov = level.overlap;
    var z = Math.ceil(Math.log2(level.canvas_px));
    var tiles = [];
    for (var col = Math.floor(x0 / ts); col <= Math.floor((x1 - 1) / ts); col++) {
      for (var row = Math.floor(y0 / ts); row <= Math.floor((y1 - 1) / ts); row++) {
        // a DZI tile starts `overlap` pixels before its nominal origin, except on the first row/column
        tiles.push({ z: z, col: col, row: row, x: col * ts - (col > 0 ? ov : 0), y: row * ts - (row > 0 ? ov : 0) });
      }
    }
    return tiles;
  }

  /** Draw the cell's icon enlarged on `canvas` from the level's full-resolution tiles. */
  function drawIcon(canvas, base, level, cell) {
    var b = cell.icon_bounds || cell.bounds, size = level.canvas_px;
    // bounds are fractions rounded to 1e-6 of the canvas: round back to the exact pixel box
    var x0 = Math.round(b[0] * size), y0 = Math.round(b[1] * size);
    var x1 = Math.round(b[2] * size), y1 = Math.round(b[3] * size);
    var ctx = canvas.getContext("2d");
    var scale = canvas.width / Math.max(x1 - x0, y1 - y0);
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    ctx.imageSmoothingQuality = "high";
    var url = base + level.tiles.replace(/\/?$/, "/");
    coveringTiles(level, x0, y0, x1, y1).forEach(function (t) {
      var img = new Image();
      img.onload = function () {
        ctx.save();
        ctx.beginPath();
        ctx.rect(0, 0, (x1 - x0) * scale, (y1 - y0) * scale);
        ctx.clip();
        ctx.drawImage(img, (t.x - x0) * scale, (t.y - y0) * scale, img.width * scale, img.height * scale);
        ctx.restore();
      };
      img.src = url + t.z + "/" + t.col + "_" + t.row + "." + level.format;
    });
  }

  /** The cell's icon at its native pixel size as a PNG data URL (a Promise). Rejects when the
   * browser forbids reading the tiles' pixels (a file:// page: every file is its own origin). */
  function iconDataUrl(base, level, cell) {
    var b = cell.icon_bounds || cell.bounds, size = level.canvas_px;
    var x0 = Math.round(b[0] * size), y0 = Math.round(b[1] * size);
    var x1 = Math.round(b[2] * size), y1 = Math.round(b[3] * size);
    var canvas = document.createElement("canvas");
    canvas.width = x1 - x0;
    canvas.height = y1 - y0;
    var ctx = canvas.getContext("2d");
    var url = base + level.tiles.replace(/\/?$/, "/");
    return Promise.all(coveringTiles(level, x0, y0, x1, y1).map(function (t) {
      return new Promise(function (resolve, reject) {
        var img = new Image();
        img.onload = function () { ctx.drawImage(img, t.x - x0, t.y - y0); resolve(); };
        img.onerror = function () { reject(new Error("could not load tile " + img.src)); };
        img.src = url + t.z + "/" + t.col + "_" + t.row + "." + level.format;
      });
    })).then(function () { return canvas.toDataURL("image/png"); });
  }

  /** Replace the panel's cell section with the details of `cell` (null: the hint). */
  function showPanel(container, base, level, cell) {
    container.textContent = "";
    if (!cell) {
      container.appendChild(el("p", "hint", "Hover a cell for its classes; click it for details and dataset examples."));
      return;
    }
    container.appendChild(el("h2", null, "cell (" + cell.i + ", " + cell.j + ") of " + level.n + "\u00d7" + level.n));
    var icon = el("canvas", "icon");
    icon.id = "panel-icon";
    icon.width = icon.height = 160;
    container.appendChild(icon);
    drawIcon(icon, base, level, cell);
    container.appendChild(el("p", "stats", cell.count + " samples \u00b7 icon cos-sim " + fmt(cell.cossim, 2) +
                                           " \u00b7 objective " + fmt(cell.objective, 2)));
    container.appendChild(el("h3", null, "top attributed classes"));
    container.appendChild(classList(cell));
    var examples = cell.examples || [];
    container.appendChild(el("h3", null, examples.length ? "dataset examples" : "no dataset examples exported"));
    var strip = el("div", "examples");
    examples.forEach(function (path) {
      var img = el("img");
      img.src = base + path;
      img.alt = "dataset example of this cell";
      strip.appendChild(img);
    });
    container.appendChild(strip);
  }

  ns.cellInfo = { showTooltip: showTooltip, showPanel: showPanel, coveringTiles: coveringTiles, drawIcon: drawIcon,
                  iconDataUrl: iconDataUrl, fmt: fmt };
})(window.AtlasViewerParts = window.AtlasViewerParts || {});

/* Region labels at the coarse levels, as in the Distill article's overview: the name of the
 * dominant attributed class over each region of neighbouring cells, placed where it keeps clear
 * of the other labels (regions with more attribution first), hidden once zoomed into the finer
 * levels. Regions and placement are pure functions; drawing is canvas text with a white halo.
 */
(function (ns) {
  "use strict";

  var MAX_CHARS = 18;
  var FONT = "600 12px system-ui, -apple-system, 'Segoe UI', Roboto, 'DejaVu Sans', sans-serif";
  var BOX_H = 16, PAD = 3;
  var MARGIN_X = 16, MARGIN_Y = 10; // free space kept between two labels (px)
  var AREA = 150 * 110;             // view pixels per label at most (~45 labels at 1280 x 800)

  /** A short label: the class name up to its first comma, at most MAX_CHARS characters. */
  function shortName(name) {
    var s = String(name).split(",")[0].trim();
    return s.length > MAX_CHARS ? s.slice(0, MAX_CHARS - 1) + "\u2026" : s;
  }

  /** Each cell's attribution mass per class: count x mean attribution, over its top classes. */
  function masses(cell) {
    var out = new Map();
    (cell.classes || []).forEach(function (c) { if (c.value > 0) out.set(c.index, cell.count * c.value); });
    return out;
  }

  /** Regions of `cells` (one n x n level) and the class that dominates each. A cell's class is
   * the one with the largest attribution mass (count x mean attribution, over the cells' top
   * classes) in its 3 x 3 neighbourhood, a smoothing that lets a region's class win over a
   * scattered cell's own; a region is a 4-connected set of cells with the same class. Each:
   * {index, name, cells, mass, x, y, anchor}: `mass` is the region's own mass for its class,
   * (x, y) the world centre of the anchor, the member whose own top class it is (any member if
   * none) closest to the mass-weighted centroid. Regions without mass are dropped; sorted by
   * mass, largest first. */
  function regions(cells, n) {
    var byPos = new Map(), mass = new Map(), names = new Map();
    cells.forEach(function (c) {
      byPos.set(c.j * n + c.i, c);
      mass.set(c, masses(c));
      (c.classes || []).forEach(function (k) { names.set(k.index, k.name); });
    });
    var dom = new Map();
    cells.forEach(function (c) {
      var total = new Map();
      for (var dj = -1; dj <= 1; dj++) {
        for (var di = -1; di <= 1; di++) {
          var i = c.i + di, j = c.j + dj;
          if (i < 0 || j < 0 || i >= n || j >= n) continue;
          var nb = byPos.get(j * n + i);
          if (nb) mass.get(nb).forEach(function (m, k) { total.set(k, (total.get(k) || 0) + m); });
        }
      }
      var best = -1, bestMass = 0;
      total.forEach(function (m, k) { if (m > bestMass || (m === bestMass && k < best)) { best = k; bestMass = m; } });
      if (best >= 0) dom.set(c, best);
    });
    var seen = new Set(), out = [];
    cells.forEach(function (start) {
      if (seen.has(start) || !dom.has(start)) return;
      var k = dom.get(start), stack = [start], members = [];
      seen.add(start);
      while (stack.length) {
        var c = stack.pop();
        members.push(c);
        [[1, 0], [-1, 0], [0, 1], [0, -1]].forEach(function (d) {
          var i = c.i + d[0], j = c.j + d[1];
          if (i < 0 || j < 0 || i >= n || j >= n) return;
          var nb = byPos.get(j * n + i);
          if (nb && !seen.has(nb) && dom.get(nb) === k) { seen.add(nb); stack.push(nb); }
        });
      }
      var total = 0, cx = 0, cy = 0;
      members.forEach(function (m) {
        var w = mass.get(m).get(k) || 0;
        total += w; cx += w * (m.i + 0.5); cy += w * (m.j + 0.5);
      });
      if (!(total > 0)) return;
      cx /= total; cy /= total;
      var own = members.filter(function (m) { return m.classes && m.classes.length && m.classes[0].index === k; });
      var anchor = null, bestD = Infinity;
      (own.length ? own : members).forEach(function (m) {
        var d = (m.i + 0.5 - cx) * (m.i + 0.5 - cx) + (m.j + 0.5 - cy) * (m.j + 0.5 - cy);
        if (d < bestD || (d === bestD && m.cell < anchor.cell)) { bestD = d; anchor = m; }
      });
      out.push({ index: k, name: names.get(k), cells: members.length, mass: total,
                 x: (anchor.i + 0.5) / n, y: (anchor.j + 0.5) / n, anchor: anchor.cell });
    });
    out.sort(function (a, b) { return b.mass - a.mass || a.anchor - b.anchor; });
    return out;
  }

  /** Greedy placement: each region (in order) gets a box centred on its anchor's screen point
   * unless that box leaves the view or comes within MARGIN of a box already placed; at most one
   * label per AREA square pixels of the view, so the overview stays readable. `toScreen(x, y)`
   * -> {x, y}; `measure(text)` -> width in px; `view` {width, height}. */
  function place(regionList, toScreen, measure, view) {
    var placed = [], cap = Math.max(1, Math.floor(view.width * view.height / AREA));
    for (var k = 0; k < regionList.length && placed.length < cap; k++) {
      var r = regionList[k], text = shortName(r.name), p = toScreen(r.x, r.y);
      var w = measure(text) + 2 * PAD, h = BOX_H;
      var box = { x: p.x - w / 2, y: p.y - h / 2, w: w, h: h };
      if (box.x < 0 || box.y < 0 || box.x + w > view.width || box.y + h > view.height) continue;
      var clash = placed.some(function (o) {
        return box.x < o.x + o.w + MARGIN_X && o.x < box.x + box.w + MARGIN_X &&
               box.y < o.y + o.h + MARGIN_Y && o.y < box.y + box.h + MARGIN_Y;
      });
      if (!clash) placed.push({ x: box.x, y: box.y, w: w, h: h, text: text, index: r.index, name: r.name,
                                anchor: r.anchor, wx: r.x, wy: r.y });
    }
    return placed;
  }

  /** Draw placed labels on `ctx` with opacity `alpha`. */
  function draw(ctx, placed, alpha) {
    if (alpha <= 0 || !placed.length) return;
    ctx.save();
    ctx.globalAlpha = alpha;
    ctx.font = FONT;
    ctx.textAlign = "center";
    ctx.textBaseline = "middle";
    ctx.lineJoin = "round";
    placed.forEach(function (b) {
      var x = b.x + b.w / 2, y = b.y + b.h / 2;
      ctx.lineWidth = 4;
      ctx.strokeStyle = "rgba(255,255,255,0.92)";
      ctx.strokeText(b.text, x, y);
      ctx.fillStyle = "#1d1d1d";
      ctx.fillText(b.text, x, y);
    });
    ctx.restore();
  }

  /** Width of `text` in the label font (canvas measureText). */
  function measurer(ctx) {
    return function (text) {
      ctx.save();
      ctx.font = FONT;
      var w = ctx.measureText(text).width;
      ctx.restore();
      return w;
    };
  }

  ns.labels = { shortName: shortName, regions: regions, place: place, draw: draw, measurer: measurer };
})(window.AtlasViewerParts = window.AtlasViewerParts || {});

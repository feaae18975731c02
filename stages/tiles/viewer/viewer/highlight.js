/* The class highlight drawn over the atlas: every cell of the level on screen tinted by its value
 * for the chosen class (mean attribution) or data-set label (share of samples), cells without
 * support dimmed. One colour scale, viridis (perceptually uniform, readable in grey; van der Walt
 * & Smith, matplotlib 1.5), from 0 to the level's largest value, with a legend.
 */
(function (ns) {
  "use strict";

  // viridis at 0, 1/8, ..., 1 (matplotlib's table); linear interpolation between them
  var STOPS = [[68, 1, 84], [71, 45, 123], [59, 82, 139], [44, 114, 142], [33, 145, 140],
               [40, 174, 128], [94, 201, 98], [173, 220, 48], [253, 231, 37]];
  var DIM = "rgba(255,255,255,0.82)";    // veil over cells without support
  var WEAK_VEIL = 0.75;                  // a supported cell's veil: WEAK_VEIL x (1 - t)
  var FILL_ALPHA = 0.18;                 // the colour over the icon
  var FRAME_PX = [2, 6];                 // frame width from t = 0 to t = 1 (px; at most 8% of the side)

  /** [r, g, b] of the scale at t in [0, 1]. */
  function colour(t) {
    t = Math.max(0, Math.min(1, t));
    var x = t * (STOPS.length - 1), k = Math.min(STOPS.length - 2, Math.floor(x)), f = x - k;
    return STOPS[k].map(function (c, ch) { return Math.round(c + f * (STOPS[k + 1][ch] - c)); });
  }

  function css(rgb, alpha) {
    return alpha === undefined ? "rgb(" + rgb.join(",") + ")" : "rgba(" + rgb.join(",") + "," + alpha + ")";
  }

  /** The CSS gradient of the scale (legend). */
  function gradient() {
    return "linear-gradient(to right, " + STOPS.map(function (s, k) {
      return css(s) + " " + Math.round(100 * k / (STOPS.length - 1)) + "%";
    }).join(", ") + ")";
  }

  /** Tint the visible cells of `level` on `ctx`. `values` (by cell number, NaN = no support) and
   * `max` from data.loadHighlight; `toPx` maps world (x, y) to canvas pixels as [ax, bx, ay, by]
   * (px = ax * x + bx); `range` from levels.visibleRange; `alpha` the level's opacity. */
  function drawTint(ctx, level, values, max, toPx, range, alpha) {
    if (!level.byPosition || alpha <= 0) return;
    ctx.save();
    ctx.globalAlpha = alpha;
    var n = level.n;
    for (var j = range.j0; j <= range.j1; j++) {
      for (var i = range.i0; i <= range.i1; i++) {
        var cell = level.byPosition.get(j * n + i);
        if (!cell) continue;
        var b = cell.icon_bounds || cell.bounds;
        var x0 = toPx[0] * b[0] + toPx[1], y0 = toPx[2] * b[1] + toPx[3];
        var w = toPx[0] * (b[2] - b[0]), h = toPx[2] * (b[3] - b[1]);
        var v = values[cell.cell];
        if (!(v > 0) || !(max > 0)) {
          ctx.fillStyle = DIM;
          ctx.fillRect(x0, y0, w, h);
          continue;
        }
        var t = Math.min(1, v / max), rgb = colour(t);
        if (t < 1) {
          ctx.fillStyle = "rgba(255,255,255," + (WEAK_VEIL * (1 - t)).toFixed(3) + ")";
          ctx.fillRect(x0, y0, w, h);
        }
        ctx.fillStyle = css(rgb, FILL_ALPHA);
        ctx.fillRect(x0, y0, w, h);
        var fw = Math.min(FRAME_PX[0] + t * (FRAME_PX[1] - FRAME_PX[0]), Math.max(FRAME_PX[0], 0.08 * Math.min(w, h)));
        ctx.strokeStyle = css(rgb);
        ctx.lineWidth = fw;
        ctx.strokeRect(x0 + fw / 2, y0 + fw / 2, w - fw, h - fw);
      }
    }
    ctx.restore();
  }

  /** What the highlight measures, for the legend and tooltip. */
  function measureName(kind) {
    return kind === "label" ? "share of the cell's samples from these photos" : "mean attribution of the cell's samples";
  }

  /** Fill the legend element for highlight {kind, name} with values up to `max` (null: hide). */
  function showLegend(legend, hl, max, supported, levelN, fmt) {
    legend.textContent = "";
    if (!hl) { legend.hidden = true; return; }
    legend.hidden = false;
    var title = document.createElement("div");
    title.className = "hl-title";
    title.textContent = (hl.kind === "label" ? "photos labelled \u201c" + hl.name + "\u201d" : hl.name);
    legend.appendChild(title);
    var what = document.createElement("div");
    what.className = "hl-measure";
    what.textContent = measureName(hl.kind) + " \u00b7 level " + levelN + "\u00d7" + levelN + ", " + supported + " cells";
    legend.appendChild(what);
    var bar = document.createElement("div");
    bar.className = "hl-bar";
    bar.style.background = gradient();
    legend.appendChild(bar);
    var ticks = document.createElement("div");
    ticks.className = "hl-ticks";
    var lo = document.createElement("span"), hi = document.createElement("span");
    lo.textContent = "0";
    hi.textContent = max > 0 ? fmt(max) : "no support at this level";
    ticks.appendChild(lo);
    ticks.appendChild(hi);
    legend.appendChild(ticks);
    var none = document.createElement("div");
    none.className = "hl-none";
    var swatch = document.createElement("i");
    none.appendChild(swatch);
    none.appendChild(document.createTextNode("no support (dimmed)"));
    legend.appendChild(none);
  }

  ns.highlight = { colour: colour, gradient: gradient, drawTint: drawTint, showLegend: showLegend, measureName: measureName };
})(window.AtlasViewerParts = window.AtlasViewerParts || {});

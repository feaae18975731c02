/* The view in the URL's hash, so a link restores it (from file:// or `atlas serve`):
 *
 *   #atlas=main&level=40&view=0.41250,0.52500,0.30000&cell=40:123&hl=class:281
 *
 * atlas: the atlas id; level: the level shown; view: the viewport centre x, y and width in world
 * units (the atlas is 1 x 1); cell: the selected cell as level:cell number; hl: the highlight as
 * class:<index> or label:<index>. A bare hash (#class/tabby, the older form) is an atlas id.
 * Pure functions.
 */
(function (ns) {
  "use strict";

  var DIGITS = 5;

  /** {atlas, level, view: {x, y, width}, cell: {n, cell}, hl: {kind, index}} (missing parts null). */
  function parse(hash) {
    var out = { atlas: null, level: null, view: null, cell: null, hl: null };
    var h = String(hash || "").replace(/^#/, "");
    if (!h) return out;
    if (h.indexOf("=") < 0) { out.atlas = decodeURIComponent(h); return out; }
    h.split("&").forEach(function (part) {
      var eq = part.indexOf("=");
      if (eq < 0) return;
      var key = part.slice(0, eq), value = decodeURIComponent(part.slice(eq + 1));
      if (key === "atlas") out.atlas = value;
      else if (key === "level" && /^\d+$/.test(value)) out.level = Number(value);
      else if (key === "view") {
        var v = value.split(",").map(Number);
        if (v.length === 3 && v.every(isFinite) && v[2] > 0) out.view = { x: v[0], y: v[1], width: v[2] };
      } else if (key === "cell") {
        var c = value.split(":").map(Number);
        if (c.length === 2 && c.every(function (x) { return Number.isInteger(x) && x >= 0; })) out.cell = { n: c[0], cell: c[1] };
      } else if (key === "hl") {
        var m = /^(class|label):(\d+)$/.exec(value);
        if (m) out.hl = { kind: m[1], index: Number(m[2]) };
      }
    });
    return out;
  }

  /** The hash for a view state (same fields as parse; null parts left out). */
  function format(s) {
    var parts = ["atlas=" + encodeURIComponent(s.atlas)];
    if (s.level !== null && s.level !== undefined) parts.push("level=" + s.level);
    if (s.view) parts.push("view=" + [s.view.x, s.view.y, s.view.width].map(function (v) { return v.toFixed(DIGITS); }).join(","));
    if (s.cell) parts.push("cell=" + s.cell.n + ":" + s.cell.cell);
    if (s.hl) parts.push("hl=" + s.hl.kind + ":" + s.hl.index);
    return "#" + parts.join("&");
  }

  ns.hash = { parse: parse, format: format };
})(window.AtlasViewerParts = window.AtlasViewerParts || {});

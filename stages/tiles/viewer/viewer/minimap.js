/* The layout mini-map: the exported layout subsample as a scatter coloured by each point's
 * argmax-attribution class, the current viewport as a rectangle, click to go there.
 * The layout and the atlas share coordinates (cells are bins of the normalised layout, y down).
 */
(function (ns) {
  "use strict";

  // Tableau-like palette for the most frequent classes; every other class is grey.
  var PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948",
                 "#b07aa1", "#ff9da7", "#9c755f", "#17becf"];
  var OTHER = "rgba(120,120,120,0.45)";

  /** The most frequent labels (>= 0) first, at most PALETTE.length of them. */
  function frequentLabels(labels) {
    var counts = new Map();
    labels.forEach(function (l) { if (l >= 0) counts.set(l, (counts.get(l) || 0) + 1); });
    return Array.from(counts.entries())
      .sort(function (a, b) { return b[1] - a[1]; })
      .slice(0, PALETTE.length)
      .map(function (e) { return e[0]; });
  }

  function Minimap(canvas, legend, onNavigate) {
    this.canvas = canvas;
    this.legend = legend;
    this.points = document.createElement("canvas");
    this.points.width = canvas.width;
    this.points.height = canvas.height;
    this.viewport = null;
    canvas.addEventListener("click", function (ev) {
      var r = canvas.getBoundingClientRect();
      onNavigate((ev.clientX - r.left) / r.width, (ev.clientY - r.top) / r.height);
    });
  }

  /** Draw the scatter once per atlas (into an offscreen canvas) and its legend (layout
   * undefined: still loading, an empty map). */
  Minimap.prototype.setLayout = function (layout, classNames) {
    var ctx = this.points.getContext("2d");
    var w = this.points.width, h = this.points.height;
    ctx.fillStyle = "#fafafa";
    ctx.fillRect(0, 0, w, h);
    this.legend.textContent = "";
    if (!layout || !layout.x || !layout.x.length) {
      ctx.fillStyle = "#999";
      if (layout !== undefined) ctx.fillText("no layout exported", 10, h / 2); // undefined: still loading
      this.draw();
      return;
    }
    var labels = layout.label || [];
    var top = frequentLabels(labels);
    var colour = new Map(top.map(function (l, k) { return [l, PALETTE[k]]; }));
    var radius = layout.x.length > 2000 ? 1 : 1.6;
    // grey first so the coloured classes stay on top
    [false, true].forEach(function (coloured) {
      for (var k = 0; k < layout.x.length; k++) {
        var c = colour.get(labels[k]);
        if (Boolean(c) !== coloured) continue;
        ctx.fillStyle = c || OTHER;
        ctx.fillRect(layout.x[k] * w - radius / 2, layout.y[k] * h - radius / 2, radius, radius);
      }
    });
    var legend = this.legend;
    top.filter(function (l) { return classNames.has(l); }).slice(0, 6).forEach(function (l) {
      var item = document.createElement("span");
      item.className = "legend-item";
      var swatch = document.createElement("i");
      swatch.style.background = colour.get(l);
      item.appendChild(swatch);
      item.appendChild(document.createTextNode(classNames.get(l)));
      legend.appendChild(item);
    });
    this.draw();
  };

  /** Redraw with the viewport rectangle (world coordinates x, y, width, height). */
  Minimap.prototype.draw = function (bounds) {
    if (bounds) this.viewport = bounds;
    var ctx = this.canvas.getContext("2d");
    var w = this.canvas.width, h = this.canvas.height;
    ctx.clearRect(0, 0, w, h);
    ctx.drawImage(this.points, 0, 0);
    var b = this.viewport;
    if (!b) return;
    ctx.lineWidth = 2;
    ctx.strokeStyle = "#d62728";
    ctx.strokeRect(b.x * w, b.y * h, b.width * w, b.height * h);
  };

  ns.Minimap = Minimap;
})(window.AtlasViewerParts = window.AtlasViewerParts || {});

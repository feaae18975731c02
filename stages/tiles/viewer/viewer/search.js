/* The highlight search box: autocomplete over the model's class names and the data set's label
 * names (the export's highlight.js index), keyboard and mouse. Matching is a pure function.
 */
(function (ns) {
  "use strict";

  /** Entries of a highlight index: every class, then every data-set label. */
  function entries(index) {
    var out = index.classes.map(function (name, k) { return { kind: "class", index: k, name: name, key: name.toLowerCase() }; });
    (index.labels || []).forEach(function (l) {
      out.push({ kind: "label", index: l.index, name: l.name, key: l.name.toLowerCase().replace(/[_-]+/g, " "),
                 rows: l.rows, asClass: l["class"] });
    });
    return out;
  }

  /** At most `limit` entries matching `query` (case-insensitive), best first: whole name, then
   * prefix, then a word's prefix, then anywhere; supported entries (`supported(entry)`) before
   * unsupported ones; then alphabetically. */
  function match(list, query, limit, supported) {
    var q = query.trim().toLowerCase().replace(/[_-]+/g, " ");
    if (!q) return [];
    var scored = [];
    for (var k = 0; k < list.length; k++) {
      var e = list[k], at = e.key.indexOf(q);
      if (at < 0) continue;
      var rank = e.key === q ? 0 : at === 0 ? 1 : /[\s,'(]/.test(e.key.charAt(at - 1)) ? 2 : 3;
      if (supported && !supported(e)) rank += 4;
      scored.push([rank, e]);
    }
    scored.sort(function (a, b) { return a[0] - b[0] || (a[1].key < b[1].key ? -1 : a[1].key > b[1].key ? 1 : 0); });
    return scored.slice(0, limit).map(function (s) { return s[1]; });
  }

  /** Wire `input` + `list` (a <ul>): typing shows matches, arrows/Enter/click pick one, Esc closes.
   * `getIndex()` returns a Promise of the entries (loaded on first use); `onPick(entry)`. */
  function Search(input, list, getIndex, onPick, supported) {
    var self = this;
    this.input = input;
    this.list = list;
    this.items = [];
    this.active = -1;
    this.entries = null;
    this.timings = []; // ms per keystroke: matching + the list (bench/viewer.py reads them)
    var refresh = function () {
      getIndex().then(function (all) {
        var t0 = performance.now();
        self.entries = all;
        self.show(match(all || [], input.value, 12, supported));
        self.timings.push(performance.now() - t0);
        if (self.timings.length > 500) self.timings.shift();
      });
    };
    input.addEventListener("focus", function () { getIndex(); });
    input.addEventListener("input", refresh);
    input.addEventListener("keydown", function (ev) {
      if (ev.key === "ArrowDown" || ev.key === "ArrowUp") {
        ev.preventDefault();
        if (!self.items.length) return;
        self.active = (self.active + (ev.key === "ArrowDown" ? 1 : -1) + self.items.length) % self.items.length;
        self.mark();
      } else if (ev.key === "Enter") {
        ev.preventDefault();
        var pick = self.items[Math.max(0, self.active)];
        if (pick) self.pick(pick);
      } else if (ev.key === "Escape") {
        self.show([]);
        input.blur();
      }
    });
    input.addEventListener("blur", function () { setTimeout(function () { self.show([]); }, 150); });
    this.onPick = onPick;
    this.supported = supported;
  }

  Search.prototype.show = function (items) {
    var self = this;
    this.items = items;
    this.active = items.length ? 0 : -1;
    this.list.textContent = "";
    items.forEach(function (e, k) {
      var li = document.createElement("li");
      li.setAttribute("role", "option");
      li.dataset.kind = e.kind;
      li.dataset.index = e.index;
      var name = document.createElement("span");
      name.className = "s-name";
      name.textContent = e.name;
      var tag = document.createElement("span");
      tag.className = "s-kind";
      tag.textContent = e.kind === "label" ? "photos labelled" : "class";
      li.appendChild(name);
      li.appendChild(tag);
      if (self.supported && !self.supported(e)) li.classList.add("unsupported");
      li.addEventListener("mousedown", function (ev) { ev.preventDefault(); self.pick(e); });
      li.addEventListener("mouseenter", function () { self.active = k; self.mark(); });
      self.list.appendChild(li);
    });
    this.list.hidden = !items.length;
    this.mark();
  };

  Search.prototype.mark = function () {
    var active = this.active;
    Array.prototype.forEach.call(this.list.children, function (li, k) { li.classList.toggle("active", k === active); });
  };

  Search.prototype.pick = function (entry) {
    this.input.value = entry.name;
    this.show([]);
    this.input.blur();
    this.onPick(entry);
  };

  ns.search = { entries: entries, match: match, Search: Search };
})(window.AtlasViewerParts = window.AtlasViewerParts || {});

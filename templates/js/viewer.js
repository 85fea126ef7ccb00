/* xreport: the interactive attention viewer. Inline, no network, works from a file:// URL.
   Reads the one JSON block with the id xr-viewer-data and drives every
   .xr-viewer section (one per language). Text is set with textContent only: class names and
   image ids are data, never markup. */
(function () {
  "use strict";
  var holder = document.getElementById("xr-viewer-data");
  if (!holder) { return; }
  var data = JSON.parse(holder.textContent);
  var K = data.class_names.length;
  var GH = data.grid[0], GW = data.grid[1];
  var SIZE = 224;                       /* canvas pixels; CSS scales it to the layout */
  var lut = bytes(data.colormap);       /* 256 RGB triples: the static overlays' colour map */
  var binary = data.task === "binary" && K === 2;
  var images = [], heats = new Map();

  function bytes(b64) {
    var s = atob(b64), out = new Uint8Array(s.length);
    for (var i = 0; i < s.length; i++) { out[i] = s.charCodeAt(i); }
    return out;
  }

  function fill(template, params) {
    return template.replace(/\{(\w+)\}/g, function (all, key) {
      return Object.prototype.hasOwnProperty.call(params, key) ? String(params[key]) : all;
    });
  }

  /* Binary: outcome against the positive class (index 1). Multi-class: correct or not. */
  function outcomeOf(it) {
    if (!binary) { return it.y === it.pred ? "correct" : "incorrect"; }
    if (it.pred === 1) { return it.y === 1 ? "TP" : "FP"; }
    return it.y === 1 ? "FN" : "TN";
  }

  data.items.forEach(function (it, i) { it.index = i; it.outcome = outcomeOf(it); });

  function imageOf(it, then) {
    var img = images[it.index];
    if (!img) {
      img = images[it.index] = new Image();
      img.src = it.img;
    }
    if (img.complete && img.naturalWidth) { then(img); } else { img.addEventListener("load", function () { then(img); }, { once: true }); }
  }

  /* The map of class k for one item, bilinearly upsampled (as torch's align_corners=False)
     from its small grid to SIZE x SIZE and coloured; cached, a few dozen at most. An image
     with keep-aspect padding (it.content: [top, left, bottom, right) in image pixels) has
     its map rescaled over the content and the padding left transparent, as in the gallery. */
  function heatOf(it, k) {
    var key = it.index + ":" + k;
    if (heats.has(key)) { return heats.get(key); }
    if (!it.grid) { it.grid = bytes(it.maps); }
    var grid = it.grid, base = k * GH * GW;
    var canvas = document.createElement("canvas");
    canvas.width = canvas.height = SIZE;
    var ctx = canvas.getContext("2d");
    var out = ctx.createImageData(SIZE, SIZE), px = out.data;
    var values = new Float32Array(SIZE * SIZE);
    var box = it.content ? it.content.map(function (v) { return Math.round(v * SIZE / data.image_size); })
                         : [0, 0, SIZE, SIZE];
    var lo = Infinity, hi = -Infinity;
    for (var y = 0; y < SIZE; y++) {
      var sy = Math.min(Math.max((y + 0.5) * GH / SIZE - 0.5, 0), GH - 1);
      var y0 = Math.floor(sy), y1 = Math.min(y0 + 1, GH - 1), fy = sy - y0;
      for (var x = 0; x < SIZE; x++) {
        var sx = Math.min(Math.max((x + 0.5) * GW / SIZE - 0.5, 0), GW - 1);
        var x0 = Math.floor(sx), x1 = Math.min(x0 + 1, GW - 1), fx = sx - x0;
        var top = grid[base + y0 * GW + x0] * (1 - fx) + grid[base + y0 * GW + x1] * fx;
        var bottom = grid[base + y1 * GW + x0] * (1 - fx) + grid[base + y1 * GW + x1] * fx;
        var v = top * (1 - fy) + bottom * fy;
        values[y * SIZE + x] = v;
        if (y >= box[0] && y < box[2] && x >= box[1] && x < box[3]) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
      }
    }
    var span = it.content ? hi - lo : 255;
    if (!it.content) { lo = 0; }
    for (var i = 0; i < SIZE * SIZE; i++) {
      var yy = Math.floor(i / SIZE), xx = i % SIZE, o = 4 * i;
      if (yy < box[0] || yy >= box[2] || xx < box[1] || xx >= box[3]) { px[o + 3] = 0; continue; }
      var level = span > 1e-6 ? Math.round(255 * Math.min(Math.max((values[i] - lo) / span, 0), 1)) : 0;
      px[o] = lut[3 * level]; px[o + 1] = lut[3 * level + 1]; px[o + 2] = lut[3 * level + 2]; px[o + 3] = 255;
    }
    ctx.putImageData(out, 0, 0);
    if (heats.size > 64) { heats.clear(); }
    heats.set(key, canvas);
    return canvas;
  }

  /* The colour scale from the same table as the maps: 1 at the top, 0 at the bottom. */
  function colourBar(canvas) {
    var ctx = canvas.getContext("2d"), bar = ctx.createImageData(1, 256);
    for (var v = 0; v < 256; v++) {
      var o = 4 * (255 - v);
      bar.data[o] = lut[3 * v]; bar.data[o + 1] = lut[3 * v + 1]; bar.data[o + 2] = lut[3 * v + 2]; bar.data[o + 3] = 255;
    }
    ctx.putImageData(bar, 0, 0);
  }

  function Viewer(root) {
    var self = this;
    this.root = root;
    this.msg = JSON.parse(root.getAttribute("data-msg"));
    this.names = JSON.parse(root.getAttribute("data-names"));
    this.filters = { y: "", pred: "", set: "", outcome: "" };
    this.current = null;
    this.shown = [];
    this.q = function (sel) { return root.querySelector(sel); };
    this.list = this.q(".xv-list");
    this.count = this.q(".xv-count");
    this.none = this.q(".xv-none");
    this.panel = this.q(".xv-panel");
    this.orig = this.q(".xv-orig");
    this.overlay = this.q(".xv-overlay");
    this.overlayCap = this.q(".xv-overlay-cap");
    this.mapSel = this.q(".xv-map");
    this.opacity = this.q(".xv-opacity");
    this.opacityOut = this.q(".xv-opacity-out");
    [this.orig, this.overlay].forEach(function (c) { c.width = c.height = SIZE; });
    colourBar(this.q(".xv-bar"));
    this.thumbs = data.items.map(function (it) { return self.thumb(it); });

    root.querySelectorAll("select[data-filter]").forEach(function (sel) {
      sel.addEventListener("change", function () {
        self.filters[sel.getAttribute("data-filter")] = sel.value;
        self.apply();
      });
    });
    root.querySelectorAll(".xv-outcomes button[data-outcome]").forEach(function (btn) {
      btn.addEventListener("click", function () {
        root.querySelectorAll(".xv-outcomes button[data-outcome]").forEach(function (b) {
          b.setAttribute("aria-pressed", b === btn ? "true" : "false");
        });
        self.filters.outcome = btn.getAttribute("data-outcome");
        self.apply();
      });
    });
    this.list.addEventListener("click", function (ev) {
      var btn = ev.target.closest("button.xv-thumb");
      if (btn) { self.select(data.items[+btn.getAttribute("data-i")], false); }
    });
    this.list.addEventListener("keydown", function (ev) { self.key(ev); });
    this.mapSel.addEventListener("change", function () { self.draw(); });
    this.opacity.addEventListener("input", function () { self.draw(); });
    this.q(".xv-prev").addEventListener("click", function () { self.step(-1, false); });
    this.q(".xv-next").addEventListener("click", function () { self.step(1, false); });
    root.hidden = false;
    this.apply();
  }

  Viewer.prototype.thumb = function (it) {
    var btn = document.createElement("button");
    btn.type = "button";
    btn.className = "xv-thumb";
    btn.setAttribute("data-i", String(it.index));
    btn.setAttribute("data-outcome", it.outcome);
    btn.tabIndex = -1;
    btn.setAttribute("aria-label", fill(this.msg.item, {
      id: it.id, "true": this.names[it.y], pred: this.names[it.pred]
    }));
    var img = document.createElement("img");
    img.src = it.img;
    img.alt = "";
    var badge = document.createElement("span");
    badge.className = "xv-badge xv-badge-" + it.outcome;
    badge.textContent = this.msg.outcome[it.outcome];
    btn.appendChild(img);
    btn.appendChild(badge);
    this.list.appendChild(btn);
    return btn;
  };

  Viewer.prototype.matches = function (it) {
    var f = this.filters;
    return (f.y === "" || it.y === +f.y) && (f.pred === "" || it.pred === +f.pred)
      && (f.set === "" || it.sets.indexOf(f.set) >= 0) && (f.outcome === "" || it.outcome === f.outcome);
  };

  Viewer.prototype.apply = function () {
    var self = this;
    this.shown = data.items.filter(function (it) { return self.matches(it); });
    this.thumbs.forEach(function (btn, i) { btn.hidden = !self.matches(data.items[i]); });
    this.count.textContent = fill(this.msg.count, { shown: this.shown.length, total: data.items.length });
    this.root.setAttribute("data-shown", String(this.shown.length));
    this.none.hidden = this.shown.length > 0;
    this.panel.hidden = this.shown.length === 0;
    if (!this.current || this.shown.indexOf(this.current) < 0) {
      this.select(this.shown.length ? this.shown[0] : null, false);
    } else {
      this.roving();
    }
  };

  Viewer.prototype.roving = function () {
    var current = this.current;
    this.thumbs.forEach(function (btn, i) {
      var on = current !== null && data.items[i] === current;
      btn.tabIndex = on ? 0 : -1;
      btn.setAttribute("aria-pressed", on ? "true" : "false");
    });
  };

  Viewer.prototype.select = function (it, focus) {
    this.current = it;
    this.roving();
    this.root.setAttribute("data-current", it ? it.id : "");
    if (!it) { return; }
    if (focus) { this.thumbs[it.index].focus(); }
    var m = this.msg, names = this.names;
    this.q(".xv-id").textContent = it.id;
    this.q(".xv-true").textContent = names[it.y];
    this.q(".xv-pred").textContent = names[it.pred];
    this.q(".xv-outcome-text").textContent = m.outcome[it.outcome];
    var body = this.q(".xv-probs tbody");
    body.textContent = "";
    it.p.map(function (p, k) { return [p, k]; }).sort(function (a, b) { return b[0] - a[0]; })
      .forEach(function (pk) {
        var tr = document.createElement("tr"), th = document.createElement("th"), td = document.createElement("td");
        th.textContent = pk[1] === it.y ? fill(m.true_mark, { cls: names[pk[1]] }) : names[pk[1]];
        td.textContent = pk[0].toFixed(3);
        if (pk[1] === it.pred) { tr.className = "xv-predicted"; }
        tr.appendChild(th); tr.appendChild(td); body.appendChild(tr);
      });
    this.draw();
  };

  Viewer.prototype.mapClass = function () {
    var v = this.mapSel.value, it = this.current;
    if (v === "pred") { return it.pred; }
    if (v === "true") { return it.y; }
    return +v;
  };

  Viewer.prototype.draw = function () {
    var self = this, it = this.current;
    if (!it) { return; }
    var k = this.mapClass(), alpha = +this.opacity.value / 100;
    this.opacityOut.textContent = this.opacity.value + "%";
    this.overlayCap.textContent = fill(this.msg.overlay, { cls: this.names[k] });
    this.root.setAttribute("data-map-class", String(k));
    imageOf(it, function (img) {
      if (self.current !== it) { return; }
      var smooth = img.naturalWidth >= 96;  /* small inputs (MedMNIST 28 px) stay crisp, as in the gallery */
      [self.orig, self.overlay].forEach(function (c) {
        var ctx = c.getContext("2d");
        ctx.imageSmoothingEnabled = smooth;
        ctx.globalAlpha = 1;
        ctx.clearRect(0, 0, SIZE, SIZE);
        ctx.drawImage(img, 0, 0, SIZE, SIZE);
      });
      var ctx = self.overlay.getContext("2d");
      ctx.imageSmoothingEnabled = true;
      ctx.globalAlpha = alpha;
      ctx.drawImage(heatOf(it, k), 0, 0);
      ctx.globalAlpha = 1;
      self.root.setAttribute("data-drawn", it.id + "|" + k + "|" + self.opacity.value);
    });
  };

  Viewer.prototype.step = function (delta, focus) {
    if (!this.shown.length) { return; }
    var i = this.shown.indexOf(this.current);
    i = Math.min(Math.max((i < 0 ? 0 : i + delta), 0), this.shown.length - 1);
    this.select(this.shown[i], focus);
  };

  /* The image list is one tab stop (roving tabindex): arrows, Home and End move in it. */
  Viewer.prototype.key = function (ev) {
    var moves = { ArrowRight: 1, ArrowDown: 1, ArrowLeft: -1, ArrowUp: -1 };
    if (moves[ev.key]) {
      this.step(moves[ev.key], true);
    } else if (ev.key === "Home" || ev.key === "End") {
      if (this.shown.length) { this.select(this.shown[ev.key === "Home" ? 0 : this.shown.length - 1], true); }
    } else {
      return;
    }
    ev.preventDefault();
  };

  function start() {
    document.querySelectorAll(".xr-viewer").forEach(function (root) { root.xrViewer = new Viewer(root); });
  }
  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", start); } else { start(); }
}());

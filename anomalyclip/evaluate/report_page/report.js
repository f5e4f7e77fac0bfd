"use strict";
// The evaluation report: draws the JSON embedded in this page. It reads no other file and
// asks nothing of the network; a video's rendered MP4 (a relative link) is the only media.

performance.mark("report-start"); // with "report-drawn": how long the drawing took
const DATA = JSON.parse(document.getElementById("report-data").textContent);
const M = DATA.metrics;
const DECISION = M.decision || null;
const THRESHOLD = DECISION ? DECISION.threshold.value : null;
const SVG_NS = document.getElementById("roc").namespaceURI;

// ---- small helpers -------------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  node.append(...children);
  return node;
}

function sv(parent, tag, attrs = {}, text = null) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== null) node.textContent = text;
  parent.append(node);
  return node;
}

const pct = (v, digits = 2) => (v == null ? "–" : (100 * v).toFixed(digits));
const num = (v, digits = 4) => (v == null ? "–" : Number(v).toFixed(digits));
const count = (v) => (v == null ? "–" : Number(v).toLocaleString("en"));
const plural = (n, word) => `${count(n)} ${word}${n === 1 ? "" : "s"}`;

function bytes(base64) {
  return Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
}

function ticks(lo, hi, wanted) {
  // round numbers (1, 2, 2.5 or 5 times a power of ten) between lo and hi
  const raw = (hi - lo) / Math.max(1, wanted);
  const power = 10 ** Math.floor(Math.log10(raw || 1));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * power).find((s) => s >= raw) || raw;
  const out = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + 1e-9; t += step) out.push(+t.toFixed(9));
  return out;
}

function table(node, head, rows) {
  node.replaceChildren(
    el("thead", {}, el("tr", {}, ...head.map((h) => el("th", {}, h)))),
    el("tbody", {}, ...rows.map((r) => el("tr", {}, ...r.map((c) => el("td", {}, String(c)))))),
  );
}

// ---- summary: headline numbers and the decisions at the run's threshold -------------------

function drawSummary() {
  const p = M.provenance || {};
  const when = p.date ? ` · evaluated ${p.date.slice(0, 10)}` : "";
  document.getElementById("meta").textContent =
    `${count(M.frames)} frames (${count(M.abnormal_frames)} abnormal)` +
    (p.run ? ` · run ${p.run}` : "") + (p.features ? ` · features ${p.features}` : "") + when;
  const head = [["AUC", "auc"], ["AP", "ap"], ["mAUC", "mauc"], ["mAP", "map"],
    ["top-1 (oracle)", "top1"], ["top-5 (oracle)", "top5"]];  // at a threshold set on the test labels
  document.getElementById("headline").replaceChildren(...head.map(([label, key]) =>
    el("div", { class: key === M.primary ? "card primary" : "card" },
      el("span", { class: "value" }, pct(M[key])),
      el("span", { class: "label" }, label + (key === M.primary ? " (primary)" : "") + " %"))));
  const box = document.getElementById("decision");
  if (!DECISION) {
    box.append(el("p", { class: "note" }, "No decision threshold: no events were looked for."));
    return;
  }
  const t = DECISION.threshold, f = DECISION.frames, e = DECISION.events;
  const perHour = e.false_alarms_per_hour_of_normal_video;
  box.append(
    el("h2", {}, `Decisions at threshold ${num(t.value)}`),
    el("p", { class: "note" }, `${t.rule}; ${t.source}`),
    el("div", { class: "cards small" },
      ...[["precision", f.precision], ["recall", f.recall], ["F1", f.f1],
        ["alarms on normal frames", f.alarm_rate_normal_frames]].map(([label, v]) =>
        el("div", { class: "card" }, el("span", { class: "value" }, pct(v)),
          el("span", { class: "label" }, `frame ${label} %`))),
      el("div", { class: "card" }, el("span", { class: "value" }, count(e.count)),
        el("span", { class: "label" }, "events")),
      el("div", { class: "card" },
        el("span", { class: "value" }, perHour == null ? "–" : perHour.toFixed(1)),
        el("span", { class: "label" }, "false alarms / hour of normal video"))),
  );
  const ious = Object.keys(e.detection);
  const events = el("table", { id: "event-metrics" });
  table(events, ["event IoU", "precision %", "recall %", "F1 %", "found / true"],
    ious.map((k) => { const d = e.detection[k];
      return [k, pct(d.precision), pct(d.recall), pct(d.f1), `${d.true_positives} / ${d.intervals}`]; }));
  const maps = Object.entries(e.map.map).map(([k, v]) => `${k}: ${pct(v)}`).join(" · ");
  box.append(el("div", { class: "scroll" }, events),
    el("p", { class: "note" }, `Event mAP % at IoU ${maps} · average ${pct(e.map.average)}`));
}

// ---- ROC, PR and the confusion matrix --------------------------------------------------------

function drawXY(svg, points, opts) {
  const [W, H, L, B] = [320, 300, 44, 40];
  const sx = (x) => L + x * (W - L - 10), sy = (y) => 10 + (1 - y) * (H - B - 10);
  for (const t of ticks(0, 1, 5)) {
    sv(svg, "line", { class: "grid", x1: sx(t), x2: sx(t), y1: sy(0), y2: sy(1) });
    sv(svg, "line", { class: "grid", x1: sx(0), x2: sx(1), y1: sy(t), y2: sy(t) });
    sv(svg, "text", { x: sx(t), y: sy(0) + 14, class: "tick mid" }, t);
    sv(svg, "text", { x: sx(0) - 5, y: sy(t) + 4, class: "tick end" }, t);
  }
  sv(svg, "text", { x: sx(0.5), y: H - 4, class: "axis mid" }, opts.x);
  sv(svg, "text", { x: 12, y: sy(0.5), class: "axis mid", transform: `rotate(-90 12 ${sy(0.5)})` }, opts.y);
  if (opts.diagonal) sv(svg, "line", { class: "chance", x1: sx(0), y1: sy(0), x2: sx(1), y2: sy(1) });
  if (!points) {
    sv(svg, "text", { x: sx(0.5), y: sy(0.5), class: "axis mid" }, "undefined (one kind of frame)");
    return;
  }
  const d = points.map(([x, y], i) => `${i ? "L" : "M"}${sx(x).toFixed(1)},${sy(y).toFixed(1)}`);
  sv(svg, "path", { class: "xy", d: d.join("") });
  if (opts.at && opts.at.every((v) => v != null)) {
    const dot = sv(svg, "circle", { class: "operating", cx: sx(opts.at[0]), cy: sy(opts.at[1]), r: 4 });
    sv(dot, "title", {}, `at the run's threshold ${num(THRESHOLD)}`);
  }
}

function drawConfusion() {
  const svg = document.getElementById("confusion");
  // at the run's threshold when there is one; else the paper's oracle, said so in the caption
  const atRun = DECISION && DECISION.classes ? DECISION.classes : null;
  const names = M.class_names, rows = atRun ? atRun.confusion : M.confusion;
  if (!rows || !names) return;
  const n = names.length;
  const L = 8 + 6.5 * Math.max(...names.map((s) => s.length)); // room for the longest name
  const cell = Math.max(16, Math.min(44, 360 / n)), W = L + n * cell + 8, H = L + n * cell + 8;
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("width", W);
  svg.setAttribute("height", H);
  document.getElementById("confusion-caption").textContent =
    `Confusion matrix (row: true class, column: predicted; share of the row; Normal below ` +
    (atRun ? `the ${DECISION.threshold.rule} threshold ${num(DECISION.threshold.value)}, chosen ` +
      `without test labels)` : `the oracle ${M.threshold_rule} threshold ${num(M.threshold)} ` +
      `chosen on the test labels, as the paper's evaluation)`);
  rows.forEach((row, i) => {
    const total = row.reduce((a, b) => a + b, 0) || 1;
    sv(svg, "text", { x: L - 4, y: 8 + (i + 0.5) * cell + 4, class: "tick end" }, names[i]);
    sv(svg, "text", { x: 0, y: 0, class: "tick", transform:
      `translate(${L + (i + 0.5) * cell + 4},${8 + n * cell + 4}) rotate(90)` }, names[i]);
    row.forEach((v, j) => {
      const share = v / total;
      const r = sv(svg, "rect", { x: L + j * cell, y: 8 + i * cell, width: cell - 1, height: cell - 1,
        class: "cell", "fill-opacity": (0.04 + 0.96 * share).toFixed(3) });
      sv(r, "title", {}, `${names[i]} → ${names[j]}: ${count(v)} frames (${pct(share, 1)}%)`);
      if (cell >= 24) sv(svg, "text", { x: L + (j + 0.5) * cell, y: 8 + (i + 0.5) * cell + 3.5,
        class: share > 0.5 ? "cell-text mid light" : "cell-text mid" }, Math.round(100 * share));
    });
  });
}

function drawClasses() {
  const eventAp = DECISION ? DECISION.events.map.per_class : {};
  const mean = (o) => (o ? Object.values(o).reduce((a, b) => a + b, 0) / Object.values(o).length : null);
  table(document.getElementById("classes"),
    ["class", "frames", "AUC %", "AP %", "top-1 % (oracle)", "top-5 % (oracle)",
      "event AP % (IoU 0.1:0.5)"],
    Object.entries(M.per_class || {}).map(([name, m]) =>
      [name, count(m.frames), pct(m.auc), pct(m.ap), pct(m.top1), pct(m.top5), pct(mean(eventAp[name]))]));
}

// ---- the videos: a table that sorts and filters, and the curve of the chosen one ----------

const COLUMNS = [
  { key: "id", label: "video", text: true },
  { key: "class", label: "class", text: true, wide: true },
  { key: "frames", label: "frames", show: count, wide: true },
  { key: "abnormal", label: "abnormal %", show: (v) => pct(v, 1), wide: true },
  { key: "max", label: "max p(A)", show: (v) => num(v, 3) },
  { key: "found", label: "found", show: count, title: `true intervals an event found (IoU ≥ ${DATA.match_iou})` },
  { key: "missed", label: "missed", show: count, title: "true intervals no event found" },
  { key: "false", label: "false", show: count, title: "events that found no true interval" },
];
const state = { sort: null, ascending: true, chosen: null };

// numbers align right; the wide-only columns are left out on a phone
const cellClass = (c) => [c.text ? "" : "num", c.wide ? "wide-only" : ""].join(" ").trim();

// a long id may wrap before each "/" and after each "_" on a narrow screen
const breakable = (id) => id.split(/(?=\/)|(?<=_)/).flatMap((part, i) => (i ? [el("wbr"), part] : [part]));

function buildVideoTable() {
  const table = document.getElementById("video-table");
  table.tHead.replaceChildren(el("tr", {}, ...COLUMNS.map((c) => {
    const th = el("th", { "data-key": c.key, tabindex: "0", class: cellClass(c),
      title: c.title || `sort by ${c.label}` }, c.label);
    th.addEventListener("click", () => sortBy(c.key));
    th.addEventListener("keydown", (e) => { if (e.key === "Enter") sortBy(c.key); });
    return th;
  })));
  for (const v of DATA.videos) {
    v.row = el("tr", { tabindex: "0", "data-id": v.id },
      ...COLUMNS.map((c) => el("td", { class: cellClass(c) },
        ...(c.key === "id" ? breakable(v.id) : [c.show ? c.show(v[c.key]) : v[c.key]]))));
    v.row.addEventListener("click", () => choose(v));
  }
  table.tBodies[0].addEventListener("keydown", moveWithKeys);
  const classes = [...new Set(DATA.videos.map((v) => v.class))].sort();
  document.getElementById("class-filter").replaceChildren(
    el("option", { value: "" }, "all classes"), ...classes.map((c) => el("option", { value: c }, c || "(no label)")));
  document.getElementById("filter").addEventListener("input", applyFilter);
  document.getElementById("class-filter").addEventListener("change", applyFilter);
}

function sortBy(key) {
  state.ascending = state.sort === key ? !state.ascending : true;
  state.sort = key;
  const text = COLUMNS.find((c) => c.key === key).text, sign = state.ascending ? 1 : -1;
  const order = DATA.videos.slice().sort((a, b) => {
    const x = a[key], y = b[key];
    if (x == null || y == null) return (x == null) - (y == null); // missing values last
    return sign * (text ? String(x).localeCompare(String(y), "en", { numeric: true }) : x - y);
  });
  document.getElementById("video-table").tBodies[0].replaceChildren(...order.map((v) => v.row));
  for (const th of document.querySelectorAll("#video-table th")) {
    const on = th.dataset.key === key;
    th.setAttribute("aria-sort", on ? (state.ascending ? "ascending" : "descending") : "none");
  }
}

function applyFilter() {
  const words = document.getElementById("filter").value.trim().toLowerCase();
  const only = document.getElementById("class-filter").value;
  let shown = 0;
  for (const v of DATA.videos) {
    const keep = (!only || v.class === only) &&
      (!words || `${v.id} ${v.class}`.toLowerCase().includes(words));
    v.row.hidden = !keep;
    shown += keep;
  }
  document.getElementById("count").textContent = `${shown} of ${DATA.videos.length} videos`;
}

function moveWithKeys(e) {
  if (!["ArrowDown", "ArrowUp", "Enter", " "].includes(e.key)) return;
  e.preventDefault();
  const rows = [...e.currentTarget.rows].filter((r) => !r.hidden);
  const here = rows.indexOf(document.activeElement);
  const step = { ArrowDown: 1, ArrowUp: -1 }[e.key] || 0;
  const next = rows[Math.min(rows.length - 1, Math.max(0, here + step))];
  if (!next) return;
  next.focus();
  choose(DATA.videos.find((v) => v.row === next));
}

function choose(v) {
  if (state.chosen) state.chosen.row.classList.remove("chosen");
  state.chosen = v;
  v.row.classList.add("chosen");
  document.getElementById("detail-title").textContent = v.id;
  const events = v.found == null ? "no threshold" : `${plural(v.events.length, "event")}: ` +
    `${v.found} of ${plural(v.found + v.missed, "true interval")} found, ${v.false} false`;
  document.getElementById("detail-meta").textContent =
    `${v.class || "no label"} · ${count(v.frames)} frames · max p(A) ${num(v.max, 3)} · ${events}`;
  const player = document.getElementById("player");
  player.hidden = !v.video;
  document.getElementById("no-video").hidden = !!v.video;
  if (v.video) player.src = v.video;
  else if (player.hasAttribute("src")) { player.removeAttribute("src"); player.load(); }
  drawCurve(v);
}

function drawCurve(v) {
  const svg = document.getElementById("curve");
  const W = Math.max(300, svg.clientWidth || 800), H = 250, L = 40, R = 12, T = 10;
  const ph = H - T - 56; // plot height; below: the event strip, then the time axis
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.replaceChildren();
  const [x0, x1] = v.span, sx = (x) => L + ((x - x0) / (x1 - x0 || 1)) * (W - L - R);
  const sy = (p) => T + (1 - p) * ph;
  for (const [a, b] of v.gt) {
    const r = sv(svg, "rect", { class: "gt", x: sx(a), y: T, height: ph, width: Math.max(1, sx(b) - sx(a)) });
    sv(r, "title", {}, `ground truth ${num(a, 2)}–${num(b, 2)} ${v.unit}`);
  }
  for (const t of ticks(0, 1, 4)) {
    sv(svg, "line", { class: "grid", x1: L, x2: W - R, y1: sy(t), y2: sy(t) });
    sv(svg, "text", { x: L - 5, y: sy(t) + 4, class: "tick end" }, t);
  }
  for (const t of ticks(x0, x1, Math.max(3, Math.floor((W - L) / 80)))) {
    sv(svg, "text", { x: sx(t), y: H - 20, class: "tick mid" }, t);
  }
  sv(svg, "text", { x: (L + W - R) / 2, y: H - 4, class: "axis mid" },
    v.unit === "s" ? "time (s)" : "frame");
  // the band between each bucket's lowest and highest p(A): forward along the highs, back along the lows
  // bucket i is centred on x0 + i * width (see report_data's envelope)
  const lo = bytes(v.lo), hi = bytes(v.hi), n = hi.length, width = (x1 - x0) / n;
  const upper = [], lower = [];
  for (let i = 0; i < n; i++) {
    if (hi[i] === 255) continue; // a bucket without rows
    const x = sx(x0 + i * width).toFixed(1);
    upper.push(`${x},${sy(hi[i] / 254).toFixed(1)}`);
    lower.unshift(`${x},${sy(lo[i] / 254).toFixed(1)}`);
  }
  if (upper.length) sv(svg, "path", { class: "curve", d: `M${upper.join("L")}L${lower.join("L")}Z` });
  if (THRESHOLD != null) {
    sv(svg, "line", { class: "threshold", x1: L, x2: W - R, y1: sy(THRESHOLD), y2: sy(THRESHOLD) });
  }
  for (const [a, b, peak, label] of v.events) {
    const r = sv(svg, "rect", { class: "event", x: sx(a), y: T + ph + 6, height: 10, width: Math.max(2, sx(b) - sx(a)) });
    sv(r, "title", {}, `${label}, peak p(A) ${num(peak, 3)}, ${num(a, 2)}–${num(b, 2)} ${v.unit}`);
  }
  const head = sv(svg, "line", { id: "playhead", x1: L, x2: L, y1: T, y2: T + ph, visibility: "hidden" });
  svg.onclick = (e) => { // seek the rendered video to the time clicked
    const player = document.getElementById("player");
    if (player.hidden || v.unit !== "s") return;
    const box = svg.getBoundingClientRect();
    player.currentTime = Math.max(0, x0 + ((e.clientX - box.left) * (W / box.width) - L) / (W - L - R) * (x1 - x0));
  };
  document.getElementById("player").ontimeupdate = (e) => {
    const x = sx(e.target.currentTime);
    head.setAttribute("x1", x);
    head.setAttribute("x2", x);
    head.setAttribute("visibility", v.unit === "s" ? "visible" : "hidden");
  };
}

// ---- start ---------------------------------------------------------------------------------

drawSummary();
const curves = DATA.curves || {};
const frames = DECISION ? DECISION.frames : {};
document.getElementById("roc-caption").textContent = `ROC of the frames: AUC ${pct(M.auc)}%`;
drawXY(document.getElementById("roc"), curves.roc, { x: "false positive rate", y: "true positive rate",
  diagonal: true, at: [frames.alarm_rate_normal_frames, frames.recall] });
document.getElementById("pr-caption").textContent = `Precision-recall of the frames: AP ${pct(M.ap)}%`;
drawXY(document.getElementById("pr"), curves.pr, { x: "recall", y: "precision",
  at: [frames.recall, frames.precision] });
drawConfusion();
drawClasses();
buildVideoTable();
sortBy("id");
applyFilter();
const first = document.querySelector("#video-table tbody tr");
if (first) choose(DATA.videos.find((v) => v.row === first));
let resizing = null;
window.addEventListener("resize", () => {
  clearTimeout(resizing);
  resizing = setTimeout(() => state.chosen && drawCurve(state.chosen), 100);
});
performance.mark("report-drawn");
document.body.dataset.ready = "1";

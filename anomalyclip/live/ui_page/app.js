// The live page of `anomaly watch --ui`: tiles per camera and recent events, kept up to date
// by the server's event stream (/stream). Plain JavaScript, no build step, no outside resource.
"use strict";

const TOKEN = new URLSearchParams(location.search).get("token");
const W = 300; // the sparkline's width in its own units (seconds are scaled to it)
const page = {
  threshold: 0.5,
  history: 300,
  clips: false,
  cameras: new Map(), // id -> tile
  events: new Map(), // id -> {data, el}
};
// counts the tests and the measurements read
window.anomalyWatch = { messages: { hello: 0, tile: 0, events: 0 }, tiles: {}, frames: {} };

function withToken(path, params = {}) {
  const query = new URLSearchParams(params);
  if (TOKEN) query.set("token", TOKEN);
  const text = query.toString();
  return text ? `${path}?${text}` : path;
}

function fixed(value, digits) {
  return value === null || value === undefined ? "–" : Number(value).toFixed(digits);
}

function stateOf(state) {
  if (state === "streaming" || state === "reading") return ["online", "ok"];
  if (state.startsWith("reconnecting")) return ["reconnecting", "warn"];
  if (state === "connecting" || state === "starting") return ["connecting", "warn"];
  if (state === "failed") return ["failed", "bad"];
  return [state, "off"]; // ended, stopped
}

// -- tiles --------------------------------------------------------------------------------
function buildTiles(hello) {
  page.threshold = hello.threshold;
  page.history = hello.history;
  page.clips = hello.clips;
  const box = document.getElementById("tiles");
  box.replaceChildren();
  page.cameras.clear();
  for (const cam of hello.cameras) {
    const el = document.getElementById("tile-template").content.firstElementChild.cloneNode(true);
    el.dataset.camera = cam.id;
    el.querySelector(".name").textContent = shortName(cam.name);
    el.querySelector(".name").title = cam.name;
    el.querySelector("img").alt = `newest frame of ${cam.name}`;
    el.querySelector(".threshold-label").textContent = `threshold ${fixed(hello.threshold, 2)}`;
    const tile = { id: cam.id, name: cam.name, el, points: [], frame: null, open: null };
    const img = el.querySelector("img");
    img.addEventListener("load", () => {
      window.anomalyWatch.frames[cam.id] = (window.anomalyWatch.frames[cam.id] || 0) + 1;
      el.classList.add("has-frame");
    });
    const y = 100 * (1 - hello.threshold);
    el.querySelector(".threshold").setAttribute("y1", y);
    el.querySelector(".threshold").setAttribute("y2", y);
    el.querySelector(".above").setAttribute("height", y);
    el.querySelector(".spark").setAttribute(
      "aria-label", `p(A) of the last minutes against the threshold ${fixed(hello.threshold, 2)}`);
    page.cameras.set(cam.id, tile);
    box.append(el);
  }
  summary();
}

function shortName(name) {
  const parts = name.split(/[\\/]/);
  return parts[parts.length - 1] || name;
}

function updateTile(msg) {
  const tile = page.cameras.get(msg.id);
  if (!tile) return;
  const counts = window.anomalyWatch.tiles;
  counts[msg.id] = (counts[msg.id] || 0) + 1;
  const el = tile.el;
  const [label, tone] = stateOf(msg.state);
  const badge = el.querySelector(".state");
  badge.textContent = label;
  badge.title = msg.state;
  badge.className = `pill state ${tone}`;
  el.dataset.state = label;
  el.querySelector(".p").textContent = fixed(msg.p, 2);
  el.querySelector(".p").classList.toggle("hot", msg.p !== null && msg.p >= page.threshold);
  const running = tone !== "off" && tone !== "bad"; // lag and rate of a camera still on
  const lag = running ? msg.lag : null;
  el.querySelector(".lag").textContent = lag === null ? "–" : `${fixed(lag, 1)} s`;
  el.querySelector(".lag").classList.toggle("warn", lag !== null && lag > 2);
  el.querySelector(".fps").textContent = running ? `${fixed(msg.fps, 1)}/s` : "–";
  el.querySelector(".dropped").textContent = msg.dropped;
  el.querySelector(".dropped").classList.toggle("warn", msg.dropped > 0);
  if (msg.frame !== null && msg.frame !== tile.frame) {
    tile.frame = msg.frame;
    el.querySelector("img").src = withToken(`frame/${msg.id}`, { v: msg.frame });
  }
  tile.points.push(...msg.points);
  tile.open = msg.open;
  drawTile(tile);
  summary();
}

function drawTile(tile) {
  const el = tile.el;
  const points = tile.points;
  const last = points.length ? points[points.length - 1][0] + 1 : 0;
  while (points.length && points[0][0] < last - page.history) points.shift();
  // the last minute at least, growing to the whole history as the camera runs
  const span = Math.min(page.history, Math.max(60, points.length ? last - points[0][0] : 0));
  const first = last - span;
  const x = (t) => ((t - first) / span) * W;
  el.querySelector(".span-label").textContent =
    span < 120 ? `last ${Math.round(span)} s` : `last ${Math.round(span / 60)} min`;
  el.querySelector(".curve").setAttribute(
    "points", points.map(([t, p]) => `${x(t + 0.5).toFixed(1)},${(100 * (1 - p)).toFixed(1)}`).join(" "));
  const event = tile.open && page.events.get(tile.open);
  const shade = el.querySelector(".open-span");
  el.classList.toggle("alarm", Boolean(event));
  const banner = el.querySelector(".banner");
  banner.hidden = !event;
  if (event) {
    const start = Math.max(x(event.data.start_time), 0);
    shade.setAttribute("x", start);
    shade.setAttribute("width", Math.max(W - start, 2));
    banner.textContent = `${event.data.class} · peak ${fixed(event.data.peak, 2)}`;
  } else {
    shade.setAttribute("width", 0);
  }
}

// -- events -------------------------------------------------------------------------------
function updateEvents(list) {
  for (const data of list) {
    let entry = page.events.get(data.id);
    if (!entry) {
      const el = document.getElementById("event-template").content.firstElementChild.cloneNode(true);
      el.dataset.event = data.id;
      el.querySelector(".confirm").addEventListener("click", () => decide(data.id, "confirm"));
      el.querySelector(".false-alarm").addEventListener("click", () => decide(data.id, "false_alarm"));
      entry = { data, el, clip: undefined };
      page.events.set(data.id, entry);
      document.getElementById("event-list").prepend(el);
    }
    entry.data = data;
    drawEvent(entry);
  }
  const items = document.getElementById("event-list").children;
  while (items.length > 50) {
    const old = items[items.length - 1];
    page.events.delete(old.dataset.event);
    old.remove();
  }
  document.getElementById("no-events").hidden = page.events.size > 0;
  for (const tile of page.cameras.values()) drawTile(tile);
  summary();
}

function drawEvent(entry) {
  const { data, el } = entry;
  const cam = page.cameras.get(data.camera);
  el.classList.toggle("open", data.open);
  el.querySelector(".event-class").textContent = data.class;
  const state = el.querySelector(".event-state");
  state.textContent = data.open ? "open" : "closed";
  state.className = `pill event-state ${data.open ? "bad" : "off"}`;
  el.querySelector(".event-camera").textContent = cam ? shortName(cam.name) : data.source;
  el.querySelector(".event-camera").title = data.source;
  const when = data.reported_at ? new Date(data.reported_at).toLocaleTimeString() : "";
  el.querySelector(".event-meta").textContent =
    `${fixed(data.start_time, 1)}–${fixed(data.end_time, 1)} s (${fixed(data.duration, 1)} s)` +
    ` · peak ${fixed(data.peak, 2)} · ${when}`;
  el.querySelector(".event-meta").title = "stream time of the event (its length), highest p(A), " +
    "when it was last reported";
  drawClip(entry);
  el.dataset.decision = data.decision || "";
  el.querySelector(".decision").textContent =
    data.decision === "false_alarm" ? "marked false alarm" : data.decision === "confirm" ? "confirmed" : "";
  el.querySelector(".confirm").setAttribute("aria-pressed", data.decision === "confirm");
  el.querySelector(".false-alarm").setAttribute("aria-pressed", data.decision === "false_alarm");
}

function drawClip(entry) {
  const { data, el } = entry;
  const key = data.clip || data.clip_error || (data.open ? "open" : "none");
  if (entry.clip === key) return; // keep a playing video as it is
  entry.clip = key;
  const slot = el.querySelector(".clip");
  slot.replaceChildren();
  slot.title = data.clip_error || "";
  if (data.clip) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "play";
    button.textContent = "▶ clip";
    button.addEventListener("click", () => toggleClip(el, data.clip, button));
    slot.append(button);
  } else if (data.clip_error) {
    slot.textContent = "no clip";
  } else if (page.clips) {
    slot.textContent = data.open ? "recording…" : "writing clip…";
  }
}

function toggleClip(el, name, button) {
  const box = el.querySelector(".event-video");
  if (box.firstChild) {
    box.replaceChildren();
    button.textContent = "▶ clip";
    return;
  }
  const video = document.createElement("video");
  video.controls = true;
  video.muted = true;
  video.autoplay = true;
  video.playsInline = true;
  video.src = withToken(`clips/${encodeURIComponent(name)}`);
  box.replaceChildren(video);
  button.textContent = "✕ clip";
}

async function decide(id, decision) {
  const entry = page.events.get(id);
  const headers = { "Content-Type": "application/json" };
  if (TOKEN) headers.Authorization = `Bearer ${TOKEN}`;
  const note = entry.el.querySelector(".decision");
  try {
    const reply = await fetch("review", {
      method: "POST", headers, body: JSON.stringify({ event: id, decision }),
    });
    const body = await reply.json();
    if (!reply.ok) throw new Error(body.error || reply.statusText);
    entry.data.decision = decision;
    drawEvent(entry);
  } catch (err) {
    note.textContent = `not saved: ${err.message}`;
  }
}

// -- the page's header --------------------------------------------------------------------
function summary() {
  const open = [...page.events.values()].filter((e) => e.data.open).length;
  const link = document.createElement("a");
  link.href = "#events";
  link.className = open ? "hot" : "";
  link.textContent = `${open} open event${open === 1 ? "" : "s"}`;
  document.getElementById("summary").replaceChildren(
    `${page.cameras.size} camera${page.cameras.size === 1 ? "" : "s"} · `, link,
    ` · threshold ${fixed(page.threshold, 2)}`);
}

function connection(text, tone) {
  const el = document.getElementById("connection");
  el.textContent = text;
  el.className = `pill ${tone}`;
}

const stream = new EventSource(withToken("stream"));
stream.addEventListener("open", () => connection("live", "ok"));
stream.addEventListener("error", () => connection("reconnecting", "warn"));
stream.addEventListener("hello", (e) => {
  window.anomalyWatch.messages.hello += 1;
  page.events.clear();
  document.getElementById("event-list").replaceChildren();
  buildTiles(JSON.parse(e.data));
  document.body.dataset.ready = "1";
});
stream.addEventListener("tile", (e) => {
  window.anomalyWatch.messages.tile += 1;
  updateTile(JSON.parse(e.data));
});
stream.addEventListener("events", (e) => {
  window.anomalyWatch.messages.events += 1;
  updateEvents(JSON.parse(e.data));
});

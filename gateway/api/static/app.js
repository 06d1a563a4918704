// twinedge status page: one snapshot from /api/status, then live events over SSE.
// Device data is untrusted: everything is written with textContent, never as markup.
"use strict";

const TOKEN = new URLSearchParams(location.search).get("token");
const REFRESH_MS = 5000;      // full snapshot refresh (counters, buffer, uplink)
const POINTS = 120;           // sparkline length
let snap = null;              // last snapshot, patched by events
let clockOffset = 0;          // gateway clock minus browser clock, seconds
const history = {};           // asset -> quantity -> [[ts, value], ...]

function api(path) {
  if (!TOKEN) return path;
  return path + (path.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(TOKEN);
}
const now = () => Date.now() / 1000 + clockOffset;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null) continue;
    if (k === "class") node.className = v; else node.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : String(c));
  }
  return node;
}
const setText = (id, text) => { document.getElementById(id).textContent = text; };

function ago(ts) {
  if (ts === null || ts === undefined) return "never";
  const s = Math.max(0, now() - ts);
  if (s < 90) return Math.round(s) + " s ago";
  if (s < 5400) return Math.round(s / 60) + " min ago";
  return Math.round(s / 3600) + " h ago";
}
function duration(s) {
  if (s === null || s === undefined) return "–";
  const d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60);
  return d ? `${d}d ${h}h` : h ? `${h}h ${m}m` : `${m}m ${Math.floor(s % 60)}s`;
}
function num(v) {
  if (typeof v !== "number") return v === null || v === undefined ? "–" : String(v);
  const a = Math.abs(v);
  return a !== 0 && (a >= 1e6 || a < 0.01) ? v.toExponential(2) : String(Math.round(v * 100) / 100);
}
function bytes(n) {
  if (typeof n !== "number") return "–";
  const u = ["B", "kB", "MB", "GB", "TB"]; let i = 0;
  while (n >= 1000 && i < u.length - 1) { n /= 1000; i++; }
  return (i ? n.toFixed(1) : n) + " " + u[i];
}
const symbol = (unit) => (snap && snap.units && unit in snap.units) ? snap.units[unit] : (unit || "");

function isOnline(twin) {
  const live = twin.liveness || {};
  if (!live.online) return false;
  const stale = live.stale_after_s;
  return !(typeof stale === "number" && typeof live.last_seen === "number" && now() - live.last_seen > stale);
}

function sparkline(points) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "spark"); svg.setAttribute("viewBox", "0 0 88 24");
  svg.setAttribute("aria-hidden", "true");
  if (!points || points.length < 2) return svg;
  const vs = points.map(p => p[1]);
  const lo = Math.min(...vs), hi = Math.max(...vs), span = hi - lo || 1;
  const line = document.createElementNS(ns, "polyline");
  line.setAttribute("points", vs.map((v, i) =>
    `${(i * 86 / (vs.length - 1) + 1).toFixed(1)},${(22 - (v - lo) * 20 / span).toFixed(1)}`).join(" "));
  svg.append(line);
  return svg;
}

function deviceCard(id, twin) {
  const online = isOnline(twin);
  const live = twin.liveness || {};
  const card = el("article", {class: "device " + (online ? "online" : "stale"), "data-asset": id,
    "data-online": String(online)});
  card.append(el("div", {class: "head"},
    el("span", {class: "name"}, twin.name && twin.name !== id ? `${twin.name} (${id})` : id),
    el("span", {class: "badge " + (online ? "online" : "stale")}, online ? "online" : "stale")));
  const dev = twin.device || {};
  card.append(el("div", {class: "small"}, `${twin.category || ""} · ${dev.source || ""} · seen `,
    el("span", {class: "seen", "data-ts": live.last_seen}, ago(live.last_seen))));
  const rows = el("tbody");
  for (const [q, s] of Object.entries(twin.state || {})) {
    const quality = online ? (s.quality || "good") : "stale";
    rows.append(el("tr", {"data-quantity": q},
      el("td", {}, q.replace(/_/g, " ")),
      el("td", {class: "v"}, num(s.value), " ", symbol(s.unit)),
      el("td", {}, el("span", {class: "badge " + quality}, quality)),
      el("td", {class: "s"}, sparkline((history[id] || {})[q]))));
  }
  if (rows.children.length) card.append(el("table", {class: "q"}, rows));
  else card.append(el("p", {class: "small empty"}, "no readings yet"));
  const c = dev.counters || {};
  const counter = (label, key) => el("span", {}, label + " ",
    el("b", {class: c[key] ? "bad" : ""}, c[key] === undefined ? "–" : c[key]));
  card.append(el("div", {class: "counters"}, counter("frames bad", "frames_bad"),
    counter("gaps", "gaps"), counter("reconnects", "reconnects"),
    counter("out of range", "out_of_range"),
    el("span", {}, "dropped ", el("b", {}, (twin.buffer || {}).dropped ?? 0))));
  for (const [q, a] of Object.entries(twin.anomalies || {})) {
    card.append(el("div", {class: "anomaly", "data-anomaly": q},
      `⚠ ${q}: score ${num(a.score)} ≥ ${num(a.threshold)} (${a.model || "model"}) ${ago(a.detected_at)}`));
  }
  return card;
}

function renderDevice(id) {
  const twin = snap.assets[id];
  const card = deviceCard(id, twin);
  const old = document.querySelector(`.device[data-asset="${CSS.escape(id)}"]`);
  if (old) old.replaceWith(card); else document.getElementById("devices").append(card);
}

function renderSummary() {
  const gw = snap.gateway || {}, up = snap.uplink || {}, buf = snap.buffer || {};
  setText("gw-id", gw.id || "gateway"); setText("gw-site", gw.site || "");
  setText("gw-version", gw.version || "?"); setText("gw-uptime", duration(gw.uptime_s));
  const state = up.state || "unknown";
  const st = document.getElementById("uplink-state");
  st.textContent = state; st.className = "big state-" + state;
  const lat = up.publish_latency_ms || {};
  setText("uplink-detail", `${up.broker || ""} · backlog ${num(up.backlog_rows)} rows · ` +
    `p50 ${num(lat.p50)} ms · reconnects ${num(up.reconnects)} · last ack ${ago(up.last_ack_at)}`);
  setText("buffer-rows", `${num(buf.rows)} rows`);
  const fill = buf.max_bytes ? Math.min(100, 100 * (buf.bytes || 0) / buf.max_bytes) : 0;
  document.getElementById("buffer-bar").style.width = fill.toFixed(1) + "%";
  setText("buffer-detail", `${bytes(buf.bytes)} of ${bytes(buf.max_bytes)} · dropped ` +
    num((buf.dropped || {}).total ?? 0));
  const r = snap.readings || {};
  setText("readings-in", num(r.in)); setText("readings-detail", `in · ${num(r.out)} out`);
  const ids = Object.keys(snap.assets || {});
  const on = ids.filter(id => isOnline(snap.assets[id])).length;
  setText("devices-online", `${on} / ${ids.length}`);
  setText("devices-detail", ids.length - on ? `${ids.length - on} stale` : "all online");
}

function renderModels() {
  const body = document.getElementById("models"); body.replaceChildren();
  for (const [name, m] of Object.entries(snap.models || {})) {
    body.append(el("tr", {}, el("td", {}, m.model || name), el("td", {}, m.version || ""),
      el("td", {}, m.mode || ""), el("td", {}, num(m.rows_scored ?? m.scored)),
      el("td", {}, num(m.rows_flagged)), el("td", {}, num(m.us_per_row))));
  }
  if (!body.children.length) {
    body.append(el("tr", {}, el("td", {colspan: "6", class: "small"}, "no models loaded")));
  }
}

function renderWarnings() {
  const list = document.getElementById("warnings"); list.replaceChildren();
  for (const w of (snap.warnings || []).slice(-20).reverse()) {
    const when = typeof w.ts === "number" ? new Date(w.ts * 1000).toLocaleTimeString() : "";
    list.append(el("li", {class: "level-" + (w.level || "warning")},
      `${when} ${w.device ? w.device + ": " : ""}${w.msg || ""}`));
  }
  if (!list.children.length) list.append(el("li", {class: "none"}, "no warnings"));
}

function renderAll() {
  renderSummary(); renderModels(); renderWarnings();
  const ids = Object.keys(snap.assets || {}).sort();
  const container = document.getElementById("devices");
  for (const card of [...container.children]) if (!ids.includes(card.dataset.asset)) card.remove();
  ids.forEach(renderDevice);
}

async function refresh() {
  try {
    const t0 = Date.now() / 1000;
    const [rs, rh] = await Promise.all([fetch(api("api/status")), fetch(api("api/history"))]);
    if (!rs.ok) throw new Error(`status: HTTP ${rs.status} ${(await rs.json()).error || ""}`);
    snap = await rs.json();
    if (typeof snap.now === "number") clockOffset = snap.now - (t0 + Date.now() / 1000) / 2;
    if (rh.ok) Object.assign(history, await rh.json());
    document.getElementById("error").hidden = true;
    renderAll();
  } catch (e) {
    const err = document.getElementById("error");
    err.textContent = "Cannot reach the gateway: " + e.message; err.hidden = false;
  }
}

const handlers = {
  reading(ev) {
    const twin = snap.assets[ev.asset]; if (!twin) return;
    twin.state = twin.state || {};
    twin.state[ev.quantity] = Object.assign(twin.state[ev.quantity] || {},
      {value: ev.value, unit: ev.unit, quality: ev.quality, observed_at: ev.ts});
    twin.liveness = Object.assign(twin.liveness || {}, {online: true, last_seen: now()});
    const series = ((history[ev.asset] = history[ev.asset] || {})[ev.quantity] =
      (history[ev.asset] || {})[ev.quantity] || []);
    if (typeof ev.value === "number") series.push([ev.ts, ev.value]);
    if (series.length > POINTS) series.splice(0, series.length - POINTS);
    renderDevice(ev.asset);
  },
  liveness(ev) {
    const twin = snap.assets[ev.asset]; if (!twin) return;
    twin.liveness = Object.assign(twin.liveness || {}, {online: !!ev.online});
    renderDevice(ev.asset); renderSummary();
  },
  anomaly(ev) {  // the detector's event: quantities, state "start" or "end", score, model
    const twin = snap.assets[ev.asset]; if (!twin) return;
    twin.anomalies = twin.anomalies || {};
    for (const q of ev.quantities || (ev.quantity ? [ev.quantity] : [])) {
      if (ev.state === "end") delete twin.anomalies[q];
      else twin.anomalies[q] = {score: ev.score, threshold: ev.threshold, model: ev.model,
        detected_at: ev.detected_at ?? ev.ts ?? now()};
    }
    renderDevice(ev.asset);
  },
  warning(ev) {
    snap.warnings = (snap.warnings || []).concat([{ts: ev.ts ?? now(), level: ev.level || "warning",
      msg: ev.msg, device: ev.device}]).slice(-50);
    renderWarnings();
  },
};

function connect() {
  const live = document.getElementById("live");
  const source = new EventSource(api("api/events"));
  source.onopen = () => { live.textContent = "live"; live.className = "pill on"; };
  source.onerror = () => { live.textContent = "reconnecting…"; live.className = "pill off"; };
  for (const [type, fn] of Object.entries(handlers)) {
    source.addEventListener(type, (msg) => {
      if (!snap) return;
      try { fn(JSON.parse(msg.data)); } catch (e) { console.warn("bad event", e); }
    });
  }
}

function tick() {  // ages and staleness move on even when nothing arrives
  if (!snap) return;
  for (const id of Object.keys(snap.assets || {})) {
    const card = document.querySelector(`.device[data-asset="${CSS.escape(id)}"]`);
    if (card && String(isOnline(snap.assets[id])) !== card.dataset.online) renderDevice(id);
  }
  for (const span of document.querySelectorAll(".seen")) {
    span.textContent = ago(span.dataset.ts ? Number(span.dataset.ts) : null);
  }
  renderSummary();
}

refresh().then(connect);
setInterval(refresh, REFRESH_MS);
setInterval(tick, 1000);

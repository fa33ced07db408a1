/* rtk-qos dashboard: plain JS over the controller's API (/api/...) and its live stream (/api/events).
   Views by location hash: #/ fleet, #/device/<id>?range=1h&at=<ms>, #/alerts. */
"use strict";

const MIN = 60e3, HOUR = 3600e3, DAY = 86400e3;
// Range -> [span, step of the stored series]. 15 min and 1 h read the raw 1 Hz tier, so p50/p95 are
// computed here per display bucket from the samples; 24 h and 7 d read the per-minute tier (mean, max).
const RANGES = {"15m": [15 * MIN, 1e3, 10e3], "1h": [HOUR, 1e3, 30e3], "24h": [DAY, MIN, 0], "7d": [7 * DAY, 2 * MIN, 0]};
const FLEET_REFRESH_MS = 10e3;   // the agents send telemetry/qos every 10 s by default
const TOKEN_KEY = "rtkqos.token";

const $ = (sel, root = document) => root.querySelector(sel);
const esc = s => String(s ?? "").replace(/[&<>"']/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));

// ---- numbers with units -------------------------------------------------------------------------
function num(v, digits) {
  if (v == null || !isFinite(v)) return "—";
  const a = Math.abs(v);
  if (digits == null && a > 0 && a < 0.01) return String(+v.toPrecision(2));   // 0.001 ms stays 0.001
  const d = digits ?? (a >= 100 ? 0 : a >= 10 ? 1 : 2);
  return v.toFixed(d);
}
const UNITS = {latency: "ms", jitter: "ms", loss: "%", packet_loss: "%", throughput: "Mbit/s"};
const withUnit = (v, unit) => v == null || !isFinite(v) ? "—" : `${num(v)} ${unit === "percent" ? "%" : unit === "Mbps" ? "Mbit/s" : unit || ""}`.trim();
function duration(ms) {
  if (ms == null) return "—";
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor(s % 3600 / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor(s % 86400 / 3600)} h`;
}
const ago = ms => ms == null ? "never" : `${duration(Date.now() - ms)} ago`;
const clock = ms => ms == null ? "—" : new Date(ms).toLocaleString([], {month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit"});

// ---- API ----------------------------------------------------------------------------------------
const token = () => sessionStorage.getItem(TOKEN_KEY) || "";
async function api(path, body) {
  const init = body === undefined ? {} : {method: "POST", body: JSON.stringify(body),
    headers: {"Content-Type": "application/json", ...(token() ? {Authorization: `Bearer ${token()}`} : {})}};
  const response = await fetch(path, init);
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    const error = new Error(data?.error?.message || `${response.status} ${response.statusText}`);
    error.status = response.status;
    throw error;
  }
  return data;
}

// Background refreshes fail while the controller is away; the connection badge already says so.
const quietly = fn => (...args) => fn(...args).catch(e => { $("#view").dataset.stale = e.message; });

function toast(html, color) {
  const el = document.createElement("div");
  el.className = "toast";
  if (color) el.style.borderLeftColor = color;
  el.innerHTML = html;
  $("#toasts").append(el);
  setTimeout(() => el.remove(), 6000);
}

// ---- live stream --------------------------------------------------------------------------------
const live = {handlers: {}, source: null, everConnected: false};
function on(kind, fn) { (live.handlers[kind] ||= new Set()).add(fn); return () => live.handlers[kind].delete(fn); }
function connect() {
  const conn = $("#conn");
  const source = live.source = new EventSource("/api/events");
  source.onopen = () => {
    conn.textContent = "live"; conn.className = "conn live";
    if (live.everConnected) { toast("Live connection recovered"); route(); }  // catch up on what was missed
    live.everConnected = true;
  };
  source.onerror = () => {
    conn.textContent = "connection lost — reconnecting"; conn.className = "conn lost";
    if (source.readyState === EventSource.CLOSED) setTimeout(connect, 2000);
  };
  for (const kind of ["alert", "event", "device", "session", "command", "command_progress"]) {
    source.addEventListener(kind, e => {
      const data = JSON.parse(e.data);
      for (const fn of live.handlers[kind] || []) fn(data);
    });
  }
}

// ---- sparklines and plots -----------------------------------------------------------------------
function sparkline(values) {
  const pts = values.map((v, i) => [i, v]).filter(p => p[1] != null);
  if (pts.length < 2) return "";
  const lo = Math.min(...pts.map(p => p[1])), hi = Math.max(...pts.map(p => p[1]));
  const w = 60, h = 16, n = values.length - 1 || 1;
  const d = pts.map(([i, v]) => `${(i / n * w).toFixed(1)},${(hi === lo ? h / 2 : h - 1 - (v - lo) / (hi - lo) * (h - 2)).toFixed(1)}`).join(" ");
  return `<svg class="spark" width="${w}" height="${h}" aria-hidden="true"><polyline points="${d}"/></svg>`;
}

const css = name => getComputedStyle(document.documentElement).getPropertyValue(name).trim();
const seriesColor = i => css(`--s${i % 6 + 1}`);

// Alert episodes shaded on the time axis, shaping changes and the linked moment as vertical lines.
function marksPlugin(marks) {
  return {hooks: {drawClear: u => {
    const ctx = u.ctx, top = u.bbox.top, height = u.bbox.height;
    ctx.save();
    for (const m of marks.spans) {
      const x0 = u.valToPos(m.from / 1000, "x", true), x1 = u.valToPos(m.to / 1000, "x", true);
      ctx.fillStyle = m.color; ctx.globalAlpha = 0.18;
      ctx.fillRect(x0, top, Math.max(2, x1 - x0), height);
    }
    ctx.globalAlpha = 1;
    for (const m of marks.lines) {
      const x = u.valToPos(m.at / 1000, "x", true);
      ctx.strokeStyle = m.color; ctx.lineWidth = 2 * devicePixelRatio; ctx.setLineDash(m.dash || []);
      ctx.beginPath(); ctx.moveTo(x, top); ctx.lineTo(x, top + height); ctx.stroke();
    }
    ctx.restore();
  }}};
}

function plot(container, title, unit, xs, lines, marks, note) {
  const box = document.createElement("div");
  box.className = "plot";
  box.innerHTML = `<h3>${esc(title)}${unit ? ` <span class="muted">(${esc(unit)})</span>` : ""}</h3>${note ? `<p class="note">${esc(note)}</p>` : ""}`;
  container.append(box);
  if (!lines.length) { box.insertAdjacentHTML("beforeend", `<p class="note">no samples in this range</p>`); return null; }
  const axis = {stroke: css("--muted"), grid: {stroke: css("--line"), width: 1}, ticks: {stroke: css("--line")}};
  const width = Math.max(260, box.clientWidth - 12);
  const opts = {
    width, height: 200, plugins: [marksPlugin(marks)], cursor: {drag: {x: true, y: false}},
    scales: {x: {time: true}},
    // The unit is in the title: tick labels stay short enough for the axis on a phone.
    axes: [axis, {...axis, size: 48, values: (u, ticks) => ticks.map(v => num(v))}],
    series: [{}, ...lines.map((l, i) => ({label: l.label, stroke: l.color || seriesColor(i), width: 1.5,
      dash: l.dash, spanGaps: false, value: (u, v) => withUnit(v, unit)}))],
  };
  const chart = new uPlot(opts, [xs.map(t => t / 1000), ...lines.map(l => l.values)], box);
  chart.root.dataset.title = title;
  return chart;
}

// ---- fleet view ---------------------------------------------------------------------------------
const COLUMNS = [
  ["device_id", "Device", d => d.device_id],
  ["status", "State", d => d.status],
  ["health_score", "Health", d => d.health_score],
  ["latency", "Latency", d => d.latest.latency],
  ["jitter", "Jitter", d => d.latest.jitter],
  ["loss", "Loss", d => d.latest.loss],
  ["throughput", "Throughput", d => d.latest.throughput],
  ["open_alerts", "Open alerts", d => d.open_alerts],
  ["anomaly", "Anomaly", d => d.anomaly ? d.anomaly.ts : null],
  ["last_seen_ms", "Last seen", d => d.last_seen_ms],
];
const fleetState = {sort: "device_id", dir: 1, data: null};

function fleetRow(d) {
  const off = d.status !== "online";
  const metric = (key, unit) => `<td class="num" data-metric="${key}" data-value="${d.latest[key] ?? ""}">${withUnit(d.latest[key], unit)}${sparkline(d.spark[key])}</td>`;
  const anomaly = d.anomaly ? `<span class="badge sev-${esc(d.anomaly.severity)}" title="${esc((d.anomaly.metrics || []).join(", "))}">anomalous ${ago(d.anomaly.ts)}</span>` : `<span class="muted">normal</span>`;
  // An offline device's last state is old news: its health badge is left out.
  const health = d.health && !off ? ` <span class="badge h-${esc(d.health)}">${esc(d.health)}</span>` : "";
  return `<tr class="clickable${off ? " offline" : ""}" data-device="${esc(d.device_id)}" data-status="${esc(d.status)}">` +
    `<td><a href="#/device/${esc(d.device_id)}">${esc(d.device_id)}</a> <span class="muted hide-narrow">${esc(d.tenant)}/${esc(d.site)}</span></td>` +
    `<td><span class="badge st-${esc(d.status)}">${esc(d.status)}</span></td>` +
    `<td class="num" data-metric="health_score">${d.health_score ?? "—"}${health}</td>` +
    metric("latency", "ms") + metric("jitter", "ms") + metric("loss", "%") + metric("throughput", "Mbit/s") +
    `<td class="num" data-metric="open_alerts">${d.open_alerts ? `<a href="#/alerts" class="badge sev-error">${d.open_alerts}</a>` : "0"}</td>` +
    `<td>${anomaly}</td><td class="muted">${ago(d.last_seen_ms)}</td></tr>`;
}

function renderFleetTable() {
  const data = fleetState.data;
  if (!data || !$("#fleet")) return;
  const get = COLUMNS.find(c => c[0] === fleetState.sort)[2];
  const rows = [...data.devices].sort((a, b) => {
    const x = get(a), y = get(b);
    if (x == null) return y == null ? 0 : 1;   // blanks last whichever way
    if (y == null) return -1;
    return (x < y ? -1 : x > y ? 1 : 0) * fleetState.dir;
  });
  const head = COLUMNS.map(([key, label]) => `<th class="sort" data-key="${key}"${key === fleetState.sort ? ` aria-sort="${fleetState.dir > 0 ? "ascending" : "descending"}"` : ""}>${label}</th>`).join("");
  $("#fleet").innerHTML = `<thead><tr>${head}</tr></thead><tbody>${rows.map(fleetRow).join("")}</tbody>`;
  const online = data.devices.filter(d => d.status === "online").length;
  $("#fleet-note").textContent = `${data.devices.length} devices, ${online} online, ${data.devices.length - online} not. ` +
    `Figures: the newest minute's mean; sparklines: per-minute means of the last 15 min; health: score 0-100 of those 15 min.`;
}

async function fleetView(view) {
  view.innerHTML = `<h1>Fleet</h1><div class="cards" id="overview"></div><p class="muted" id="fleet-note">loading…</p>
    <div class="wrap"><table id="fleet"></table></div>`;
  $("#fleet").addEventListener("click", e => {
    const th = e.target.closest("th.sort");
    if (th) {
      fleetState.dir = fleetState.sort === th.dataset.key ? -fleetState.dir : 1;
      fleetState.sort = th.dataset.key;
      return renderFleetTable();
    }
    const tr = e.target.closest("tr[data-device]");
    if (tr && !e.target.closest("a")) location.hash = `#/device/${tr.dataset.device}`;
  });
  const load = async () => {
    const [fleet, overview] = await Promise.all([api("/api/fleet"), api("/api/qos/overview")]);
    fleetState.data = fleet;
    renderFleetTable();
    const p = overview.performance_summary;
    const card = (value, label) => `<div class="card"><b>${value}</b><span>${label}</span></div>`;
    $("#overview").innerHTML = card(fleet.devices.length, "devices") +
      card(overview.active_monitoring_sessions, "monitoring sessions") + card(overview.recent_alerts_open, "open alerts (24 h)") +
      card(withUnit(p.avg_latency_ms, "ms"), "avg latency (15 min)") + card(withUnit(p.avg_jitter_ms, "ms"), "avg jitter") +
      card(withUnit(p.avg_packet_loss, "%"), "avg loss") + card(withUnit(p.avg_throughput_mbps, "Mbit/s"), "avg throughput") +
      card(p.network_health_score ?? "—", "health score");
  };
  await load();
  let pending = null;
  // One re-read for a burst of news (a fleet's events come in bursts; the read covers every device).
  const soon = () => { pending ||= setTimeout(() => { pending = null; quietly(load)(); }, 2000); };
  return [setInterval(quietly(load), FLEET_REFRESH_MS), on("device", soon), on("alert", soon), on("event", soon)];
}

// ---- alerts view --------------------------------------------------------------------------------
function alertRow(a) {
  const end = a.closed_ms ?? Date.now();
  const moment = `#/device/${a.device_id}?range=1h&at=${a.opened_ms}`;
  return `<tr data-alert="${a.id}" data-state="${esc(a.state)}"><td><span class="badge sev-${esc(a.severity)}">${esc(a.severity)}</span></td>` +
    `<td><a href="#/device/${esc(a.device_id)}">${esc(a.device_id)}</a></td><td>${esc(a.metric)} <span class="muted">${esc(a.target ?? "")}</span></td>` +
    `<td class="num">${withUnit(a.value, a.unit)}</td><td class="num hide-narrow">${a.threshold == null ? "—" : `${esc(a.threshold_type ?? "")} ${withUnit(a.threshold, a.unit)}`}</td>` +
    `<td>${clock(a.opened_ms)}</td><td class="num" data-opened="${a.opened_ms}" data-closed="${a.closed_ms ?? ""}">${duration(end - a.opened_ms)}</td>` +
    `<td>${esc(a.state)}</td><td class="hide-narrow muted">${esc(a.source)}</td><td><a href="${moment}">on the plot</a></td></tr>`;
}

async function alertsView(view) {
  view.innerHTML = `<h1>Alerts</h1><h2>Open</h2><div class="wrap"><table id="open-alerts"></table></div>
    <h2>Recent (24 h)</h2><div class="wrap"><table id="recent-alerts"></table></div>`;
  const head = `<thead><tr><th>Severity</th><th>Device</th><th>Metric</th><th>Peak</th><th class="hide-narrow">Threshold</th><th>Opened</th><th>Duration</th><th>State</th><th class="hide-narrow">Source</th><th></th></tr></thead>`;
  const byId = new Map();
  const render = () => {
    const all = [...byId.values()].sort((a, b) => b.opened_ms - a.opened_ms);
    const open = all.filter(a => a.state === "open");
    $("#open-alerts").innerHTML = head + `<tbody>${open.map(alertRow).join("") || `<tr><td colspan="10" class="muted">no open alerts</td></tr>`}</tbody>`;
    $("#recent-alerts").innerHTML = head + `<tbody>${all.filter(a => a.state !== "open").map(alertRow).join("") || `<tr><td colspan="10" class="muted">none</td></tr>`}</tbody>`;
  };
  const {alerts} = await api(`/api/alerts?since=${Date.now() - DAY}`);
  alerts.forEach(a => byId.set(a.id, a));
  render();
  const tick = setInterval(() => document.querySelectorAll("td[data-opened]").forEach(td => {
    if (!td.dataset.closed) td.textContent = duration(Date.now() - +td.dataset.opened);
  }), 1000);
  return [tick, on("alert", a => { byId.set(a.id, a); render(); })];
}

// ---- device view --------------------------------------------------------------------------------
function quantile(sorted, q) {
  const i = (sorted.length - 1) * q, lo = Math.floor(i);
  return sorted[lo] + (sorted[Math.min(lo + 1, sorted.length - 1)] - sorted[lo]) * (i - lo);
}

// Points of a stored series on the display grid xs: [mean or p50, max or p95].
function onGrid(points, xs, bucket) {
  if (!bucket) {
    const at = new Map(points.map(p => [p.ts, p]));
    return [xs.map(t => at.get(t)?.mean ?? null), xs.map(t => at.get(t)?.max ?? null)];
  }
  const groups = xs.map(() => []);
  for (const p of points) {
    const i = Math.floor((p.ts - xs[0]) / bucket);
    if (i >= 0 && i < xs.length && p.mean != null) groups[i].push(p.mean);
  }
  const sorted = groups.map(g => g.sort((a, b) => a - b));
  return [sorted.map(g => g.length ? quantile(g, 0.5) : null), sorted.map(g => g.length ? quantile(g, 0.95) : null)];
}

function severityColor(s) { return css({critical: "--crit", error: "--err", warning: "--warn"}[s] || "--accent"); }

async function deviceView(view, id, params) {
  const range = RANGES[params.get("range")] ? params.get("range") : "1h";
  const at = params.get("at") ? +params.get("at") : null;
  view.innerHTML = `<div id="dev-head"></div>
    <div class="row"><span class="ranges">${Object.keys(RANGES).map(r => `<button data-range="${r}" class="${r === range ? "on" : ""}">${r}</button>`).join("")}</span>
      <span class="muted" id="dev-range"></span></div>
    <div class="plots" id="plots"></div>
    <h2>Shaping</h2><div class="panel" id="shaping"></div>
    <h2>Actions</h2><div class="actions" id="actions"></div>
    <h2>Monitoring sessions</h2><div class="panel" id="sessions"></div>`;
  view.querySelectorAll("[data-range]").forEach(b => b.onclick = () => { location.hash = `#/device/${id}?range=${b.dataset.range}`; });
  const charts = [];
  // Header, plots and shaping are redrawn on news; the actions and their countdowns stay.
  const draw = async () => {
    const drawn = await drawDevice(id, range, at);
    charts.splice(0).forEach(c => c && c.destroy());
    charts.push(...drawn);
  };
  await draw();
  actionsPanel($("#actions"), id);
  await sessionsPanel($("#sessions"), id);
  const onResize = () => charts.forEach(c => c && c.setSize({width: Math.max(260, c.root.parentNode.clientWidth - 12), height: 200}));
  addEventListener("resize", onResize);
  let redraw = null;
  const soon = () => { redraw ||= setTimeout(() => { redraw = null; quietly(draw)(); }, 1000); };
  const mine = f => d => d.device_id === id && f(d);
  return [() => removeEventListener("resize", onResize), () => clearTimeout(redraw),
    // 24 h and 7 d read the per-minute tier: once a minute is enough.
    setInterval(() => !at && soon(), RANGES[range][2] ? FLEET_REFRESH_MS : MIN), on("alert", mine(soon)), on("device", mine(soon)),
    on("event", mine(e => { if (e.event_type === "shaping_reverted") reverted(e.payload); soon(); })),
    on("session", mine(() => quietly(sessionsPanel)($("#sessions"), id)))];
}

async function drawDevice(id, range, at) {
  const [span, step, bucket] = RANGES[range];
  const gridStep = bucket || step;
  let end = Date.now();
  if (at && at + span / 2 < end) end = at + span / 2;   // the linked moment in the middle
  end = end - end % gridStep + gridStep;
  const start = end - span;
  const device = await api(`/api/devices/${id}`);
  const [events, commands, alerts] = await Promise.all([
    api(`/api/devices/${id}/events?since=${start - DAY}&limit=2000`), api(`/api/devices/${id}/commands?since=${start - DAY}`),
    api(`/api/alerts?device_id=${id}&since=${start}`)]);
  const names = device.series;
  const fetchSeries = name => api(`/api/devices/${id}/series/${encodeURIComponent(name)}?start=${start}&end=${end}&step=${step}`);
  const loaded = new Map(await Promise.all(names.map(async n => [n, (await fetchSeries(n)).points])));
  if (!$("#plots")) return [];   // left the view meanwhile
  $("#dev-head").innerHTML = `<h1>Device ${esc(id)} <span class="badge st-${esc(device.status)}">${esc(device.status)}</span>
      ${device.health ? `<span class="badge h-${esc(device.health)}">${esc(device.health)}</span>` : ""}</h1>
    <p class="muted">${esc(device.tenant)}/${esc(device.site)} · last seen ${ago(device.last_seen_ms)} · ${device.open_alerts.length} open alert(s)
      ${device.status !== "online" ? ` · <b class="error">${esc(device.status)} since ${clock(device.status_since_ms)}${device.reason ? ` (${esc(device.reason)})` : ""}</b>` : ""}</p>`;
  $("#dev-range").textContent = `${clock(start)} – ${clock(end)}${at ? ` · marked: ${clock(at)}` : ""}`;
  const xs = [];
  for (let t = start; t < end; t += gridStep) xs.push(t);

  const marks = {spans: [], lines: []};
  for (const a of alerts.alerts) marks.spans.push({from: a.opened_ms, to: a.closed_ms ?? Date.now(), color: severityColor(a.severity)});
  const applied = commands.commands.filter(c => ["qos_auto_optimization", "qos_config"].includes(c.op) && c.args?.dry_run === false);
  for (const c of applied) marks.lines.push({at: c.replies[0]?.finished_ms ?? c.sent_ms, color: css("--ok")});
  for (const e of events.events.filter(e => e.event_type === "shaping_reverted")) marks.lines.push({at: e.ts, color: css("--err"), dash: [6, 4]});
  if (at) marks.lines.push({at, color: css("--text"), dash: [2, 3]});

  const plots = $("#plots");
  plots.innerHTML = "";
  const charts = [];
  const byKind = suffix => names.filter(n => n.endsWith(suffix));
  const probeLines = (suffix, withHigh) => byKind(suffix).flatMap((n, i) => {
    const target = n.slice("probe.".length, -suffix.length);
    const [mid, high] = onGrid(loaded.get(n), xs, bucket);
    return [{label: `${target} ${bucket ? "p50" : "mean"}`, values: mid, color: seriesColor(2 * i)},
            {label: `${target} ${bucket ? "p95" : "max"}`, values: high, color: seriesColor(2 * i + 1), dash: [4, 3]}].slice(0, withHigh ? 2 : 1);
  });
  const quantNote = bucket ? `p50 and p95 of the 1 Hz samples per ${bucket / 1000} s` : `mean and max per ${step / MIN} min (per-minute tier)`;
  charts.push(plot(plots, "Latency", "ms", xs, probeLines(".latency_ms", true), marks, quantNote));
  charts.push(plot(plots, "Jitter", "ms", xs, probeLines(".jitter_ms", false), marks, bucket ? `p50 per ${bucket / 1000} s` : `mean per ${step / MIN} min`));
  charts.push(plot(plots, "Loss", "%", xs, probeLines(".loss_pct", false), marks, null));
  const rates = names.filter(n => /\.(rx|tx)_mbps$/.test(n) && !n.startsWith("uplink."));
  // Rates are means on every range (a rate's p50 per bucket would hide bursts).
  charts.push(plot(plots, "Throughput per interface", "Mbit/s", xs,
    rates.map(n => ({label: n.replace("_mbps", ""), values: bucket ? meanOnGrid(loaded.get(n), xs, bucket) : onGrid(loaded.get(n), xs, 0)[0]})),
    marks, `mean per ${bucket ? bucket / 1000 + " s" : step / MIN + " min"}`));
  const shaperRates = names.filter(n => /^autorate\.(upload|download)_mbps$/.test(n));
  if (shaperRates.length) {
    charts.push(plot(plots, "Adaptive shaper rate", "Mbit/s", xs,
      shaperRates.map(n => ({label: n.slice("autorate.".length, -"_mbps".length), values: heldOnGrid(loaded.get(n), xs, gridStep)})),
      marks, "the rate adaptive shaping decided (evt/autorate), held until its next decision"));
  }
  const scoreNames = names.filter(n => /(^|\.)(anomaly_score|score)$/.test(n));
  const anomalies = events.events.filter(e => e.event_type === "qos_anomaly");
  if (scoreNames.length) {
    charts.push(plot(plots, "Anomaly score", "", xs, scoreNames.map(n => ({label: n, values: onGrid(loaded.get(n), xs, 0)[0]})), marks, null));
  } else {
    // The agent's telemetry carries no score series: its qos_anomaly episodes, at their streaming score's peak.
    const values = xs.map(t => {
      const hit = anomalies.filter(e => e.payload.start <= t && t < (e.payload.end ?? e.ts));
      return hit.length ? Math.max(...hit.map(e => e.payload.streaming_score_max ?? 1)) : 0;
    });
    charts.push(plot(plots, "Anomaly score", "", xs, anomalies.length ? [{label: "episode peak score", values}] : [], marks,
      "from the agent's qos_anomaly episodes (telemetry/qos carries no per-sample score)"));
  }
  shapingPanel($("#shaping"), device.state?.agent?.shaping, commands.commands);
  return charts;
}

// A rate decision holds until the next: each cell shows the newest decision up to the cell's end.
function heldOnGrid(points, xs, cell) {
  const decided = points.filter(p => p.mean != null).sort((a, b) => a.ts - b.ts);
  let i = -1;
  return xs.map(t => {
    while (i + 1 < decided.length && decided[i + 1].ts < t + cell) i++;
    return i < 0 ? null : decided[i].mean;
  });
}

function meanOnGrid(points, xs, bucket) {
  const sums = xs.map(() => [0, 0]);
  for (const p of points) {
    const i = Math.floor((p.ts - xs[0]) / bucket);
    if (i >= 0 && i < xs.length && p.mean != null) { sums[i][0] += p.mean; sums[i][1]++; }
  }
  return sums.map(([s, n]) => n ? s / n : null);
}

function resultOf(reply) {
  const message = reply?.result;
  return message ? (message.payload?.result ?? message.result ?? null) : null;
}

function shapingPanel(el, shaping, commands) {
  const latest = commands.find(c => c.op === "qos_auto_optimization" && resultOf(c.replies[0]));
  const result = latest && resultOf(latest.replies[0]);
  const tree = result?.current_state?.tc_tree;
  el.innerHTML = (shaping ? `<p>Change on record: <b data-shaping-state="${esc(shaping.state)}">${esc(shaping.state)}</b>` +
      `${shaping.transaction ? ` (transaction ${esc(shaping.transaction)}, ${esc(shaping.op)} on ${esc((shaping.interfaces || []).join(", "))})` : ""}` +
      `${shaping.reason ? ` — ${esc(shaping.reason)}` : ""}</p>` : `<p class="muted">This agent does not report a shaping state.</p>`) +
    (tree ? `<p>Installed tc tree on ${esc(result.current_state.uplink)} (reported ${clock(latest.replies[0].finished_ms)}):</p><pre class="tc">${esc(typeof tree === "string" ? tree : JSON.stringify(tree, null, 2))}</pre>`
      : `<p class="muted">No tc tree reported yet (a qos_auto_optimization run reports it).</p>`);
}

// ---- actions ------------------------------------------------------------------------------------
const waiting = new Map();   // command id -> callback(command) when it finishes
on("command", c => {
  const fn = waiting.get(c.id);
  if (fn && !["sent", "accepted"].includes(c.status)) { waiting.delete(c.id); quietly(async () => fn(await api(`/api/commands/${c.id}`)))(); }
});
on("command_progress", p => {
  const el = document.querySelector(`[data-command="${CSS.escape(p.id)}"] .progress`);
  if (el) el.textContent = `progress: ${JSON.stringify(p.progress)}`;
});

async function send(out, deviceId, op, args, onDone) {
  out.innerHTML = `<span class="status">sending ${esc(op)}…</span>`;
  try {
    const command = await api("/api/commands", {device_id: deviceId, op, args});
    out.dataset.command = command.id;
    out.innerHTML = `<span class="status">${esc(op)} ${esc(command.status)} (id ${esc(command.id)})</span> <span class="progress muted"></span>`;
    const finish = done => {
      const reply = done.replies[0];
      const result = resultOf(reply);
      const error = reply?.result?.error || reply?.result?.payload?.error;
      out.innerHTML = `<span class="status ${done.status === "completed" ? "" : "error"}">${esc(op)}: ${esc(done.status)}${error ? ` — ${esc(typeof error === "string" ? error : JSON.stringify(error))}` : ""}</span>`;
      if (onDone) onDone(result, done, out);
      else if (result) out.insertAdjacentHTML("beforeend", `<pre>${esc(JSON.stringify(result, null, 2))}</pre>`);
    };
    waiting.set(command.id, finish);
    // Its result may have come before the reply to the POST: look once.
    const now = await api(`/api/commands/${command.id}`);
    if (!["sent", "accepted"].includes(now.status) && waiting.delete(command.id)) finish(now);
  } catch (e) {
    out.innerHTML = `<span class="error" data-refused="${e.status}">refused: ${esc(e.message)}</span>`;
  }
}

function actionsPanel(el, id) {
  el.innerHTML = `
    <div class="panel"><b>Traffic analysis</b><div class="row"><label>duration s <input type="number" id="ta-d" value="10" min="1" max="3600"></label>
      <button id="ta">Run</button></div><div class="out" id="ta-out"></div></div>
    <div class="panel"><b>Performance monitor</b><div class="row"><label>duration s <input type="number" id="pm-d" value="60" min="60" max="3600"></label>
      <button id="pm">Run</button></div><div class="out" id="pm-out"></div></div>
    <div class="panel"><b>Anomaly detection</b><div class="row"><label>window s <input type="number" id="ad-d" value="3600" min="300" max="86400"></label>
      <button id="ad">Run</button></div><div class="out" id="ad-out"></div></div>
    <div class="panel" id="opt"><b>Auto optimization</b>
      <div class="row"><label>uplink capacity Mbit/s <input type="number" id="opt-cap" value="100" min="1"></label>
        <label><input type="checkbox" id="opt-lat" checked> minimize latency</label></div>
      <div class="row"><button id="preview">Preview plan (dry run)</button><button id="apply" class="danger" disabled>Apply…</button></div>
      <div class="out" id="opt-out"></div><div id="apply-out"></div></div>`;
  $("#ta").onclick = () => send($("#ta-out"), id, "qos_traffic_analysis", {duration: +$("#ta-d").value, analysis_type: "basic"});
  $("#pm").onclick = () => send($("#pm-out"), id, "qos_performance_monitor", {monitor_duration: +$("#pm-d").value, metrics: ["latency", "jitter", "packet_loss", "throughput"]});
  $("#ad").onclick = () => send($("#ad-out"), id, "qos_anomaly_detection", {detection_window: +$("#ad-d").value, metrics: ["latency", "throughput", "jitter"]});
  const optArgs = dryRun => ({optimization_goals: $("#opt-lat").checked ? ["minimize_latency"] : ["maximize_throughput"],
    constraints: {max_bandwidth_mbps: +$("#opt-cap").value}, dry_run: dryRun});
  $("#preview").onclick = () => send($("#opt-out"), id, "qos_auto_optimization", optArgs(true), (result, done, out) => {
    if (!result) return;
    const plan = result.optimization_plan || {};
    out.insertAdjacentHTML("beforeend", `<p>Issues: ${(result.identified_issues || []).map(i => `<span class="badge">${esc(i.type)}</span>`).join(" ") || "none"}</p>` +
      `<p>Changes: ${result.diff?.unchanged ? "none (the tree already matches)" : `${(result.diff?.steps || []).length} step(s)`}</p>` +
      `<p>tc lines of the plan:</p><pre class="tc" id="tc-lines">${esc((plan.tc_commands || []).join("\n"))}</pre>`);
    $("#apply").disabled = false;
  });
  $("#apply").onclick = () => {
    const out = $("#apply-out");
    out.innerHTML = `<p>Apply this plan to ${esc(id)}? The agent reverts it unless confirmed in time.</p>
      <button id="apply-yes" class="danger">Yes, apply</button> <button id="apply-no">Cancel</button>`;
    $("#apply-no").onclick = () => { out.innerHTML = ""; };
    $("#apply-yes").onclick = () => send(out, id, "qos_auto_optimization", optArgs(false), result => pending(out, id, result));
  };
}

// The applied change is pending: count down to its revert, offer confirm, show the revert when it comes.
let countdown = null;
function pending(out, id, result) {
  const exec = result?.execution_result;
  if (!exec || exec.state !== "pending") {
    if (result) out.insertAdjacentHTML("beforeend", `<pre>${esc(JSON.stringify(exec ?? result, null, 2))}</pre>`);
    return;
  }
  // The agent's own deadline (wall clock): its timer started at the apply, before the verification probe.
  const deadline = exec.confirm_by_ms;
  out.insertAdjacentHTML("beforeend", `<div id="pending" data-transaction="${esc(exec.transaction)}">
    <p>Applied ${esc(exec.steps?.length ?? 0)} step(s), transaction ${esc(exec.transaction)}: <b>pending</b>.
    Reverts in <span class="countdown" id="countdown"></span> unless confirmed.</p>
    <button id="confirm" class="primary">Confirm change</button> <span id="confirm-out"></span></div>`);
  clearInterval(countdown);
  const tick = () => {
    const left = deadline - Date.now();
    const el = $("#countdown");
    if (!el) return clearInterval(countdown);
    el.textContent = left > 0 ? `${Math.ceil(left / 1000)} s` : "0 s — waiting for the agent's revert";
  };
  tick();
  countdown = setInterval(tick, 250);
  $("#confirm").onclick = () => send($("#confirm-out"), id, exec.confirm_with?.op || "qos_shaping_confirm",
    exec.confirm_with?.args || {transaction: exec.transaction}, (r, d, o) => {
      if (d.status === "completed") { clearInterval(countdown); $("#pending").innerHTML = `<p class="confirmed">Confirmed: the change stays.</p>`; }
    });
}

function reverted(payload) {
  const box = $("#pending");
  if (!box || (payload.transaction && box.dataset.transaction !== payload.transaction)) return;
  clearInterval(countdown);
  box.innerHTML = `<p class="reverted" id="reverted">Reverted by the agent: ${esc(payload.reason || payload.state || "")}</p>`;
}

async function sessionsPanel(el, id) {
  const {sessions} = await api(`/api/sessions?device_id=${id}`);
  const active = sessions.find(s => s.status === "active");
  el.innerHTML = `<table><thead><tr><th>Session</th><th>Status</th><th>Started</th><th>Ends</th><th class="hide-narrow">Thresholds</th><th></th></tr></thead><tbody>` +
    (sessions.slice(0, 10).map(s => `<tr><td>${esc(s.id.slice(0, 8))}</td><td>${esc(s.status)}${s.stop_reason ? ` (${esc(s.stop_reason)})` : ""}</td>` +
      `<td>${clock(s.started_ms)}</td><td>${clock(s.stopped_ms ?? s.ends_ms)}</td><td class="hide-narrow">${esc(JSON.stringify(s.config.thresholds || {}))}</td>` +
      `<td>${s.status === "active" ? `<button data-stop="${esc(s.id)}">Stop</button>` : ""}</td></tr>`).join("") || `<tr><td colspan="6" class="muted">none</td></tr>`) +
    `</tbody></table>` + (active ? "" : `
    <div class="row"><label>duration s <input type="number" id="ss-d" value="600" min="10"></label>
      <label>every s <input type="number" id="ss-i" value="10" min="1"></label>
      <label>latency &gt; ms <input type="number" id="ss-lat" value="100" min="0"></label>
      <label>jitter &gt; ms <input type="number" id="ss-jit" value="30" min="0"></label>
      <label>loss &gt; % <input type="number" id="ss-loss" value="1" min="0" max="100"></label>
      <label>throughput &lt; Mbit/s <input type="number" id="ss-tp" value="" min="0"></label>
      <button id="ss-start">Start monitoring</button></div>`) + `<div id="ss-out"></div>`;
  const report = async work => {
    try { await work(); await sessionsPanel(el, id); } catch (e) { $("#ss-out").innerHTML = `<span class="error" data-refused="${e.status}">refused: ${esc(e.message)}</span>`; }
  };
  el.querySelectorAll("[data-stop]").forEach(b => b.onclick = () => report(() => api(`/api/sessions/${b.dataset.stop}/stop`, {})));
  const start = $("#ss-start");
  if (start) start.onclick = () => report(() => {
    const thresholds = {}, metrics = [];
    for (const [input, key, metric] of [["#ss-lat", "latency_ms", "latency"], ["#ss-jit", "jitter_ms", "jitter"],
      ["#ss-loss", "packet_loss_percent", "packet_loss"], ["#ss-tp", "throughput_mbps", "throughput"]]) {
      if ($(input).value !== "") { thresholds[key] = +$(input).value; metrics.push(metric); }
    }
    return api("/api/sessions", {device_id: id, duration: +$("#ss-d").value, sampling_interval: +$("#ss-i").value, metrics, thresholds});
  });
}

// ---- router -------------------------------------------------------------------------------------
let cleanup = [];
async function route() {
  for (const c of cleanup) typeof c === "function" ? c() : clearInterval(c);
  cleanup = [];
  const [path, query] = location.hash.slice(1).split("?");
  const params = new URLSearchParams(query || "");
  const parts = (path || "/").split("/").filter(Boolean);
  const view = $("#view");
  const name = parts[0] === "device" ? "device" : parts[0] === "alerts" ? "alerts" : "fleet";
  document.querySelectorAll(".top nav a").forEach(a => a.classList.toggle("on", a.dataset.view === name));
  try {
    cleanup = name === "device" ? await deviceView(view, parts[1], params) : name === "alerts" ? await alertsView(view) : await fleetView(view);
    document.body.dataset.ready = name;
    performance.mark(`ready:${name}`);   // bench/dashboard.py reads it
  } catch (e) {
    view.innerHTML = `<p class="error">${esc(e.message)}</p>`;
    document.body.dataset.ready = "error";
  }
}

async function countOpen() {
  const {alerts} = await api("/api/alerts?state=open&limit=1000");
  const el = $("#alert-count");
  el.hidden = !alerts.length;
  el.textContent = alerts.length;
}

on("alert", a => {
  quietly(countOpen)();
  if (a.state === "open") toast(`<span class="badge sev-${esc(a.severity)}">${esc(a.severity)}</span> ${esc(a.device_id)}: ${esc(a.description || a.metric)}`, severityColor(a.severity));
});
$("#token").value = token();
$("#token-form").onsubmit = e => {
  e.preventDefault();
  const value = $("#token").value.trim();
  value ? sessionStorage.setItem(TOKEN_KEY, value) : sessionStorage.removeItem(TOKEN_KEY);
  toast(value ? "Token saved for this tab" : "Token cleared");
};
$("#theme").onclick = () => {
  const next = document.documentElement.dataset.theme === "dark" ? "light" : "dark";
  document.documentElement.dataset.theme = next;
  localStorage.setItem("rtkqos.theme", next);
  route();   // the plots take their colours from the theme
};
addEventListener("hashchange", route);
connect();
route();
quietly(countOpen)();

# ruff: noqa: E501  (the page is HTML and JavaScript, not Python)
"""The dashboard's one page: inline CSS, script and SVG; it reads only `stats.json` beside itself."""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Cache dashboard</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:16px 24px;background:#fafafa;color:#222}
h1{font-size:20px;margin:0 0 4px} .muted{color:#777} .bad{color:#b00020;font-weight:600}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(460px,1fr));gap:14px;margin-top:12px}
.card{background:#fff;border:1px solid #ddd;border-radius:8px;padding:12px 14px}
.card h2{font-size:16px;margin:0 0 6px;font-family:ui-monospace,monospace}
table{border-collapse:collapse;width:100%} td{padding:2px 6px 2px 0;vertical-align:top}
td.n{text-align:right;font-variant-numeric:tabular-nums;font-family:ui-monospace,monospace}
svg{display:block;background:#f4f6f8;border-radius:4px;margin:6px 0}
.legend span{margin-right:10px} .top span{margin-right:28px;color:#555} .top b{color:#222;font-family:ui-monospace,monospace} .hit{color:#2e7d32} .miss{color:#c62828}
</style></head>
<body>
<h1>Response cache</h1>
<div id="status" class="muted">connecting...</div>
<div class="card top" style="margin-top:10px">
<span>breaker <b id="breaker">-</b></span><span>in flight <b id="in_flight">-</b></span>
<span>Redis memory <b id="redis_memory">-</b></span><span>evicted keys <b id="redis_evicted">-</b></span>
<span>maxmemory-policy <b id="redis_policy">-</b></span></div>
<div id="rules" class="grid"></div>
<div class="card" style="margin-top:14px"><h2>Hottest keys</h2><table id="hot"></table></div>
<script>
"use strict";
const OUTCOMES = ["hit", "stale", "collapsed", "revalidated", "miss", "bypass"];
const SERVED = ["hit", "stale", "collapsed", "revalidated"];
const WINDOW = 300;  // polls kept: five minutes at one a second
const history = [];
const token = new URLSearchParams(location.search).get("token");
const base = location.pathname.endsWith("/") ? location.pathname : location.pathname + "/";
const url = base + "stats.json" + (token ? "?token=" + encodeURIComponent(token) : "");
const sum = (m, names) => names.reduce((a, n) => a + (m[n] || 0), 0);
const ms = (s) => s == null ? "-" : (s * 1000 < 1 ? (s * 1000).toFixed(2) : (s * 1000).toPrecision(3)) + " ms";
const ratio = (served, total) => total ? (100 * served / total).toFixed(1) + "%" : "-";
function el(tag, attrs, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}
function row(table, label, field, value) {
  const tr = el("tr"); tr.append(el("td", {}, label), el("td", {class: "n", "data-field": field}, value));
  table.append(tr);
}
function spark(points, color, max) {
  const w = 420, h = 44, svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("width", w); svg.setAttribute("height", h); svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  const top = Math.max(max || 0, ...points, 1e-9);
  const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
  const step = w / Math.max(WINDOW - 1, 1), start = w - step * (points.length - 1);
  line.setAttribute("points", points.map((p, i) => `${(start + i * step).toFixed(1)},${(h - 2 - (h - 4) * p / top).toFixed(1)}`).join(" "));
  line.setAttribute("fill", "none"); line.setAttribute("stroke", color); line.setAttribute("stroke-width", "1.5");
  svg.append(line);
  return svg;
}
function rates(name) {
  const out = {requests: [], ratio: []};
  for (let i = 1; i < history.length; i++) {
    const a = history[i - 1].rules[name] || {}, b = history[i].rules[name] || {};
    const dt = Math.max(history[i].time - history[i - 1].time, 1e-3);
    const served = sum(b, SERVED) - sum(a, SERVED), missed = (b.miss || 0) - (a.miss || 0);
    out.requests.push((sum(b, OUTCOMES) - sum(a, OUTCOMES)) / dt);
    out.ratio.push(served + missed ? served / (served + missed) : (out.ratio.at(-1) || 0));
  }
  return out;
}
function card(name, m) {
  const div = el("div", {class: "card", "data-rule": name});
  div.append(el("h2", {}, name));
  const r = rates(name), last = history.length > 1 ? history.length - 1 : 0;
  const now = r.requests.at(-1) || 0;
  div.append(el("div", {class: "legend"}, `requests/s now ${now.toFixed(1)} (last ${last} s)`), spark(r.requests, "#1565c0"));
  div.append(el("div", {class: "legend"}, "hit ratio (0 to 100%)"), spark(r.ratio, "#2e7d32", 1));
  const t = el("table");
  const served = sum(m, SERVED), total = served + (m.miss || 0);
  row(t, "requests", "requests", String(sum(m, OUTCOMES)));
  for (const o of OUTCOMES) row(t, o, o, String(m[o] || 0));
  row(t, "hit ratio", "hit_ratio", ratio(served, total));
  row(t, "app time saved", "saved_seconds", (m.saved_seconds || 0).toFixed(3) + " s");
  row(t, "hit latency p50 / p99", "hit_latency", ms(m.hit_p50_s) + " / " + ms(m.hit_p99_s));
  row(t, "miss latency p50 / p99", "miss_latency", ms(m.miss_p50_s) + " / " + ms(m.miss_p99_s));
  if (m.rows_hit || m.rows_computed) row(t, "rows hit / computed", "rows", `${m.rows_hit} / ${m.rows_computed}`);
  row(t, "stored / failures", "stored", `${m.stored} / ${m.store_failures}`);
  const reasons = Object.entries(m.bypass_reasons || {}).map(([k, v]) => `${k} ${v}`).join(", ");
  row(t, "bypass reasons", "bypass_reasons", reasons || "none");
  div.append(t);
  return div;
}
function render(data) {
  if (data.error) { document.getElementById("status").textContent = data.error; return; }
  history.push(data); if (history.length > WINDOW) history.shift();
  const breaker = data.breaker || {};
  const b = document.getElementById("breaker");
  b.textContent = breaker.state || "-"; b.className = breaker.state && breaker.state !== "closed" ? "bad" : "";
  document.getElementById("in_flight").textContent = String(data.in_flight);
  const redis = data.redis;
  document.getElementById("redis_memory").textContent = redis ? (redis.error || redis.used_memory_human || "-") : "not configured";
  document.getElementById("redis_evicted").textContent = redis && redis.evicted_keys != null ? String(redis.evicted_keys) : "-";
  document.getElementById("redis_policy").textContent = redis && redis.maxmemory_policy || "-";
  const rules = document.getElementById("rules");
  rules.replaceChildren(...Object.keys(data.rules).sort().map((n) => card(n, data.rules[n])));
  const hot = document.getElementById("hot");
  hot.replaceChildren(...(data.hot_keys.length ? data.hot_keys : [["none seen yet", ""]]).map(([k, c]) => {
    const tr = el("tr"); tr.append(el("td", {class: "n", "data-field": "count"}, String(c)), el("td", {}, k)); return tr;
  }));
  document.getElementById("status").textContent = "updated " + new Date(data.time * 1000).toLocaleTimeString() + " (polls every second)";
  document.body.dataset.polls = String((+document.body.dataset.polls || 0) + 1);
}
async function poll() {
  try {
    const answer = await fetch(url, {cache: "no-store"});
    if (!answer.ok) throw new Error(answer.status === 401 ? "wrong or missing token" : "HTTP " + answer.status);
    render(await answer.json());
  } catch (e) {
    const s = document.getElementById("status"); s.textContent = "no data: " + e.message; s.className = "bad";
  }
  setTimeout(poll, 1000);
}
poll();
</script>
</body></html>
"""

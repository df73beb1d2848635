"""The human status page at `/`: one self-contained HTML document (no CDN, no external
file: it must work on an air-gapped host), in the spirit of HAProxy's stats page.

The page holds no data: its script polls the JSON API (status, load-balancer stats,
backends, health checks, failover events, cluster) every `?refresh=` seconds (default 2)
and redraws. Rows are coloured by backend state; each row carries `data-backend`,
`data-state` and `data-color` so that tests (and scrapers) need not parse colours. Under
each pool's heading, its failover decision (`data-decision-pool`, `data-active`,
`data-kind`); the cluster section shows the cluster's state, leader and term
(`data-cluster-mode`, `data-cluster-state`, "standalone" for a single node) and a row
per node (`data-node`, `data-node-state`). With `admin.read_auth`, the page asks for
the token once and keeps it in localStorage (or takes it from `#token=...` in the URL).
"""

from __future__ import annotations

STATUS_PAGE = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>haproxyd status</title>
<style>
  body { font: 13px/1.35 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif;
         margin: 0; background: #f4f4f4; color: #111; }
  header { background: #20303c; color: #fff; padding: 8px 14px; display: flex;
           flex-wrap: wrap; gap: 18px; align-items: baseline; }
  header h1 { font-size: 17px; margin: 0 12px 0 0; }
  header .k { color: #9fb3c3; margin-right: 4px; }
  main { padding: 10px 14px; }
  .badge { padding: 1px 8px; border-radius: 9px; font-weight: 600; }
  .ok { background: #2e9d46; color: #fff; } .bad { background: #d12a2a; color: #fff; }
  section { margin-bottom: 16px; }
  h2 { font-size: 14px; margin: 0 0 4px; background: #52677a; color: #fff;
       padding: 4px 8px; display: flex; gap: 16px; }
  h2 .sub { font-weight: normal; color: #e2ebf2; }
  table { border-collapse: collapse; width: 100%; background: #fff; }
  th, td { border: 1px solid #c9cfd4; padding: 2px 6px; text-align: right;
           white-space: nowrap; }
  th { background: #dde4ea; font-weight: 600; }
  td.l, th.l { text-align: left; }
  td.wrap { white-space: normal; min-width: 16em; word-break: break-word; }
  tr.backend td:first-child { font-weight: 600; }
  tr.total td { background: #eef1f4; font-weight: 600; }
  p.decision, p.summary { margin: 0; padding: 3px 8px; background: #e8edf1;
                          border: 1px solid #c9cfd4; border-bottom: 0; }
  p.decision .k, p.summary .k { color: #52677a; margin: 0 3px 0 10px; }
  p.decision .k:first-child, p.summary .k:first-child { margin-left: 0; }
  .warn { color: #b00000; font-weight: 600; }
  .legend .sw { display: inline-block; padding: 1px 8px; margin-right: 6px;
                 border: 1px solid #999; }
  #error { display: none; background: #d12a2a; color: #fff; padding: 6px 14px; }
  #login { display: none; padding: 8px 14px; background: #fff3cd; }
  small { color: #555; }
</style>
</head>
<body>
<header>
  <h1>haproxyd</h1>
  <span><span class="k">node</span><b id="node">-</b></span>
  <span><span class="k">role</span><span id="role">-</span></span>
  <span><span class="k">version</span><span id="version">-</span></span>
  <span><span class="k">uptime</span><span id="uptime">-</span></span>
  <span><span class="k">config</span>v<span id="config">-</span></span>
  <span><span class="k">reloads</span><span id="reloads">-</span></span>
  <span id="healthy" class="badge">-</span>
  <span><span class="k">updated</span><span id="updated">never</span></span>
</header>
<div id="error"></div>
<div id="login">This admin API needs a token:
  <input id="token" type="password" size="40" autocomplete="off">
  <button id="save">Use token</button></div>
<main>
  <p class="legend">
    <span class="sw" style="background:#9be09b">up</span>
    <span class="sw" style="background:#ff8c8c">down</span>
    <span class="sw" style="background:#e05252;color:#fff">maint</span>
    <span class="sw" style="background:#8fb4ff">draining</span>
    <span class="sw" style="background:#ffe28a">checking</span>
    <small>refresh <span id="every">2</span>s &middot; req/s and error rate over the last
    refresh</small></p>
  <div id="pools"></div>
  <section><h2>Health checks</h2><table id="checks"></table></section>
  <section><h2>Failover events</h2><table id="events"></table></section>
  <section><h2>Cluster</h2><p id="cluster-summary" class="summary"></p>
    <table id="cluster"></table></section>
</main>
<script>
"use strict";
const COLORS = {
  up: ["#9be09b", "green"], down: ["#ff8c8c", "red"], maint: ["#e05252", "red"],
  draining: ["#8fb4ff", "blue"], checking: ["#ffe28a", "yellow"]
};
const API = "/api/v1/ha";
const params = new URLSearchParams(location.search);
const every = Math.max(0.5, parseFloat(params.get("refresh") || "2") || 2);
document.getElementById("every").textContent = every;
let previous = null;  // {time, backends: {id: {requests, errors}}}

function token() {
  const m = /(?:^|[#&])token=([^&]+)/.exec(location.hash);
  if (m) { localStorage.setItem("haproxyd.token", decodeURIComponent(m[1])); }
  return localStorage.getItem("haproxyd.token") || "";
}
async function get(path) {
  const headers = {};
  const t = token();
  if (t) { headers.Authorization = "Bearer " + t; }
  const r = await fetch(path, {headers: headers, cache: "no-store"});
  if (r.status === 401) { document.getElementById("login").style.display = "block";
                          throw new Error("unauthorized: enter the admin token"); }
  if (!r.ok) { throw new Error(path + ": HTTP " + r.status); }
  return r.json();
}
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "style") { e.style.cssText = v; } else { e.setAttribute(k, v); }
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : String(c));
  }
  return e;
}
function ms(s) { return s === null || s === undefined ? "-" : (s * 1000).toFixed(1) + " ms"; }
function dur(s) {
  s = Math.floor(s); const d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600),
  m = Math.floor(s % 3600 / 60);
  return (d ? d + "d " : "") + (h ? h + "h " : "") + m + "m " + (s % 60) + "s";
}
function when(t) { return t ? new Date(t * 1000).toLocaleTimeString() : "-"; }
function row(cells, attrs) {
  return el("tr", attrs, ...cells.map(c => c instanceof Node ? c : el("td", {}, c)));
}
function head(names, left) {
  left = left || [0, 1];
  return el("tr", {}, ...names.map((n, i) => el("th", left.includes(i) ? {class: "l"} : {}, n)));
}
function kv(pairs) {
  // [label, value] pairs as "label value" spans, nulls left out
  const out = [];
  for (const [k, v] of pairs) {
    if (v === null || v === undefined || v === "") continue;
    out.push(el("span", {class: "k"}, k), v instanceof Node ? v : String(v));
  }
  return out;
}
function decidedBy(mode, clustered) {
  if (!clustered) return "this node";
  return {leader: "this node, as cluster leader", follower: "the cluster leader",
          local: "this node (node-local pool)"}[mode] || mode;
}
function drawDecision(d, clustered) {
  if (!d) {
    return el("p", {class: "decision", "data-decision-pool": ""}, "no failover decision");
  }
  const active = d.active.length ? d.active.join(", ") : el("span", {class: "warn"}, "none");
  return el("p", {class: "decision", "data-decision-pool": d.pool,
                  "data-active": d.active.join(","), "data-kind": d.kind},
    ...kv([["active", active], ["decision", d.kind + " (v" + d.version + ")"],
           ["reason", d.reason], ["since", when(d.since)],
           ["decided by", decidedBy(d.mode, clustered)],
           ["panic", d.panic ? el("span", {class: "warn"}, "yes: unhealthy backends included")
                             : null],
           ["retry fallback", d.fallback],
           ["held (flapping)", d.held && d.held.length ? d.held.join(", ") : null]]));
}
function checkText(h) {
  if (!h || !h.checks.length) return h && h.ejected ? "ejected (passive)" : "-";
  return h.checks.map(c => c.type + ": " + c.status + (c.reason ? " (" + c.reason + ")" : ""))
    .join("; ") + (h.ejected ? "; ejected" : "");
}

function drawPools(status, stats, backends, clustered) {
  const now = stats.time;
  const byId = {};
  for (const b of backends.backends) byId[b.id] = b;
  const seen = {};
  const box = document.getElementById("pools");
  const sections = [];
  for (const pool of stats.pools) {
    const ps = status.pools.find(p => p.name === pool.name) || {};
    const t = el("table", {"data-pool": pool.name});
    t.append(head(["Backend", "Address", "State", "Role", "Weight", "Active", "Requests",
      "Req/s", "Errors", "Err %", "p50", "p99", "Selections", "2xx", "4xx", "5xx",
      "Health"], [0, 1, 2, 3, 16]));
    for (const s of pool.backends) {
      const b = byId[s.id] || {};
      const state = s.state;
      const color = COLORS[state] || ["#ddd", "grey"];
      let rate = "-", errPct = "-";
      const prev = previous && previous.backends[s.id];
      if (prev && now > previous.time) {
        const dr = s.requests - prev.requests, de = s.errors - prev.errors;
        rate = (dr / (now - previous.time)).toFixed(1);
        errPct = dr > 0 ? (100 * de / dr).toFixed(1) : "0.0";
      } else if (s.requests) {
        errPct = (100 * s.errors / s.requests).toFixed(1);
      }
      seen[s.id] = {requests: s.requests, errors: s.errors};
      const fg = state === "maint" ? "color:#fff;" : "";
      t.append(row([
        el("td", {class: "l"}, s.id), el("td", {class: "l"}, b.address || "-"),
        el("td", {class: "l"}, state + (b.selectable ? "" : " \u2298")),
        el("td", {class: "l"}, b.role || "-"),
        s.effective_weight + (s.effective_weight !== s.weight ? "/" + s.weight : ""),
        s.active, s.requests, rate, s.errors, errPct, ms(s.latency.p50), ms(s.latency.p99),
        s.selections, s.codes["2xx"], s.codes["4xx"], s.codes["5xx"],
        el("td", {class: "l wrap"}, checkText(b.health))
      ], {class: "backend", "data-backend": s.id, "data-state": state, "data-color": color[1],
          style: "background:" + color[0] + ";" + fg}));
    }
    t.append(row([el("td", {class: "l"}, "Total"), el("td", {class: "l"}, ""),
      el("td", {class: "l"}, ps.healthy ? "serving" : "NO BACKEND"), "", "",
      pool.active, pool.requests, "", pool.errors, "", ms(pool.latency.p50),
      ms(pool.latency.p99), pool.selections, pool.codes["2xx"], pool.codes["4xx"],
      pool.codes["5xx"], el("td", {class: "l"}, pool.no_backend + " without backend")],
      {class: "total"}));
    sections.push(el("section", {},
      el("h2", {}, "pool " + pool.name,
         el("span", {class: "sub"}, (ps.algorithm || pool.algorithm) + " \u00b7 " +
            (ps.strategy || "") + " \u00b7 " + (ps.selectable || 0) + "/" +
            (ps.backends || 0) + " selectable")),
      drawDecision(ps.decision, clustered), t));
  }
  box.replaceChildren(...sections);
  previous = {time: now, backends: seen};
}
function drawChecks(data) {
  const t = document.getElementById("checks");
  t.replaceChildren(head(["Target", "Check", "Status", "Result", "Latency", "Passes",
    "Fails", "Last change", "Reason"], [0, 1, 2, 8]));
  if (!data.checks.length) {
    t.append(row([el("td", {class: "l", colspan: "9"},
      data.enabled ? "no health checks configured" : "health checking not running")]));
  }
  for (const c of data.checks) {
    const color = (COLORS[c.status] || ["#fff"])[0];
    t.append(row([el("td", {class: "l"}, (c.node ? "node " : c.pool + "/") + c.backend +
        " " + c.target), el("td", {class: "l"}, c.name || c.type),
      el("td", {class: "l", style: "background:" + color}, c.status),
      c.last_result || "-", ms(c.latency), c.consecutive_passes, c.consecutive_fails,
      when(c.last_change), el("td", {class: "l wrap"}, c.last_reason)],
      {"data-check": c.pool + "/" + c.backend + "/" + c.type}));
  }
}
function drawEvents(data) {
  const t = document.getElementById("events");
  t.replaceChildren(head(["Time", "Pool", "Kind", "Backend", "Strategy", "Reason"],
    [0, 1, 2, 3, 4, 5]));
  if (!data.events.length) {
    t.append(row([el("td", {class: "l", colspan: "6"}, "no failover event")]));
  }
  for (const e of data.events) {
    t.append(row([el("td", {class: "l"}, when(e.time)), el("td", {class: "l"}, e.pool),
      el("td", {class: "l"}, e.kind), el("td", {class: "l"}, e.backend || "-"),
      el("td", {class: "l"}, e.strategy), el("td", {class: "l wrap"}, e.reason)]));
  }
}
function yesNo(v) { return v === true ? "yes" : v === false ? "no" : "-"; }
function drawCluster(c) {
  const summary = document.getElementById("cluster-summary");
  summary.setAttribute("data-cluster-mode", c.mode);
  summary.setAttribute("data-cluster-state", c.mode === "cluster" ? c.state : "standalone");
  if (c.mode !== "cluster") {
    summary.replaceChildren(...kv([["mode", "standalone (one node: no cluster, no Redis)"]]));
  } else {
    const redis = c.redis || {};
    const state = c.state === "ok" ? c.state : el("span", {class: "warn"}, c.state);
    summary.replaceChildren(...kv([["state", state], ["leader", c.leader || "none"],
      ["term", c.term], ["this node", c.role],
      ["quorum", c.quorum + (c.has_quorum ? " (met)" : " (NOT met)")],
      ["config version", c.config_version],
      ["redis", redis.url + (redis.reachable === false ? " unreachable: " + redis.error : "")],
      ["health consensus", c.health_consensus],
      ["local fallback", c.local_fallback ? "on" : "off"],
      ["stale writes refused", c.stale_writes_refused || null]]));
  }
  const t = document.getElementById("cluster");
  t.replaceChildren(head(["Node", "Address", "State", "Role", "Leader", "Config version",
    "Term", "Healthy", "Reachable", "Last seen"], [0, 1, 2, 3]));
  for (const n of c.nodes) {
    const version = n.config_version === undefined ? "-" : "v" + n.config_version +
      (c.config_version !== undefined && n.state === "up" &&
       n.config_version !== c.config_version ? " (this node: v" + c.config_version + ")" : "");
    t.append(row([el("td", {class: "l"}, n.id + (n.self ? " (this node)" : "")),
      el("td", {class: "l"}, n.address || "-"), el("td", {class: "l"}, n.state),
      el("td", {class: "l"}, n.role),
      n.id === c.leader ? "yes (term " + c.term + ")" : "", version,
      n.term === undefined ? "-" : n.term, yesNo(n.healthy),
      n.self ? "this node" : yesNo(n.reachable), when(n.last_seen)],
      {"data-node": n.id, "data-node-state": n.state,
       // yellow: its record is live but its admin API does not answer this node
       style: "background:" + (n.state !== "up" ? "#ff8c8c" :
                               n.reachable === false ? "#ffe28a" : "#9be09b")}));
  }
}
async function refresh() {
  const err = document.getElementById("error");
  try {
    const [status, stats, backends, checks, events, cluster] = await Promise.all([
      get(API + "/status"), get(API + "/load-balancer/stats"),
      get(API + "/load-balancer/backends"), get(API + "/health-checks"),
      get(API + "/failover/events?limit=20"), get(API + "/cluster/status")]);
    document.getElementById("node").textContent = status.node_id;
    document.getElementById("role").textContent = status.role;
    document.getElementById("version").textContent = status.version;
    document.getElementById("uptime").textContent = dur(status.uptime);
    document.getElementById("config").textContent = status.config_version;
    document.getElementById("reloads").textContent =
      status.reloads.ok + " ok / " + status.reloads.error + " failed";
    const h = document.getElementById("healthy");
    h.textContent = status.healthy ? "HEALTHY" : "UNHEALTHY";
    h.className = "badge " + (status.healthy ? "ok" : "bad");
    drawPools(status, stats, backends, cluster.mode === "cluster");
    drawChecks(checks);
    drawEvents(events);
    drawCluster(cluster);
    document.getElementById("updated").textContent = new Date().toLocaleTimeString();
    document.body.setAttribute("data-loaded", "1");
    err.style.display = "none";
  } catch (e) {
    err.textContent = "cannot refresh: " + e.message;
    err.style.display = "block";
  }
}
document.getElementById("save").addEventListener("click", () => {
  localStorage.setItem("haproxyd.token", document.getElementById("token").value);
  document.getElementById("login").style.display = "none";
  refresh();
});
refresh();
setInterval(refresh, every * 1000);
</script>
</body>
</html>
"""

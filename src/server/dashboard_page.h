// The page served at `/`: live requests, their Omega and their routing heatmaps. Static HTML and
// JavaScript (no external resources); it polls /dashboard.json once a second and draws one
// heatmap per request: rows = layers, columns = KV heads, orange = sparse mode, blue = retrieval
// mode (the colours of the routing-map PNG, report.h).
#pragma once

namespace elastic::server_detail {

inline constexpr const char* kDashboardPage = R"HTML(<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>elastic serve</title>
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 20px; color: #222; background: #fafafa; }
  h1 { font-size: 20px; margin: 0 0 4px 0; }
  #summary { color: #555; margin-bottom: 12px; }
  table { border-collapse: collapse; background: #fff; }
  th, td { border-bottom: 1px solid #ddd; padding: 6px 10px; text-align: left; vertical-align: top; }
  th { background: #f0f0f0; }
  .num { text-align: right; font-variant-numeric: tabular-nums; }
  .heat { display: inline-grid; gap: 1px; background: #ccc; border: 1px solid #ccc; }
  .cell { width: 14px; height: 14px; }
  .sa { background: #f28e2b; }
  .ra { background: #4e79a7; }
  .na { background: #bbb; }
  .legend span { display: inline-block; width: 12px; height: 12px; vertical-align: middle; margin: 0 4px 0 12px; }
  .state-running { color: #0a7d2c; font-weight: 600; }
  .state-waiting { color: #a66b00; }
</style>
</head>
<body>
<h1>elastic serve</h1>
<div id="summary">loading...</div>
<div class="legend">routing: <span class="ra"></span>retrieval (FA / XA) <span class="sa"></span>sparse (SSA / XA); rows = layers, columns = KV heads</div>
<p></p>
<table>
  <thead><tr><th>id</th><th>state</th><th class="num">prompt</th><th class="num">generated</th>
  <th class="num">&Omega;<sub>MSR</sub></th><th class="num">&Omega;<sub>ESR</sub></th>
  <th class="num">KV bytes / dense</th><th>routing</th></tr></thead>
  <tbody id="rows"></tbody>
</table>
<script>
"use strict";
function fmt(x, digits) { return (x === null || x === undefined) ? "-" : x.toFixed(digits); }
function heatmap(decisions) {
  const grid = document.createElement("div");
  grid.className = "heat";
  if (!decisions || decisions.length === 0) { grid.textContent = "not routed yet"; return grid; }
  grid.style.gridTemplateColumns = "repeat(" + decisions[0].length + ", 14px)";
  for (const layer of decisions)
    for (const d of layer) {
      const c = document.createElement("div");
      c.className = "cell " + (d === 1 ? "ra" : d === 0 ? "sa" : "na");
      grid.appendChild(c);
    }
  return grid;
}
async function refresh() {
  try {
    const r = await fetch("/dashboard.json", { cache: "no-store" });
    const j = await r.json();
    const s = j.stats;
    document.getElementById("summary").textContent =
      j.model + " | running " + s.running + ", waiting " + s.waiting + " | KV pages " +
      s.kv_pages_used + " / " + s.kv_pages_total + " | requests " + s.finished + " finished, " +
      s.cancelled + " cancelled | tokens " + s.generated_tokens + " | mean " + "\u03a9_MSR " +
      fmt(s.omega_msr_mean, 3);
    const body = document.getElementById("rows");
    body.replaceChildren();
    for (const q of j.requests) {
      const tr = document.createElement("tr");
      const cells = [q.id, q.state, q.prompt_tokens, q.completion_tokens, fmt(q.omega_msr, 3),
                     fmt(q.omega_esr, 3), q.kv_bytes + " / " + q.kv_bytes_dense];
      cells.forEach((v, i) => {
        const td = document.createElement("td");
        td.textContent = v;
        if (i >= 2) td.className = "num";
        if (i === 1) td.className = "state-" + v;
        tr.appendChild(td);
      });
      const td = document.createElement("td");
      td.appendChild(heatmap(q.decisions));
      tr.appendChild(td);
      body.appendChild(tr);
    }
    document.body.dataset.ready = "1";
  } catch (e) {
    document.getElementById("summary").textContent = "server unreachable: " + e;
  }
}
refresh();
setInterval(refresh, 1000);
</script>
</body>
</html>
)HTML";

}  // namespace elastic::server_detail

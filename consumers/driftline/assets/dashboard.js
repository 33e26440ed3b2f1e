// The driftline dashboard: polls /api/dashboard and draws it as inline SVG.
// No libraries: everything here is served by the driftline binary itself.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
  "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#637939"];
const POLL_MS = 2000;

let data = null;
let lastRevision = -1;

function el(tag, attrs, parent, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  if (parent) parent.appendChild(e);
  return e;
}

function day(ms) { return new Date(ms).toISOString().slice(0, 10); }
function time(ms) { return new Date(ms).toISOString().slice(0, 16).replace("T", " "); }
function fmt(x, digits) {
  if (x === null || x === undefined) return "–";
  const a = Math.abs(x);
  if (a !== 0 && (a < 0.001 || a >= 1e6)) return x.toExponential(2);
  return x.toFixed(digits === undefined ? 3 : digits);
}

// Line chart: series = [{name, color, points: [[x, y], ...]}]; thresholds = [{y, label}].
// Writes the number of points drawn into data-points, which the browser test reads.
// markers = [{x, label}]: vertical lines, e.g. where a new model version starts serving.
function lineChart(svg, series, thresholds, yLabel, markers) {
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  const [, , W, H] = svg.getAttribute("viewBox").split(" ").map(Number);
  const m = { l: 56, r: 14, t: 10, b: 28 };
  const pts = series.flatMap(s => s.points).filter(p => p[1] !== null && isFinite(p[1]));
  svg.setAttribute("data-points", String(pts.length));
  if (pts.length === 0) {
    el("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "empty" }, svg, "waiting for data…");
    return;
  }
  let x0 = Math.min(...pts.map(p => p[0])), x1 = Math.max(...pts.map(p => p[0]));
  if (x0 === x1) { x0 -= 43200000; x1 += 43200000; }
  const ys = pts.map(p => p[1]).concat(thresholds.map(t => t.y));
  let y0 = Math.min(0, ...ys), y1 = Math.max(...ys);
  if (y0 === y1) y1 = y0 + 1;
  y1 += (y1 - y0) * 0.05;
  const sx = x => m.l + (x - x0) / (x1 - x0) * (W - m.l - m.r);
  const sy = y => H - m.b - (y - y0) / (y1 - y0) * (H - m.t - m.b);

  for (let i = 0; i <= 4; i++) {
    const y = y0 + (y1 - y0) * i / 4;
    el("line", { x1: m.l, x2: W - m.r, y1: sy(y), y2: sy(y), class: "grid" }, svg);
    el("text", { x: m.l - 6, y: sy(y) + 4, "text-anchor": "end" }, svg, fmt(y, 2));
  }
  for (let i = 0; i <= 4; i++) {
    const x = x0 + (x1 - x0) * i / 4;
    el("text", { x: sx(x), y: H - 8, "text-anchor": i === 0 ? "start" : i === 4 ? "end" : "middle" }, svg, day(x));
  }
  if (yLabel) el("text", { x: m.l + 6, y: m.t + 2, "dominant-baseline": "hanging" }, svg, yLabel);
  for (const k of markers || []) {
    el("line", { x1: sx(k.x), x2: sx(k.x), y1: m.t, y2: H - m.b, class: "marker" }, svg);
    el("text", { x: sx(k.x) + 3, y: m.t + 2, "dominant-baseline": "hanging", class: "marker-label" }, svg, k.label);
  }
  for (const t of thresholds) {
    el("line", { x1: m.l, x2: W - m.r, y1: sy(t.y), y2: sy(t.y), class: "threshold" }, svg);
    el("text", { x: W - m.r - 2, y: sy(t.y) - 4, "text-anchor": "end", fill: "#c0392b" }, svg, t.label);
  }
  for (const s of series) {
    const p = s.points.filter(q => q[1] !== null && isFinite(q[1]));
    if (p.length === 0) continue;
    const d = p.map((q, i) => (i ? "L" : "M") + sx(q[0]).toFixed(1) + " " + sy(q[1]).toFixed(1)).join(" ");
    el("path", { d, fill: "none", stroke: s.color, "stroke-width": 1.8, "data-series": s.name }, svg);
    if (p.length < 60) {
      for (const q of p) el("circle", { cx: sx(q[0]), cy: sy(q[1]), r: 2.5, fill: s.color }, svg);
    }
  }
}

function drawDrift() {
  const metric = document.getElementById("metric").value;
  const names = [...new Set(data.reports.flatMap(r => Object.keys(r.features)))].sort();
  const series = names.map((name, i) => ({
    name,
    color: COLORS[i % COLORS.length],
    points: data.reports.filter(r => r.features[name]).map(r => [r.window_end, r.features[name][metric]]),
  })).filter(s => s.points.some(p => p[1] !== null));
  const thresholds = [];
  if (metric === "psi" && data.thresholds.psi !== null) thresholds.push({ y: data.thresholds.psi, label: "PSI threshold " + data.thresholds.psi });
  if (metric === "wasserstein_norm" && data.thresholds.wasserstein_norm !== null) {
    thresholds.push({ y: data.thresholds.wasserstein_norm, label: "Wasserstein threshold " + data.thresholds.wasserstein_norm });
  }
  // The first report of each model version: where a retrained model took over.
  const markers = data.reports
    .filter((r, i) => i > 0 && r.model_version !== data.reports[i - 1].model_version)
    .map(r => ({ x: r.window_end, label: "v" + r.model_version }));
  lineChart(document.getElementById("chart-drift"), series, thresholds, metric, markers);
  const legend = document.getElementById("legend-drift");
  legend.textContent = "";
  for (const s of series) {
    const span = document.createElement("span");
    const swatch = document.createElement("i");
    swatch.style.background = s.color;
    span.appendChild(swatch);
    span.appendChild(document.createTextNode(s.name));
    legend.appendChild(span);
  }
}

function drawDays() {
  lineChart(document.getElementById("chart-prediction"),
    [{ name: "mean prediction", color: COLORS[0], points: data.days.map(d => [d.day, d.prediction_mean]) }], [], "mean");
  lineChart(document.getElementById("chart-error"),
    [{ name: "MAE", color: COLORS[3], points: data.days.map(d => [d.day, d.mean_abs_error]) }], [], "MAE");
}

function cell(tr, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  tr.appendChild(td);
  return td;
}

function fill(table, rows) {
  const body = table.querySelector("tbody");
  body.textContent = "";
  for (const r of rows) body.appendChild(r);
  table.setAttribute("data-rows", String(rows.length));
}

function metricText(m) {
  const keys = ["mae", "rmse", "accuracy"].filter(k => k in m);
  return (keys.length ? keys : Object.keys(m).slice(0, 3)).map(k => k + " " + fmt(m[k])).join(", ") || "–";
}

function drawModels() {
  const rows = [...data.models].reverse().map(m => {
    const tr = document.createElement("tr");
    cell(tr, "v" + m.version);
    cell(tr, m.status.toLowerCase().replace("_", " "), m.status);
    cell(tr, m.trigger);
    cell(tr, m.algorithm);
    cell(tr, time(m.published_at));
    cell(tr, m.train_rows + " / " + m.holdout_rows, "num");
    cell(tr, metricText(m.metrics));
    cell(tr, Object.keys(m.incumbent_metrics).length ? metricText(m.incumbent_metrics) : "–");
    return tr;
  });
  fill(document.getElementById("models"), rows);
}

function drawSteps() {
  const rows = [...data.steps].reverse().map(s => {
    const tr = document.createElement("tr");
    cell(tr, time(s.published_at));
    cell(tr, "v" + s.version);
    const share = s.traffic_share === null ? "" : " (" + Math.round(s.traffic_share * 100) + "% of requests)";
    cell(tr, s.status.toLowerCase().replace("_", " ") + share, s.status);
    return tr;
  });
  fill(document.getElementById("steps"), rows);
}

function drawLatest() {
  const r = data.latest;
  if (!r) return;
  document.getElementById("latest-meta").textContent =
    `${r.model} v${r.model_version}, window ${time(r.window.start_time)} → ${time(r.window.end_time)}, ${r.window.count} rows: ${r.decision} (share drifted ${fmt(r.share_drifted, 2)})`;
  document.getElementById("latest-reason").textContent = r.reason;
  // The prediction's own drift is listed last, under its name in the report.
  fill(document.getElementById("latest"), r.features.concat(r.prediction ? [r.prediction] : []).map(f => {
    const tr = document.createElement("tr");
    cell(tr, f.name);
    cell(tr, f.kind.toLowerCase());
    for (const k of ["psi", "ks_d", "ks_p", "wasserstein_norm", "jensen_shannon", "chi2_p", "missing_share"]) cell(tr, fmt(f[k]), "num");
    // The signal that fired, with its line; every signal and how its line was set on hover.
    const fired = (f.signals || []).find(s => s.fired);
    const td = cell(tr, f.drifted ? "yes" + (fired ? ` (${fired.name} ${fmt(fired.value)} vs ${fmt(fired.threshold)})` : "") : "no", f.drifted ? "drifted" : "");
    td.title = (f.signals || []).map(s => `${s.name} ${fmt(s.value)} vs ${fmt(s.threshold)} (${s.method})`).join("\n");
    return tr;
  }));
  // Realised metrics, then the window-wide checks: the accuracy estimated before labels
  // (with its band, beside the realised one) and the multivariate reconstruction error.
  const row = (name, current, reference, signal) => {
    const tr = document.createElement("tr");
    cell(tr, name);
    cell(tr, current, "num");
    cell(tr, fmt(reference), "num");
    const td = cell(tr, signal ? `${signal.name} ${fmt(signal.value)} vs ${fmt(signal.threshold)}` : "–",
      signal && signal.fired ? "drifted" : "");
    if (signal) td.title = signal.method;
    return tr;
  };
  const rows = r.performance.map(p => row(p.metric, fmt(p.current), p.reference, null));
  const e = r.estimated;
  if (e) {
    const realised = e.realised === null ? "" : `, realised ${fmt(e.realised)}`;
    rows.push(row(e.metric + " estimated before labels",
      `${fmt(e.value)} (${fmt(e.lower)}–${fmt(e.upper)})${realised}`, e.reference, e.signal));
  }
  if (r.multivariate) rows.push(row("reconstruction error", fmt(r.multivariate.value), null, r.multivariate));
  fill(document.getElementById("performance"), rows);
}

function draw() {
  if (!data) return;
  drawDrift();
  drawDays();
  drawModels();
  drawSteps();
  drawLatest();
  const predictions = data.days.reduce((n, d) => n + d.predictions, 0);
  document.getElementById("status").textContent =
    `${data.reports.length} reports · ${predictions} predictions · ${data.models.length} model versions · updated ${new Date().toLocaleTimeString()}`;
  document.body.setAttribute("data-revision", String(data.revision));
}

async function poll() {
  try {
    const res = await fetch("/api/dashboard", { cache: "no-store" });
    if (!res.ok) throw new Error(res.status + " " + res.statusText);
    const next = await res.json();
    if (next.revision !== lastRevision) {
      data = next;
      lastRevision = next.revision;
      draw();
    }
  } catch (e) {
    document.getElementById("status").textContent = "cannot reach driftline: " + e.message;
  }
  setTimeout(poll, POLL_MS);
}

document.getElementById("metric").addEventListener("change", draw);
poll();

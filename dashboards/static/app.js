// vidmill dashboard front end: plain JS, Vega-Lite charts from server aggregates.
"use strict";
const PAGE = JSON.parse(document.getElementById("page-data").textContent);
const fmt = (x, d = 3) => (x === null || x === undefined) ? "–" : typeof x !== "number" ? String(x)
  : (Number.isInteger(x) ? x.toLocaleString() : Number(x).toPrecision(d));

function histogramSpec(hist, lines, title) {
  const rows = [];
  for (const b of hist.bins || []) {
    rows.push({start: b.start, end: b.end, n: b.kept, status: "kept"});
    rows.push({start: b.start, end: b.end, n: b.rejected, status: "rejected"});
  }
  const rules = (lines || []).filter(l => l.value !== null && l.value !== undefined)
    .map(l => ({value: l.value, label: `${l.setting} ${l.value}`}));
  const layers = [{
    data: {values: rows}, mark: {type: "bar", tooltip: true},
    encoding: {
      x: {field: "start", type: "quantitative", bin: {binned: true}, title: null, scale: {zero: false}},
      x2: {field: "end"}, y: {field: "n", type: "quantitative", stack: true, title: "clips"},
      color: {field: "status", type: "nominal", scale: {domain: ["kept", "rejected"], range: ["#4c78a8", "#f58518"]}, legend: null},
    },
  }];
  if (rules.length) layers.push({
    data: {values: rules}, mark: {type: "rule", color: "#d62728", strokeWidth: 2, strokeDash: [4, 2]},
    encoding: {x: {field: "value", type: "quantitative"}, tooltip: {field: "label"}},
  });
  return {$schema: "https://vega.github.io/schema/vega-lite/v6.json", title: {text: title, fontSize: 12},
          width: "container", height: 110, layer: layers,
          resolve: {scale: {x: "shared"}}, config: {view: {stroke: null}}};
}

function categorySpec(data, title, rejecting) {
  const rows = [];
  for (const v of data.values || []) {
    rows.push({value: v.value, n: v.kept, status: "kept"});
    rows.push({value: v.value, n: v.rejected, status: "rejected"});
  }
  return {$schema: "https://vega.github.io/schema/vega-lite/v6.json",
          title: {text: title + (rejecting && rejecting.length ? ` (rejects: ${rejecting.join(", ")})` : ""), fontSize: 12},
          width: "container", height: 110, data: {values: rows}, mark: {type: "bar", tooltip: true},
          encoding: {x: {field: "value", type: "nominal", title: null, sort: "-y"},
                     y: {field: "n", type: "quantitative", stack: true, title: "clips"},
                     color: {field: "status", type: "nominal", scale: {domain: ["kept", "rejected"], range: ["#4c78a8", "#f58518"]}, legend: null}},
          config: {view: {stroke: null}}};
}

const charts = {};  // column -> {el, hist, chart}
function drawChart(key, spec) {
  const c = charts[key];
  return vegaEmbed(c.el, spec, {actions: false, renderer: "svg"}).then(r => { c.view = r.view; });
}

async function loadCharts(run, container, list, histograms) {
  for (const chart of list) {
    const el = document.createElement("div");
    el.className = "chart"; el.dataset.column = chart.column;
    container.appendChild(el);
    const key = `${run}:${chart.column}`;
    charts[key] = {el, chart, lines: chart.lines};
  }
  await Promise.all(list.map(async chart => {
    const key = `${run}:${chart.column}`;
    const data = histograms ? histograms[chart.column] : await (await fetch(`/api/hist?run=${run}&column=${encodeURIComponent(chart.column)}`)).json();
    charts[key].data = data;
    if (chart.kind === "numeric" && !(data.bins || []).length) {
      charts[key].el.innerHTML = `<p class="empty"><b>${chart.column}</b>: no values (${fmt(data.missing)} clips without one)</p>`;
      return;
    }
    const spec = chart.kind === "category" ? categorySpec(data, chart.column, chart.rejecting)
      : histogramSpec(data, chart.lines, `${chart.column}${data.missing ? ` (${fmt(data.missing)} without a value)` : ""}`);
    await drawChart(key, spec);
  }));
  document.body.dataset.chartsReady = "1";
}

// ---------------- what-if ----------------
function setupWhatIf(run) {
  const box = document.getElementById("sliders");
  if (!box) return;
  document.getElementById("kept-now").textContent = fmt(PAGE.kept_now);
  document.getElementById("hours-now").textContent = fmt(PAGE.hours_now);
  const inputs = {};
  for (const s of PAGE.sliders) {
    const div = document.createElement("div");
    div.className = "slider";
    const step = (s.max - s.min) / 1000 || 0.001;
    div.innerHTML = `<label><span>${s.setting} <span class="muted">(${s.reasons.join(", ")})</span></span>
      <input type="number" step="any" value="${s.value}" data-num="${s.setting}" style="width:7em"></label>
      <input type="range" min="${s.min}" max="${s.max}" step="${step}" value="${s.value}" data-setting="${s.setting}" id="slider-${s.setting}">`;
    box.appendChild(div);
    const range = div.querySelector("input[type=range]"), num = div.querySelector("input[type=number]");
    inputs[s.setting] = {range, num, base: s.value, div, columns: s.columns};
    range.addEventListener("input", () => { num.value = Number(range.value).toPrecision(4); changed(); });
    num.addEventListener("input", () => { range.value = num.value; changed(); });
  }
  let timer = null, seq = 0;
  function changed() { clearTimeout(timer); timer = setTimeout(ask, 60); }
  async function ask() {
    const params = new URLSearchParams({run});
    for (const [k, i] of Object.entries(inputs)) {
      const v = Number(i.num.value);
      i.div.classList.toggle("moved", v !== i.base);
      if (v !== i.base && Number.isFinite(v)) params.set(k, v);
      moveLine(run, i.columns, k, v);
    }
    const mine = ++seq;
    const r = await (await fetch(`/api/whatif?${params}`)).json();
    if (mine !== seq) return;
    show(r);
  }
  function show(r) {
    document.getElementById("whatif-kept").textContent = fmt(r.kept_new);
    document.getElementById("whatif-hours").textContent = fmt(r.hours_new);
    const d = r.kept_new - r.kept_now;
    document.getElementById("whatif-delta").textContent = d ? `(${d > 0 ? "+" : ""}${d.toLocaleString()})` : "";
    document.getElementById("set-line").textContent = r.set_line ? `vidmill curate INPUT OUTPUT ${r.set_line}` : "(thresholds as in the run)";
    document.getElementById("whatif-timing").textContent = `${r.groups} classes, ${(r.total_s * 1000).toFixed(0)} ms`;
    const t = document.getElementById("whatif-reasons");
    t.innerHTML = "<tr><th>reason</th><th class=r>now</th><th class=r>with these thresholds</th><th>setting</th></tr>" +
      r.reasons.map(x => `<tr class="${x.now !== x.new ? "changed" : ""}" data-reason="${x.name}"><td>${x.name}</td><td class=r>${x.now.toLocaleString()}</td><td class=r>${x.new.toLocaleString()}</td><td><code>${x.setting || ""}</code></td></tr>`).join("");
    document.body.dataset.whatifSeq = String(Number(document.body.dataset.whatifSeq || 0) + 1);
  }
  document.getElementById("reset").addEventListener("click", () => {
    for (const i of Object.values(inputs)) { i.num.value = i.base; i.range.value = i.base; }
    changed();
  });
  ask();
}

function moveLine(run, columns, setting, value) {
  for (const col of columns || []) {
    const c = charts[`${run}:${col}`];
    if (!c || !c.data || c.chart.kind !== "numeric" || !(c.data.bins || []).length) continue;
    const lines = c.chart.lines.map(l => l.setting === setting ? {...l, value} : l);
    c.chart.lines = lines;
    drawChart(`${run}:${col}`, histogramSpec(c.data, lines, col));
  }
}

// ---------------- gallery ----------------
function setupGallery(run) {
  const tiles = [...document.querySelectorAll("#tiles .tile")];
  const player = document.getElementById("player"), video = document.getElementById("video");
  let current = -1;
  async function play(index) {
    if (index < 0 || index >= tiles.length) return;
    tiles.forEach(t => t.classList.remove("current"));
    current = index;
    const tile = tiles[index], id = tile.dataset.clip;
    tile.classList.add("current");
    tile.scrollIntoView({block: "nearest"});
    const info = await (await fetch(`/api/clip/${encodeURIComponent(id)}?run=${run}`)).json();
    const row = info.row;
    player.hidden = false;
    document.getElementById("player-title").textContent = id + (row.kept ? "" : "  (rejected: " + row.reject_reasons.join(", ") + ")");
    document.getElementById("player-source").textContent =
      `${row.source_uri} · ${fmt(row.start_s)}–${fmt(row.end_s)} s` + (info.playable ? ` · ${row.shard}` : " · played from its source span");
    video.innerHTML = "";
    const src = info.playable ? `/media/${run}/${encodeURIComponent(id)}.mp4` : `/preview/${run}/${encodeURIComponent(id)}.mp4`;
    video.src = src;
    const caps = row.captions_per_second || [];
    const list = document.getElementById("captions");
    list.innerHTML = caps.map((c, k) => `<li data-second="${k}">${escapeHtml(c)}</li>`).join("");
    list.start = 0;
    if (caps.length) {
      const track = document.createElement("track");
      track.kind = "captions"; track.label = "per-second captions"; track.srclang = "en"; track.default = true;
      track.src = `/media/${run}/${encodeURIComponent(id)}.vtt`;
      video.appendChild(track);
      track.track.mode = "showing";
      track.track.addEventListener("cuechange", () => highlight(track.track));
    }
    document.getElementById("summary").textContent = row.caption || "";
    const skip = new Set(["captions_per_second", "caption", "phashes", "rid"]);
    document.getElementById("scores").innerHTML = Object.entries(row).filter(([k]) => !skip.has(k))
      .map(([k, v]) => `<tr><td>${k}</td><td>${escapeHtml(Array.isArray(v) ? v.join(", ") : fmt(v, 4))}</td></tr>`).join("");
    const dups = document.getElementById("dup-members");
    dups.innerHTML = info.duplicates.length ? "<div style='width:100%'><b>duplicate group</b> " + escapeHtml(row.dup_group) + "</div>" +
      info.duplicates.map(d => `<figure class="tile ${d.kept ? "kept" : "rejected"}" data-dup="${escapeHtml(d.clip_id)}"><img src="/thumb/${run}/${encodeURIComponent(d.clip_id)}.jpg"><figcaption>${escapeHtml(d.clip_id)}<br>${d.kept ? "kept" : "dropped"}</figcaption></figure>`).join("") : "";
    dups.querySelectorAll("[data-dup]").forEach(f => f.addEventListener("click", () => {
      location.href = `/gallery?run=${run}&dups=1&play=${encodeURIComponent(f.dataset.dup)}`;
    }));
    video.play().catch(() => {});
  }
  function highlight(track) {
    const active = track.activeCues && track.activeCues.length ? track.activeCues[0] : null;
    document.querySelectorAll("#captions li").forEach(li => li.classList.toggle("active", !!active && li.dataset.second === active.id.slice(1)));
  }
  tiles.forEach((t, k) => t.addEventListener("click", () => play(k)));
  document.getElementById("close").addEventListener("click", () => { player.hidden = true; video.pause(); });
  document.addEventListener("keydown", e => {
    if (["INPUT", "SELECT", "TEXTAREA"].includes(e.target.tagName)) return;
    if (e.key === "ArrowRight" || e.key === "j") {
      if (current + 1 < tiles.length) play(current + 1); else if (PAGE.next) location.href = PAGE.next + "#first";
    } else if (e.key === "ArrowLeft" || e.key === "k") {
      if (current > 0) play(current - 1); else if (PAGE.prev) location.href = PAGE.prev + "#last";
    } else if (e.key === " " && !player.hidden) { e.preventDefault(); video.paused ? video.play() : video.pause(); }
    else if (e.key === "Escape") { player.hidden = true; video.pause(); }
  });
  if (PAGE.play) { const k = PAGE.clips.indexOf(PAGE.play); if (k >= 0) play(k); }
  else if (location.hash === "#first") play(0);
  else if (location.hash === "#last") play(tiles.length - 1);
}

function escapeHtml(s) { return String(s ?? "").replace(/[&<>"']/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c])); }

// ---------------- boot ----------------
const page = document.body.dataset.page;
if (page === "overview" || page === "report") {
  for (const [run, list] of Object.entries(PAGE.charts || {})) {
    const el = document.getElementById(`charts-${run}`);
    if (el) loadCharts(run, el, list, PAGE.histograms ? PAGE.histograms[run] : null);
  }
  if (page === "overview") setupWhatIf(PAGE.run);
}
if ((page === "compare" || page === "report") && PAGE.compare) {
  const el = document.getElementById("compare-charts");
  if (el) loadCompare(PAGE.compare, el);
}
if (page === "gallery") setupGallery(PAGE.run);

async function loadCompare(cmp, container) {
  for (const chart of cmp.charts.filter(c => c.kind === "numeric")) {
    const el = document.createElement("div"); el.className = "chart"; container.appendChild(el);
    const get = async run => cmp.histograms ? cmp.histograms[run][chart.column]
      : await (await fetch(`/api/hist?run=${run}&column=${encodeURIComponent(chart.column)}`)).json();
    const [a, b] = await Promise.all([get(cmp.a), get(cmp.b)]);
    const rows = [];
    for (const [name, h] of [["A", a], ["B", b]]) for (const x of h.bins || []) rows.push({mid: (x.start + x.end) / 2, n: x.kept + x.rejected, run: name});
    vegaEmbed(el, {$schema: "https://vega.github.io/schema/vega-lite/v6.json", title: {text: chart.column, fontSize: 12},
      width: "container", height: 110, data: {values: rows}, mark: {type: "line", interpolate: "step-after", point: false},
      encoding: {x: {field: "mid", type: "quantitative", title: null, scale: {zero: false}}, y: {field: "n", type: "quantitative", title: "clips"},
                 color: {field: "run", type: "nominal"}}}, {actions: false, renderer: "svg"});
  }
}

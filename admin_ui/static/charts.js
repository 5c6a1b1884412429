// wsplugin admin: live charts in plain SVG, fed by the dashboard's SSE stream.
// admin.js dispatches every snapshot and delta as a "wsadmin:update" event on document;
// this file only listens. No library, no inline style: colours live in charts.css.
"use strict";

(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const STEP_MS = 1000;         // one sample a second
  const KEEP = 300;             // five minutes at most
  const MIN_SPAN = 60;          // the x axis spans at least a minute, then grows to KEEP
  const W = 300, H = 80;        // the viewBox; the SVG stretches to its box
  const MAX_NODES = 6;

  const latest = { totals: {}, rates: {}, nodes: [] };
  const samples = [];           // {connections, in, out, drops, slow, nodes: {id: count}}
  let previous = null;          // the totals at the last sample, for per-second drops

  document.addEventListener("wsadmin:update", (event) => {
    const data = event.detail || {};
    if (data.totals) latest.totals = data.totals;
    if (data.rates) latest.rates = data.rates;
    if (data.nodes) latest.nodes = data.nodes;
  });

  function sample() {
    const t = latest.totals, r = latest.rates;
    const now = { dropped: t.dropped || 0, slow: t.slow_closes || 0, at: Date.now() };
    const seconds = previous ? Math.max(0.001, (now.at - previous.at) / 1000) : 1;
    const perNode = {};
    for (const node of latest.nodes || []) {
      if (node && node.id !== undefined) perNode[String(node.id)] = Number(node.connections) || 0;
    }
    samples.push({
      connections: t.connections || 0,
      in: r.messages_in || 0,
      out: r.messages_out || 0,
      drops: previous ? Math.max(0, now.dropped - previous.dropped) / seconds : 0,
      slow: previous ? Math.max(0, now.slow - previous.slow) / seconds : 0,
      nodes: perNode,
    });
    previous = now;
    while (samples.length > KEEP) samples.shift();
  }

  // ---------- drawing ----------
  function el(name, attrs) {
    const node = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    return node;
  }

  function niceMax(value) {
    if (value <= 1) return 1;
    const power = Math.pow(10, Math.floor(Math.log10(value)));
    for (const m of [1, 2, 5, 10]) if (value <= m * power) return m * power;
    return 10 * power;
  }

  function span(count) { return Math.max(MIN_SPAN, count); }

  function points(values, max, count) {
    const width = span(count);
    const offset = width - values.length;  // the newest sample is always at the right edge
    return values.map((v, i) => {
      const x = ((offset + i) / (width - 1)) * W;
      const y = H - (v / max) * (H - 2) - 1;
      return x.toFixed(1) + "," + y.toFixed(1);
    }).join(" ");
  }

  function format(value) {
    if (value >= 100 || Number.isInteger(value)) return Math.round(value).toLocaleString();
    return value.toFixed(1);
  }

  // series: [{key, label, values, cls}]; count: how many samples the chart holds
  function draw(chart, series, count) {
    const svg = chart.querySelector("svg");
    const max = niceMax(Math.max(1, ...series.flatMap((s) => s.values)));
    const lines = series.map((s) => el("polyline", {
      class: "series " + s.cls, points: points(s.values, max, count), "data-series": s.key,
    }));
    const grid = [0.25, 0.5, 0.75].map((f) => el("line", {
      class: "grid", x1: 0, x2: W, y1: (H * f).toFixed(1), y2: (H * f).toFixed(1),
    }));
    svg.replaceChildren(...grid, ...lines);
    chart.querySelector(".chart-max").textContent = format(max);
    const legend = chart.querySelector(".chart-legend");
    legend.replaceChildren(...series.map((s) => {
      const item = document.createElement("span");
      item.className = "key " + s.cls;
      const last = s.values.length ? s.values[s.values.length - 1] : 0;
      item.textContent = s.label + " " + format(last);
      return item;
    }));
    chart.dataset.samples = String(count);
    const seconds = span(count);
    chart.querySelector(".chart-span").textContent =
      (seconds % 60 ? seconds + " s" : seconds / 60 + " min") + " · now";
  }

  function column(key) { return samples.map((s) => s[key]); }

  function nodeSeries() {
    const last = samples.length ? samples[samples.length - 1].nodes : {};
    const ids = Object.keys(last).sort().slice(0, MAX_NODES);
    if (ids.length < 2) return [];       // one node: the total says it all
    return ids.map((id, i) => ({
      key: "node-" + id, label: "node " + id.slice(0, 6),
      values: samples.map((s) => s.nodes[id] || 0), cls: "node-" + i,
    }));
  }

  function render() {
    const charts = document.querySelectorAll("[data-chart]");
    for (const chart of charts) {
      const kind = chart.dataset.chart;
      if (kind === "connections") {
        draw(chart, [{ key: "connections", label: "total", values: column("connections"), cls: "s-total" },
          ...nodeSeries()], samples.length);
      } else if (kind === "messages") {
        draw(chart, [
          { key: "in", label: "in/s", values: column("in"), cls: "s-in" },
          { key: "out", label: "out/s", values: column("out"), cls: "s-out" },
        ], samples.length);
      } else if (kind === "drops") {
        draw(chart, [
          { key: "drops", label: "drops/s", values: column("drops"), cls: "s-bad" },
          { key: "slow", label: "slow closes/s", values: column("slow"), cls: "s-warn" },
        ], samples.length);
      }
    }
  }

  // ---------- the room view: one room, sampled once a second while it is open ----------
  // admin.js polls the open room every second and dispatches "wsadmin:room" with
  // {name, members, rate} (or {name, gone: true}); another room starts a new series.
  const room = { name: null, samples: [], gone: false };

  document.addEventListener("wsadmin:room", (event) => {
    const data = event.detail || {};
    if (data.name !== room.name) {
      room.name = data.name;
      room.samples = [];
    }
    room.gone = Boolean(data.gone);
    if (!room.gone) {
      room.samples.push({ members: Number(data.members) || 0, rate: Number(data.rate) || 0 });
      while (room.samples.length > KEEP) room.samples.shift();
    }
    renderRoom();
  });

  function renderRoom() {
    const count = room.samples.length;
    const values = (key) => room.samples.map((s) => s[key]);
    for (const chart of document.querySelectorAll("[data-room-chart]")) {
      chart.dataset.room = room.name || "";
      chart.querySelector(".chart-room").textContent = room.name || "";
      const kind = chart.dataset.roomChart;
      if (kind === "members") {
        draw(chart, [{ key: "members", label: "members", values: values("members"), cls: "s-total" }], count);
      } else if (kind === "rate") {
        draw(chart, [{ key: "rate", label: "msgs/s", values: values("rate"), cls: "s-out" }], count);
      }
      chart.classList.toggle("gone", room.gone);
      if (room.gone) chart.querySelector(".chart-span").textContent = "the room is gone";
    }
  }

  function tick() {
    sample();
    if (!document.hidden) render();
  }

  setInterval(tick, STEP_MS);
  window.addEventListener("load", tick);
})();

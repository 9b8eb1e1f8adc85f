// The local page: polls /api/state, redraws the devices and the chosen point's chart.
"use strict";
const T = document.getElementById("i18n").dataset;
const lang = document.documentElement.lang;
let chosen = localStorage.getItem("kbe-point") || "";

function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function fmt(v) {
  return typeof v === "number" ? (Number.isInteger(v) ? String(v) : v.toPrecision(5)) : String(v);
}

function deviceBox(d) {
  const box = el("div", {class: "dev " + d.status, id: "dev-" + d.name, "data-status": d.status});
  const head = el("div");
  head.append(el("b", {}, d.name), " ", el("span", {class: d.status + " status"}, d.status_text));
  if (d.poll_success !== null) head.append(" · " + Math.round(d.poll_success * 100) + "%");
  head.append(" · " + (d.age_s === null ? T.never : T.ago.replace("{s}", d.age_s)));
  box.append(head);
  if (d.status === "warn" || d.status === "fail") box.append(el("p", {class: "reason"}, d.detail + " " + d.advice));
  const table = el("table");
  for (const p of d.points) {
    const tr = el("tr", {"data-point": p.point});
    tr.append(el("td", {}, p.point), el("td", {class: p.good ? "value" : "value warn"}, fmt(p.value) + " " + p.unit));
    table.append(tr);
  }
  if (!d.points.length) box.append(el("p", {}, T.none));
  box.append(table);
  return box;
}

function draw(samples) {
  const line = document.getElementById("line");
  if (samples.length < 2) { line.setAttribute("points", ""); return; }
  const t0 = samples[0][0], t1 = samples[samples.length - 1][0];
  const vs = samples.map(s => s[1]);
  const lo = Math.min(...vs), hi = Math.max(...vs);
  const pts = samples.map(([t, v]) =>
    ((t - t0) / ((t1 - t0) || 1) * 318 + 1).toFixed(1) + "," + (119 - (v - lo) / ((hi - lo) || 1) * 118).toFixed(1));
  line.setAttribute("points", pts.join(" "));
  document.getElementById("chart-range").textContent = fmt(lo) + " … " + fmt(hi);
}

async function refresh() {
  let s;
  try {
    const r = await fetch("/api/state?lang=" + lang, {cache: "no-store"});
    if (r.status === 401) { location.href = "/login"; return; }
    s = await r.json();
  } catch (e) { return; }
  document.getElementById("clock").textContent = s.clock;
  document.getElementById("buffer-depth").textContent = s.buffer.depth ?? "-";
  document.getElementById("buffer-oldest").textContent = s.buffer.oldest_age_s === null ? "-" : s.buffer.oldest_age_s + " s";
  document.getElementById("sync").textContent = s.sync.text + (s.sync.last_error ? " (" + s.sync.last_error + ")" : "");
  document.getElementById("enrolment").textContent = s.sync.enrolment_text;
  const devs = document.getElementById("devices"), ctl = document.getElementById("control");
  devs.replaceChildren(); ctl.replaceChildren();
  const select = document.getElementById("point");
  const options = [];
  for (const d of s.devices.concat(s.control)) {
    (["lighting", "traffic", "camera"].includes(d.driver) ? ctl : devs).append(deviceBox(d));
    for (const p of d.points) if (typeof p.value === "number") options.push(d.name + "/" + p.point);
  }
  if (select.options.length !== options.length + 1) {
    select.replaceChildren(el("option", {value: ""}, T.choose));
    for (const o of options) select.append(el("option", {value: o}, o));
    select.value = chosen;
  }
  if (s.checks) showChecks(s.checks);
  if (chosen) {
    const [device, point] = chosen.split("/");
    const r = await fetch("/api/series?device=" + encodeURIComponent(device) + "&point=" + encodeURIComponent(point));
    draw((await r.json()).samples);
  }
}

function showChecks(checks) {
  const table = document.getElementById("checks");
  table.replaceChildren();
  for (const c of checks) {
    const tr = el("tr", {id: "check-" + c.id, "data-status": c.status});
    tr.append(el("td", {}, c.title), el("td", {class: c.status}, c.status_text), el("td", {}, c.detail + (c.advice ? " → " + c.advice : "")));
    table.append(tr);
  }
}

document.getElementById("point").addEventListener("change", e => {
  chosen = e.target.value; localStorage.setItem("kbe-point", chosen); refresh();
});
document.getElementById("run-checks").addEventListener("click", async () => {
  document.getElementById("checks-state").textContent = T.running;
  const r = await fetch("/api/checks?lang=" + lang, {method: "POST"});
  showChecks((await r.json()).checks);
  document.getElementById("checks-state").textContent = "";
});
refresh();
setInterval(refresh, 1000);

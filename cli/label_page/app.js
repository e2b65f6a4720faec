// spi label: the page. Plain JavaScript, no build step. The server (cli/label_server.py) owns the
// label file; this page shows shots, sends labels and moves on only once the server says the label
// is on disk.
"use strict";

const $ = (id) => document.getElementById(id);
const TOKEN = new URLSearchParams(location.search).get("token");
const AUTH = TOKEN ? { "X-Spi-Token": TOKEN } : {};
const DEFAULT_DISPLAY = { lo: 0, hi: 99.5, scale: "log", cmap: "magma" };
const PREFETCH = 2;
const CACHE_SIZE = 12;

let S = null;                 // state from /api/state
let cur = 0;                  // shot shown (dataset index)
let display = loadDisplay();
let view = { scale: 1, x: 0, y: 0, fitted: true };
const cache = new Map();      // key -> Promise<{url, sum, max}>
let queue = Promise.resolve();
let busy = 0;

// ---------------------------------------------------------------------------------------- server
async function api(path, body) {
  const opts = body === undefined
    ? { headers: AUTH }
    : { method: "POST", headers: { ...AUTH, "Content-Type": "application/json" }, body: JSON.stringify(body) };
  const resp = await fetch(path, opts);
  let data = null;
  try { data = await resp.json(); } catch (e) { data = null; }
  if (!resp.ok) throw new Error((data && data.error) || `${resp.status} ${resp.statusText}`);
  return data;
}

function enqueue(fn) {
  // actions run one after another, so fast typing never reorders labels
  busy++;
  queue = queue.then(fn).catch(toast).finally(() => { busy--; document.body.dataset.busy = busy ? "1" : "0"; });
  document.body.dataset.busy = "1";
  return queue;
}

function toast(err) {
  const t = $("toast");
  t.textContent = String(err && err.message ? err.message : err);
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.hidden = true; }, 6000);
}

// ---------------------------------------------------------------------------------------- images
function imageKey(i) {
  return `${i}|${display.lo}|${display.hi}|${display.scale}|${display.cmap}`;
}

function loadImage(i) {
  const key = imageKey(i);
  if (cache.has(key)) {
    const p = cache.get(key);
    cache.delete(key); cache.set(key, p);        // most recent last
    return p;
  }
  const q = new URLSearchParams({ lo: display.lo, hi: display.hi, scale: display.scale, cmap: display.cmap });
  const p = fetch(`/api/shot/${i}.png?${q}`, { headers: AUTH }).then(async (resp) => {
    if (!resp.ok) {
      let msg = `${resp.status}`;
      try { msg = (await resp.json()).error; } catch (e) { /* keep status */ }
      throw new Error(`shot ${i}: ${msg}`);
    }
    const blob = await resp.blob();
    return { url: URL.createObjectURL(blob), sum: resp.headers.get("X-Shot-Sum"), max: resp.headers.get("X-Shot-Max") };
  });
  p.catch(() => cache.delete(key));
  cache.set(key, p);
  while (cache.size > CACHE_SIZE) {
    const [oldKey, oldP] = cache.entries().next().value;
    cache.delete(oldKey);
    oldP.then((r) => URL.revokeObjectURL(r.url)).catch(() => {});
  }
  return p;
}

async function showImage(i) {
  const viewer = $("viewer");
  viewer.dataset.loaded = "false";
  const r = await loadImage(i);
  if (i !== cur) return;                       // the user moved on meanwhile
  const img = $("shot");
  await new Promise((resolve) => { img.onload = resolve; img.onerror = resolve; img.src = r.url; });
  if (i !== cur) return;
  if (view.fitted) fit();
  const units = S.units ? ` ${S.units}` : "";
  $("shot-stats").textContent = `Σ ${fmt(r.sum)}${units} · max ${fmt(r.max)}`;
  viewer.dataset.loaded = "true";
  viewer.dataset.shot = String(i);
  for (const j of upcoming(i, PREFETCH)) loadImage(j).catch(() => {});
}

function fmt(text) {
  const v = Number(text);
  if (!Number.isFinite(v)) return "–";
  if (Math.abs(v) >= 1e5 || (v !== 0 && Math.abs(v) < 1e-2)) return v.toExponential(2);
  return v.toLocaleString(undefined, { maximumFractionDigits: 1 });
}

// ---------------------------------------------------------------------------------------- navigation
const isGame = () => S.mode === "game";
const labelOf = (i) => S.labels[String(i)];

function upcoming(i, k) {
  const out = [];
  if (isGame()) {
    const order = S.game.order;
    for (let p = order.indexOf(i) + 1; p < order.length && out.length < k; p++) if (!labelOf(order[p])) out.push(order[p]);
  } else {
    for (let j = i + 1; j < S.n_shots && out.length < k; j++) if (!labelOf(j)) out.push(j);
  }
  return out;
}

function nextUnlabelled(i) {
  if (isGame()) {
    const order = S.game.order;
    const p = order.indexOf(i);
    for (let k = 1; k <= order.length; k++) {
      const j = order[(p + k) % order.length];
      if (!labelOf(j)) return j;
    }
    return null;
  }
  for (let k = 1; k <= S.n_shots; k++) {
    const j = (i + k) % S.n_shots;
    if (!labelOf(j)) return j;
  }
  return null;
}

function go(i) {
  if (!Number.isInteger(i) || i < 0 || i >= S.n_shots) { toast(`no shot ${i}: shots are 0–${S.n_shots - 1}`); return; }
  cur = i;
  render();
  showImage(i).catch(toast);
}

// ---------------------------------------------------------------------------------------- actions
function giveLabel(code) {
  if (!S || code >= S.class_names.length || (isGame() && S.game.finished)) return;
  const v = $("viewer");
  if (busy || v.dataset.loaded !== "true" || v.dataset.shot !== String(cur)) {
    // a label is only taken for a shot that is on screen, one at a time
    $("saved").textContent = "wait for the shot to appear";
    $("saved").className = "muted";
    return;
  }
  const name = S.class_names[code];
  const index = cur;
  flash(code);
  enqueue(async () => {
    const r = await api("/api/label", { index, label: name });
    S.labels[String(index)] = name;
    S.counts = r.counts;
    saved(`shot ${index} → ${pretty(name)}`);
    if (r.report) { S.game.finished = true; S.game.report = r.report; render(); showReport(r.report); return; }
    const next = nextUnlabelled(index);
    if (next === null) { render(); saved("every shot is labelled"); return; }
    if (cur === index) go(next); else render();
  });
}

function undo() {
  if (!S || (isGame() && S.game.finished)) return;
  enqueue(async () => {
    const r = await api("/api/undo", {});
    if (r.index === null) { saved("nothing to undo"); return; }
    if (r.label) S.labels[String(r.index)] = r.label; else delete S.labels[String(r.index)];
    S.counts = r.counts;
    saved(`undone: shot ${r.index}` + (r.label ? ` is ${pretty(r.label)} again` : ""));
    go(r.index);
  });
}

function skip() {
  if (isGame()) return;
  const next = nextUnlabelled(cur);
  if (next !== null) go(next);
}

function step(d) {
  if (isGame()) return;
  go(Math.min(S.n_shots - 1, Math.max(0, cur + d)));
}

function finishGame() {
  if (!isGame()) return;
  if (S.game.finished) { if (S.game.report) showReport(S.game.report); return; }
  const left = S.game.order.filter((i) => !labelOf(i)).length;
  if (left && !confirm(`${left} shots are not labelled yet. Score the ${S.game.order.length - left} labelled so far and end the game?`)) return;
  enqueue(async () => {
    const r = await api("/api/finish", {});
    S.game.finished = true; S.game.report = r.report;
    render(); showReport(r.report);
  });
}

function saved(text) {
  const el = $("saved");
  el.textContent = text;
  el.className = "muted ok";
}

function flash(code) {
  const b = document.querySelector(`.cls[data-code="${code}"]`);
  if (!b) return;
  b.classList.remove("flash"); void b.offsetWidth; b.classList.add("flash");
}

// ---------------------------------------------------------------------------------------- drawing the page
const pretty = (name) => name.replace(/_/g, " ").replace(/^./, (c) => c.toUpperCase());

function buildButtons() {
  const box = $("class-buttons");
  box.replaceChildren();
  S.class_names.forEach((name, code) => {
    const b = document.createElement("button");
    b.className = "cls";
    b.dataset.code = String(code);
    b.style.setProperty("--c", `var(--c${code % 4})`);
    b.title = `Label this shot ${pretty(name)} (key ${code + 1})`;
    const k = document.createElement("kbd"); k.textContent = String(code + 1);
    const n = document.createElement("span"); n.className = "name"; n.textContent = pretty(name);
    const c = document.createElement("span"); c.className = "count"; c.id = `count-${code}`;
    b.append(k, n, c);
    b.addEventListener("click", () => giveLabel(code));
    box.append(b);
  });
}

function render() {
  const label = labelOf(cur);
  const code = label ? S.class_names.indexOf(label) : -1;
  $("shot-index").textContent = `#${cur}`;
  const cl = $("current-label");
  cl.textContent = label ? pretty(label) : "";
  cl.dataset.code = String(code);
  document.querySelectorAll(".cls").forEach((b) => b.classList.toggle("current", Number(b.dataset.code) === code));
  S.class_names.forEach((name, k) => { $(`count-${k}`).textContent = String(S.counts[name] || 0); });
  let done, total;
  if (isGame()) {
    const order = S.game.order;
    total = order.length;
    done = order.filter((i) => labelOf(i)).length;
    $("shot-position").textContent = `${order.indexOf(cur) + 1} of ${total} in this game`;
  } else {
    total = S.n_shots;
    done = Object.keys(S.labels).length;
    $("shot-position").textContent = `of ${S.n_shots} (0–${S.n_shots - 1})`;
  }
  $("progress-text").textContent = `${done} / ${total} labelled`;
  $("progress-bar").style.width = `${total ? (100 * done) / total : 0}%`;
  document.body.dataset.shot = String(cur);
}

function showReport(rep) {
  const pct = (v) => (v === null || v === undefined ? "–" : `${(100 * v).toFixed(1)}%`);
  $("rep-accuracy").textContent = pct(rep.accuracy);
  $("rep-n").textContent = `accuracy over ${rep.n_shots} shots` +
    (rep.median_seconds_per_label ? ` · ${rep.median_seconds_per_label.toFixed(1)} s per shot (median)` : "");
  const names = rep.class_names;
  const cls = $("rep-classes");
  cls.replaceChildren(row("th", ["class", "shots", "you said", "precision", "recall"]));
  for (const n of names) {
    const c = rep.classes[n];
    cls.append(row("td", [pretty(n), c.support, c.predicted, pct(c.precision), pct(c.recall)]));
  }
  const conf = $("rep-confusion");
  conf.replaceChildren(row("th", ["truth \\ you", ...names.map(pretty)]));
  const peak = Math.max(1, ...rep.confusion.flat());
  rep.confusion.forEach((r, t) => {
    const tr = row("td", [pretty(names[t]), ...r]);
    [...tr.children].slice(1).forEach((td, p) => {
      td.className = "cell";
      const a = r[p] / peak;
      const hue = p === t ? "63,185,80" : "248,81,73";
      td.style.background = `rgba(${hue},${(0.08 + 0.6 * a).toFixed(3)})`;
    });
    conf.append(tr);
  });
  $("rep-files").textContent = rep.files && rep.files.length ? `saved: ${rep.files.join("  ·  ")}` : "";
  $("report").hidden = false;
  document.body.dataset.finished = "1";
  $("btn-finish").textContent = "Show score";
}

function row(tag, cells) {
  const tr = document.createElement("tr");
  for (const c of cells) { const el = document.createElement(tag); el.textContent = String(c); tr.append(el); }
  return tr;
}

// ---------------------------------------------------------------------------------------- display controls
function loadDisplay() {
  try {
    const d = JSON.parse(localStorage.getItem("spi-label-display") || "{}");
    return { ...DEFAULT_DISPLAY, ...d };
  } catch (e) { return { ...DEFAULT_DISPLAY }; }
}

function setDisplay(change) {
  // give the keys back to labelling once a control has been used
  if (document.activeElement instanceof HTMLSelectElement || document.activeElement instanceof HTMLInputElement) {
    if (document.activeElement.type !== "number") document.activeElement.blur();
  }
  display = { ...display, ...change };
  if (display.lo >= display.hi) display.lo = Math.max(0, display.hi - 0.5);
  try { localStorage.setItem("spi-label-display", JSON.stringify(display)); } catch (e) { /* private mode */ }
  syncControls();
  showImage(cur).catch(toast);
}

function syncControls() {
  $("lo").value = display.lo; $("lo-out").textContent = `${display.lo}%`;
  $("hi").value = display.hi; $("hi-out").textContent = `${display.hi}%`;
  $("scale").value = display.scale;
  $("cmap").value = display.cmap;
}

function applyView() {
  const img = $("shot");
  img.style.transform = `translate(${view.x}px, ${view.y}px) scale(${view.scale})`;
  $("zoom-level").textContent = `${Math.round(view.scale * 100)}%`;
}

function fit() {
  const v = $("viewer"), img = $("shot");
  if (!img.naturalWidth) return;
  const pad = 24;
  view.scale = Math.min((v.clientWidth - pad) / img.naturalWidth, (v.clientHeight - pad) / img.naturalHeight);
  view.x = (v.clientWidth - img.naturalWidth * view.scale) / 2;
  view.y = (v.clientHeight - img.naturalHeight * view.scale) / 2;
  view.fitted = true;
  applyView();
}

function zoom(factor, cx, cy) {
  const v = $("viewer");
  if (cx === undefined) { cx = v.clientWidth / 2; cy = v.clientHeight / 2; }
  const s = Math.min(64, Math.max(0.05, view.scale * factor));
  view.x = cx - ((cx - view.x) * s) / view.scale;
  view.y = cy - ((cy - view.y) * s) / view.scale;
  view.scale = s;
  view.fitted = false;
  applyView();
}

function wireViewer() {
  const v = $("viewer");
  v.addEventListener("wheel", (e) => {
    e.preventDefault();
    const r = v.getBoundingClientRect();
    zoom(Math.exp(-e.deltaY * 0.0015), e.clientX - r.left, e.clientY - r.top);
  }, { passive: false });
  let drag = null;
  v.addEventListener("pointerdown", (e) => { drag = { x: e.clientX, y: e.clientY }; v.classList.add("dragging"); v.setPointerCapture(e.pointerId); });
  v.addEventListener("pointermove", (e) => {
    if (!drag) return;
    view.x += e.clientX - drag.x; view.y += e.clientY - drag.y; view.fitted = false;
    drag = { x: e.clientX, y: e.clientY };
    applyView();
  });
  const end = () => { drag = null; v.classList.remove("dragging"); };
  v.addEventListener("pointerup", end);
  v.addEventListener("pointercancel", end);
  v.addEventListener("dblclick", fit);
  window.addEventListener("resize", () => { if (view.fitted) fit(); });
}

function wireControls() {
  for (const name of S.colormaps) {
    const o = document.createElement("option"); o.value = name; o.textContent = name; $("cmap").append(o);
  }
  if (!S.colormaps.includes(display.cmap)) display.cmap = DEFAULT_DISPLAY.cmap;
  $("lo").addEventListener("change", (e) => setDisplay({ lo: Number(e.target.value) }));
  $("hi").addEventListener("change", (e) => setDisplay({ hi: Number(e.target.value) }));
  $("lo").addEventListener("input", (e) => { $("lo-out").textContent = `${e.target.value}%`; });
  $("hi").addEventListener("input", (e) => { $("hi-out").textContent = `${e.target.value}%`; });
  $("scale").addEventListener("change", (e) => setDisplay({ scale: e.target.value }));
  $("cmap").addEventListener("change", (e) => setDisplay({ cmap: e.target.value }));
  $("btn-reset-display").addEventListener("click", () => setDisplay({ ...DEFAULT_DISPLAY }));
  $("btn-zoom-in").addEventListener("click", () => zoom(1.25));
  $("btn-zoom-out").addEventListener("click", () => zoom(0.8));
  $("btn-fit").addEventListener("click", fit);
  $("btn-undo").addEventListener("click", undo);
  $("btn-skip").addEventListener("click", skip);
  $("btn-prev").addEventListener("click", () => step(-1));
  $("btn-next").addEventListener("click", () => step(1));
  $("btn-finish").addEventListener("click", finishGame);
  $("btn-close-report").addEventListener("click", () => { $("report").hidden = true; });
  $("goto-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const i = Number($("goto").value);
    $("goto").blur();
    go(i);
  });
  syncControls();
}

function onKey(e) {
  if (!S) return;
  const t = e.target;
  if (t instanceof HTMLInputElement && t.type !== "range") {   // typing a shot number
    if (e.key === "Escape") t.blur();
    return;
  }
  if ((t instanceof HTMLInputElement || t instanceof HTMLSelectElement) && /^Arrow/.test(e.key)) return;
  if (e.ctrlKey && e.key.toLowerCase() === "z") { e.preventDefault(); undo(); return; }
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  const k = e.key;
  if (!$("report").hidden) { if (k === "Escape") $("report").hidden = true; return; }
  if (/^[1-9]$/.test(k)) { e.preventDefault(); giveLabel(Number(k) - 1); }
  else if (k === "u" || k === "U" || k === "Backspace") { e.preventDefault(); undo(); }
  else if (k === "s" || k === "S" || k === " ") { e.preventDefault(); skip(); }
  else if (k === "ArrowRight") { e.preventDefault(); step(1); }
  else if (k === "ArrowLeft") { e.preventDefault(); step(-1); }
  else if ((k === "g" || k === "G") && !isGame()) { e.preventDefault(); $("goto").focus(); $("goto").select(); }
  else if (k === "+" || k === "=") zoom(1.25);
  else if (k === "-") zoom(0.8);
  else if (k === "0") fit();
  else if (k === "]") setDisplay({ hi: Math.min(100, Math.round((display.hi + 0.1) * 10) / 10) });
  else if (k === "[") setDisplay({ hi: Math.max(display.lo + 0.5, Math.round((display.hi - 0.5) * 10) / 10) });
}

// ---------------------------------------------------------------------------------------- start
async function main() {
  try {
    S = await api("/api/state");
  } catch (err) {
    document.body.dataset.mode = "error";
    toast(`cannot load the dataset: ${err.message}`);
    return;
  }
  document.body.dataset.mode = S.mode;
  document.title = `spi label · ${S.dataset}`;
  $("dataset").textContent = `${S.dataset} · ${S.n_shots} shots · labels → ${S.labels_file}`;
  $("modebadge").textContent = isGame() ? "game of hit" : "labelling";
  $("goto").max = String(S.n_shots - 1);
  buildButtons();
  wireControls();
  wireViewer();
  document.addEventListener("keydown", onKey);
  // a clicked button must not keep the focus: Space and Enter belong to labelling
  document.addEventListener("click", (e) => { const b = e.target.closest("button"); if (b) b.blur(); });
  cur = S.position;
  render();
  await showImage(cur).catch(toast);
  if (isGame() && S.game.finished && S.game.report) showReport(S.game.report);
  document.body.dataset.ready = "1";
}

main();

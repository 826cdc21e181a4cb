// labelwise viewer: vanilla JS, no network access beyond this server.
// Everything that comes from the dataset, quality.csv or review files is inserted as text (textContent, Option,
// createElement), never as HTML; the server's Content-Security-Policy forbids inline script as a second line.
"use strict";

// The per-session token the server embedded in the page; every /api/ request carries it.
const TOKEN = document.querySelector('meta[name="labelwise-token"]').content;
const TOKEN_HEADER = "X-Labelwise-Token";
const DECISIONS = ["accept", "reject", "flag"];

const COLOURS = [[0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48], [145, 30, 180], [70, 240, 240]];
const state = { info: null, cases: [], queue: [], tab: "cases", caseId: null, meta: null, slice: 0, layers: {},
  tool: "off", edit: null, editSlice: null, images: {} };

const $ = (id) => document.getElementById(id);
const status = (msg) => { $("status").textContent = msg; };

async function api(path, options = {}) {
  const res = await fetch(path, { ...options, headers: { ...(options.headers || {}), [TOKEN_HEADER]: TOKEN } });
  const body = res.headers.get("content-type")?.includes("json") ? await res.json() : null;
  if (!res.ok) throw new Error((body && body.error) || res.statusText);
  return body;
}
const post = (path, payload) => api(path, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(payload) });

function layerColour(name) {
  if (name === "consensus") return [250, 250, 250];
  if (name === "pred") return [0, 200, 255];
  if (name === "correction" || name === "edit") return [255, 0, 255];
  const idx = state.meta ? state.meta.layers.indexOf(name) : 1;
  return COLOURS[1 + (idx % (COLOURS.length - 1))];
}

// ----------------------------------------------------------------------------------------------- case list
function renderList() {
  const ul = $("case-list");
  ul.replaceChildren();
  const text = $("filter-text").value.toLowerCase();
  const split = $("filter-split").value;
  const review = $("filter-review").value;
  const rows = state.tab === "queue" ? state.queue.map((q) => ({ id: q.case, quality: q.predicted_dice, review: q.review, extra: [q.source, q.structure].filter(Boolean).join(" · ") }))
    : state.cases;
  for (const c of rows) {
    if (text && !String(c.id).toLowerCase().includes(text)) continue;
    if (split && c.split !== split) continue;
    if (review && (review === "none" ? c.review : c.review !== review)) continue;
    const li = document.createElement("li");
    li.dataset.case = c.id;
    if (c.id === state.caseId) li.classList.add("selected");
    const q = c.quality == null ? "" : ` q=${Number(c.quality).toFixed(2)}`;
    const name = document.createElement("span");
    name.textContent = String(c.id);
    const small = document.createElement("small");
    small.textContent = `${q} ${c.extra || ""}`;
    name.appendChild(small);
    const badge = document.createElement("span");
    badge.className = "badge";
    if (DECISIONS.includes(c.review)) badge.classList.add(c.review);
    badge.textContent = c.review || c.split || "";
    li.append(name, badge);
    li.onclick = () => openCase(c.id);
    ul.appendChild(li);
  }
}

async function refreshLists() {
  state.cases = await api("/api/cases");
  if (state.info.has_qa) state.queue = await api("/api/queue");
  renderList();
}

// ----------------------------------------------------------------------------------------------- case view
async function openCase(id) {
  state.caseId = id;
  state.meta = await api(`/api/cases/${encodeURIComponent(id)}`);
  state.slice = Math.floor(state.meta.slices / 2);
  if (state.meta.labelled_slices && state.meta.labelled_slices.length) state.slice = state.meta.labelled_slices[Math.floor(state.meta.labelled_slices.length / 2)];
  state.edit = null;
  state.images = {};
  $("case-view").hidden = false;
  const tags = Object.entries(state.meta.image_labels).map(([k, v]) => `${k}=${v}`).join(", ");
  $("case-title").textContent = tags ? `${id} (${tags})` : id;
  $("slice").max = state.meta.slices - 1;
  $("slice").value = state.slice;
  $("slice-row").hidden = state.meta.slices <= 1;
  const div = $("layers");
  div.replaceChildren();
  for (const name of state.meta.layers.filter((l) => l !== "image")) {
    if (!(name in state.layers)) state.layers[name] = name === "consensus" || name === "pred";
    const id = `layer-${name.replace(/[^a-z0-9]/gi, "-")}`;
    const [r, g, b] = layerColour(name);
    const label = document.createElement("label");
    const box = document.createElement("input");
    box.type = "checkbox";
    box.id = id;
    box.checked = state.layers[name];
    box.onchange = (e) => { state.layers[name] = e.target.checked; draw(); };
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = `rgb(${r},${g},${b})`;  // CSSOM, not a style attribute: allowed by the CSP
    label.append(box, swatch, document.createTextNode(name), document.createElement("br"));
    div.appendChild(label);
  }
  const base = $("edit-base");
  base.replaceChildren();
  for (const name of ["correction", "consensus", "pred", ...state.meta.layers.filter((l) => l.startsWith("rater/"))]) {
    if (state.meta.layers.includes(name)) base.add(new Option(name, name));
  }
  base.add(new Option("empty", "empty"));
  const cls = $("paint-class");
  cls.replaceChildren();
  state.info.class_names.forEach((n, i) => { if (i > 0) cls.add(new Option(`${i} ${n}`, i)); });
  renderMeta();
  renderList();
  await draw();
}

function renderMeta() {
  const r = state.meta.reviews;
  $("review-state").textContent = r.length ? `last: ${r[r.length - 1].decision} by ${r[r.length - 1].user} ${r[r.length - 1].comment || ""}` : "not reviewed";
  $("versions").textContent = state.meta.versions.length ? `${state.meta.versions.length} saved version(s), last by ${state.meta.versions.at(-1).user}` : "no corrections";
}

function loadImage(layer, z) {
  const key = `${layer}@${z}`;
  if (state.images[key]) return state.images[key];
  const url = `/api/cases/${encodeURIComponent(state.caseId)}/slice/${z}.png?layer=${encodeURIComponent(layer)}`;
  // fetched (an <img> cannot send the token header) and decoded without colour conversion: label values survive
  state.images[key] = (async () => {
    const res = await fetch(url, { headers: { [TOKEN_HEADER]: TOKEN } });
    if (!res.ok) throw new Error(`cannot load ${layer} (${res.status})`);
    const bitmap = await createImageBitmap(await res.blob(), { colorSpaceConversion: "none", premultiplyAlpha: "none" });
    const c = document.createElement("canvas");
    c.width = bitmap.width; c.height = bitmap.height;
    const ctx = c.getContext("2d");
    ctx.drawImage(bitmap, 0, 0);
    bitmap.close();
    return ctx.getImageData(0, 0, c.width, c.height);
  })();
  return state.images[key];
}

function zoom(w, h) { return Math.max(1, Math.floor(512 / Math.max(w, h))); }

async function draw() {
  if (!state.meta) return;
  const z = state.slice;
  $("slice-label").textContent = `${z + 1}/${state.meta.slices}`;
  const base = await loadImage("image", z);
  const w = base.width, h = base.height, s = zoom(w, h);
  const out = new ImageData(w, h);
  out.data.set(base.data);
  const alpha = Number($("opacity").value) / 100;
  const blend = (i, rgb, a) => { for (let k = 0; k < 3; k++) out.data[i + k] = (1 - a) * out.data[i + k] + a * rgb[k]; };
  for (const [name, on] of Object.entries(state.layers)) {
    if (!on || !state.meta.layers.includes(name)) continue;
    const data = await loadImage(name, z);
    const graded = name === "prob" || name === "uncertainty";
    for (let p = 0, i = 0; p < w * h; p++, i += 4) {
      const v = data.data[i];
      if (!v || (graded && v < 13)) continue;
      if (graded) blend(i, [255, 255 * (1 - v / 255), 0], alpha * v / 255);
      else blend(i, name === "consensus" || name === "pred" || name === "correction" ? layerColour(name) : layerColour(name).map((c) => c * (0.6 + 0.4 * (v % 2))), alpha);
    }
  }
  if (state.edit && state.editSlice === z) {
    for (let p = 0, i = 0; p < w * h; p++, i += 4) if (state.edit[p]) blend(i, COLOURS[1 + ((state.edit[p] - 1) % (COLOURS.length - 1))], Math.max(alpha, 0.5));
  }
  const canvas = $("canvas");
  canvas.width = w * s; canvas.height = h * s;
  const tmp = document.createElement("canvas");
  tmp.width = w; tmp.height = h;
  tmp.getContext("2d").putImageData(out, 0, 0);
  const ctx = canvas.getContext("2d");
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(tmp, 0, 0, w * s, h * s);
}

// ----------------------------------------------------------------------------------------------- editing
async function ensureEdit() {
  if (state.edit && state.editSlice === state.slice) return;
  const baseName = $("edit-base").value;
  const img = await loadImage("image", state.slice);
  const buf = new Uint8Array(img.width * img.height);
  if (baseName !== "empty") {
    const data = await loadImage(baseName, state.slice);
    for (let p = 0; p < buf.length; p++) buf[p] = data.data[p * 4];
  }
  state.edit = buf; state.editSlice = state.slice; state.editWidth = img.width; state.editHeight = img.height;
  state.editBase = baseName;
}

async function paint(ev) {
  if (state.tool === "off") return;
  await ensureEdit();
  const canvas = $("canvas");
  const rect = canvas.getBoundingClientRect();
  const s = canvas.width / state.editWidth;
  const cx = Math.floor((ev.clientX - rect.left) * (canvas.width / rect.width) / s);
  const cy = Math.floor((ev.clientY - rect.top) * (canvas.height / rect.height) / s);
  const r = Number($("brush-size").value);
  const value = state.tool === "eraser" ? 0 : Number($("paint-class").value || 1);
  for (let y = cy - r; y <= cy + r; y++) for (let x = cx - r; x <= cx + r; x++) {
    if (x < 0 || y < 0 || x >= state.editWidth || y >= state.editHeight || (x - cx) ** 2 + (y - cy) ** 2 > r * r) continue;
    state.edit[y * state.editWidth + x] = value;
  }
  draw();
}

function toBase64(bytes) {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

async function save() {
  if (!state.edit) { status("nothing painted on this slice"); return; }
  const v = await post(`/api/cases/${encodeURIComponent(state.caseId)}/correction`, {
    slice: state.editSlice, width: state.editWidth, height: state.editHeight, data: toBase64(state.edit),
    base: state.editBase === "empty" ? "empty" : state.editBase, user: $("user").value });
  status(`saved version ${v.version} of ${state.caseId} (slice ${state.editSlice + 1})`);
  await reloadCase();
}

async function reloadCase() {
  const keepSlice = state.slice;
  const layers = { ...state.layers, correction: true };
  state.layers = layers;
  await openCase(state.caseId);
  state.slice = keepSlice; $("slice").value = keepSlice;
  await draw();
}

async function propagate() {
  status("propagating...");
  const v = await post(`/api/cases/${encodeURIComponent(state.caseId)}/propagate`, { slice: state.slice, user: $("user").value });
  status(`propagated from slice ${state.slice + 1}: version ${v.version}`);
  await reloadCase();
}

async function reviewCase(decision) {
  await post(`/api/cases/${encodeURIComponent(state.caseId)}/review`, { decision, comment: $("comment").value, user: $("user").value });
  status(`${decision}: ${state.caseId}`);
  state.meta = await api(`/api/cases/${encodeURIComponent(state.caseId)}`);
  renderMeta();
  await refreshLists();
}

function setTool(tool) {
  state.tool = tool;
  for (const t of ["brush", "eraser", "off"]) $(`tool-${t}`).classList.toggle("active", t === tool);
}

const guard = (fn) => async (...args) => { try { await fn(...args); } catch (e) { status(`error: ${e.message}`); } };

async function main() {
  state.info = await api("/api/info");
  $("dataset-name").textContent = `${state.info.name} · ${state.info.class_names.length - 1} class(es) · ${state.info.rater_ids.length} rater(s)`;
  $("tab-queue").disabled = !state.info.has_qa;
  $("tab-cases").onclick = () => { state.tab = "cases"; $("tab-cases").classList.add("active"); $("tab-queue").classList.remove("active"); renderList(); };
  $("tab-queue").onclick = () => { state.tab = "queue"; $("tab-queue").classList.add("active"); $("tab-cases").classList.remove("active"); renderList(); };
  for (const id of ["filter-text", "filter-split", "filter-review"]) $(id).oninput = renderList;
  $("slice").oninput = (e) => { state.slice = Number(e.target.value); draw(); };
  $("opacity").oninput = draw;
  $("btn-accept").onclick = guard(() => reviewCase("accept"));
  $("btn-reject").onclick = guard(() => reviewCase("reject"));
  $("btn-flag").onclick = guard(() => reviewCase("flag"));
  $("tool-brush").onclick = () => setTool("brush");
  $("tool-eraser").onclick = () => setTool("eraser");
  $("tool-off").onclick = () => setTool("off");
  $("edit-base").onchange = () => { state.edit = null; draw(); };
  $("btn-save").onclick = guard(save);
  $("btn-propagate").onclick = guard(propagate);
  let down = false;
  $("canvas").onmousedown = (e) => { down = true; guard(paint)(e); };
  $("canvas").onmousemove = (e) => { if (down) guard(paint)(e); };
  window.onmouseup = () => { down = false; };
  await refreshLists();
  status(`${state.cases.length} cases`);
}

guard(main)();

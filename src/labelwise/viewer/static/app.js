// labelwise viewer: vanilla JS, no network access beyond this server.
// Everything that comes from the dataset, quality.csv or review files is inserted as text (textContent, Option,
// createElement), never as HTML; the server's Content-Security-Policy forbids inline script as a second line.
"use strict";

// The per-session token the server embedded in the page; every /api/ request carries it.
const TOKEN = document.querySelector('meta[name="labelwise-token"]').content;
const TOKEN_HEADER = "X-Labelwise-Token";
const DECISIONS = ["accept", "reject", "flag"];
const HISTORY = 50;  // strokes kept per slice for undo
const QUEUE_SIZE = 20;

const COLOURS = [[0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48], [145, 30, 180], [70, 240, 240]];
const state = {
  info: null, cases: [], queue: [], qaRows: [], tab: "cases", caseId: null, meta: null, slice: 0, layers: {},
  tool: "off", images: {}, visible: [],
  // unsaved edits of the open case: slice -> {buf, width, height, base, undo: [Uint8Array], redo: [Uint8Array]}
  edits: {}, pendingEdits: {},
  serverRedo: [],  // versions written by an undo of a saved version, newest last (redo reverts them)
  redoAfterClear: null,  // {slice, edit}: strokes undone down to the starting map, kept for redo
  proposal: null,  // the propagation proposal of the open case: {proposal, slices: [{slice, confidence, foreground}]}
  changed: null,  // Map case -> change text while the "changed since" filter is on
};

const $ = (id) => document.getElementById(id);
const status = (msg) => { $("status").textContent = msg; };

async function api(path, options = {}) {
  const res = await fetch(path, { ...options, headers: { ...(options.headers || {}), [TOKEN_HEADER]: TOKEN } });
  const body = res.headers.get("content-type")?.includes("json") ? await res.json() : null;
  if (!res.ok) throw new Error((body && body.error) || res.statusText);
  return body;
}
const post = (path, payload) => api(path, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(payload) });
const caseUrl = (suffix = "") => `/api/cases/${encodeURIComponent(state.caseId)}${suffix}`;

function layerColour(name) {
  if (name === "consensus") return [250, 250, 250];
  if (name === "pred") return [0, 200, 255];
  if (name === "correction" || name === "edit") return [255, 0, 255];
  const idx = state.meta ? state.meta.layers.indexOf(name) : 1;
  return COLOURS[1 + (idx % (COLOURS.length - 1))];
}

// ----------------------------------------------------------------------------------------------- case list
function listRows() {
  if (state.tab !== "queue") return state.cases;
  const byId = new Map(state.cases.map((c) => [c.id, c]));
  if ($("queue-strategy").value === "qa-table") {
    return state.qaRows.map((q) => ({ id: q.case, quality: q.predicted_dice, review: q.review, extra: [q.source, q.structure].filter(Boolean).join(" · ") }));
  }
  return state.queue.map((p) => ({ ...(byId.get(p.case) || { id: p.case }), id: p.case, rank: p.rank, reason: p.reason }));
}

function renderList() {
  const ul = $("case-list");
  ul.replaceChildren();
  const text = $("filter-text").value.toLowerCase();
  const split = $("filter-split").value;
  const review = $("filter-review").value;
  state.visible = [];
  for (const c of listRows()) {
    if (text && !String(c.id).toLowerCase().includes(text)) continue;
    if (split && c.split !== split) continue;
    if (review && (review === "none" ? c.review : c.review !== review)) continue;
    if (state.changed && !state.changed.has(c.id)) continue;
    state.visible.push(c.id);
    const li = document.createElement("li");
    li.dataset.case = c.id;
    if (c.id === state.caseId) li.classList.add("selected");
    const q = c.quality == null ? "" : ` q=${Number(c.quality).toFixed(2)}`;
    const name = document.createElement("span");
    name.textContent = c.rank ? `${c.rank}. ${c.id}` : String(c.id);
    const small = document.createElement("small");
    small.textContent = `${q} ${c.extra || ""}`;
    name.appendChild(small);
    const badge = document.createElement("span");
    badge.className = "badge";
    if (DECISIONS.includes(c.review)) badge.classList.add(c.review);
    badge.textContent = c.review || c.split || "";
    li.append(name, badge);
    const why = c.reason || (state.changed && state.changed.get(c.id));
    if (why) {
      const reason = document.createElement("span");
      reason.className = "reason";
      reason.textContent = why;
      li.appendChild(reason);
    }
    li.onclick = guard(() => openCase(c.id));
    ul.appendChild(li);
  }
}

let queueRequest = 0; // only the latest queue request may write the queue (an earlier, slower one is dropped)

async function loadQueue() {
  const strategy = $("queue-strategy").value;
  const ticket = ++queueRequest;
  if (strategy === "qa-table") {
    const rows = await api("/api/queue");
    if (ticket !== queueRequest) return;
    state.qaRows = rows;
    $("queue-info").textContent = "every row of the QA table, worst predicted Dice first";
    return;
  }
  const include = $("queue-reviewed").checked ? 1 : 0;
  $("queue-info").textContent = "computing...";
  let res;
  try {
    res = await api(`/api/next?strategy=${encodeURIComponent(strategy)}&n=${QUEUE_SIZE}&include_reviewed=${include}`);
  } catch (e) {
    if (ticket !== queueRequest) return;
    state.queue = [];
    $("queue-info").textContent = `${strategy}: ${e.message}`;
    return;
  }
  if (ticket !== queueRequest) return;
  state.queue = res.cases;
  const skipped = res.skipped_reviewed.length ? `, ${res.skipped_reviewed.length} reviewed left out` : "";
  $("queue-info").textContent = `${res.strategy}: ${res.cases.length} of ${res.candidates} candidates${skipped}`;
}

async function loadChanged() {
  if ($("filter-changed").value !== "since") { state.changed = null; return; }
  const since = $("filter-since").value;
  const res = await api(since ? `/api/changed?since=${encodeURIComponent(since)}` : "/api/changed");
  state.changed = new Map(res.cases.map((c) => [c.case, `${c.change} · ${c.time.slice(0, 16)} · next training reads: ${c.labels}`]));
  status(`${res.cases.length} case(s) changed since ${res.source === "run" ? "the last model" : "the date"} (${res.since.slice(0, 16)})`);
}

async function refreshLists() {
  state.cases = await api("/api/cases");
  if (state.tab === "queue") await loadQueue();
  await loadChanged();
  renderList();
}

async function showTab(tab) {
  state.tab = tab;
  $("tab-cases").classList.toggle("active", tab === "cases");
  $("tab-queue").classList.toggle("active", tab === "queue");
  $("queue-controls").hidden = tab !== "queue";
  if (tab === "queue") {
    $("case-list").replaceChildren();  // no stale rows while the queue is computed
    await loadQueue();
  }
  renderList();
}

async function stepCase(delta) {
  if (!state.visible.length) { status("no case in the list"); return; }
  const at = state.visible.indexOf(state.caseId);
  const next = at < 0 ? (delta > 0 ? 0 : state.visible.length - 1) : at + delta;
  if (next < 0 || next >= state.visible.length) { status(delta > 0 ? "last case of the list" : "first case of the list"); return; }
  await openCase(state.visible[next]);
}

// ----------------------------------------------------------------------------------------------- case view
function unsavedSlices() { return Object.keys(state.edits).map(Number).filter((z) => state.edits[z].undo.length).sort((a, b) => a - b); }

async function openCase(id, keep = false) {
  if (!keep && id !== state.caseId) {
    const lost = unsavedSlices();
    if (lost.length) status(`discarded unsaved strokes of ${state.caseId} (slice ${lost.map((z) => z + 1).join(", ")})`);
    state.edits = {}; state.pendingEdits = {}; state.serverRedo = []; state.proposal = null;
  }
  state.caseId = id;
  state.meta = await api(caseUrl());
  if (!keep) {
    state.slice = Math.floor(state.meta.slices / 2);
    if (state.meta.labelled_slices && state.meta.labelled_slices.length) state.slice = state.meta.labelled_slices[Math.floor(state.meta.labelled_slices.length / 2)];
  }
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
    const boxId = `layer-${name.replace(/[^a-z0-9]/gi, "-")}`;
    const [r, g, b] = layerColour(name);
    const label = document.createElement("label");
    const box = document.createElement("input");
    box.type = "checkbox";
    box.id = boxId;
    box.checked = state.layers[name];
    box.onchange = (e) => { state.layers[name] = e.target.checked; draw(); };
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = `rgb(${r},${g},${b})`;  // CSSOM, not a style attribute: allowed by the CSP
    label.append(box, swatch, document.createTextNode(name), document.createElement("br"));
    div.appendChild(label);
  }
  const base = $("edit-base");
  const chosen = base.value;
  base.replaceChildren();
  for (const name of ["correction", "consensus", "pred", ...state.meta.layers.filter((l) => l.startsWith("rater/"))]) {
    if (state.meta.layers.includes(name)) base.add(new Option(name, name));
  }
  base.add(new Option("empty", "empty"));
  if (keep && [...base.options].some((o) => o.value === chosen)) base.value = chosen;
  const cls = $("paint-class");
  const paintClass = cls.value;
  cls.replaceChildren();
  state.info.class_names.forEach((n, i) => { if (i > 0) cls.add(new Option(`${i} ${n}`, i)); });
  if (paintClass && [...cls.options].some((o) => o.value === paintClass)) cls.value = paintClass;
  renderMeta();
  renderProposal();
  renderList();
  await draw();
}

function renderMeta() {
  const r = state.meta.reviews;
  $("review-state").textContent = r.length ? `last: ${r[r.length - 1].decision} by ${r[r.length - 1].user} ${r[r.length - 1].comment || ""}` : "not reviewed";
  const v = state.meta.versions;
  $("versions").textContent = v.length ? `${v.length} saved version(s), last v${v.at(-1).version} by ${v.at(-1).user} (${v.at(-1).action}${v.at(-1).base.startsWith("revert") ? ", " + v.at(-1).base : ""})` : "no corrections";
  renderEdits();
}

function renderEdits() {
  const dirty = unsavedSlices();
  $("edits").textContent = dirty.length ? `unsaved strokes on slice ${dirty.map((z) => z + 1).join(", ")}` : "";
}

function loadImage(layer, z) {
  const key = `${layer}@${z}`;
  if (state.images[key]) return state.images[key];
  const url = `${caseUrl()}/slice/${z}.png?layer=${encodeURIComponent(layer)}`;
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
  state.images[key].catch(() => { delete state.images[key]; });
  return state.images[key];
}

function zoom(w, h) { return Math.max(1, Math.floor(512 / Math.max(w, h))); }

function proposalAt(z) { return state.proposal && state.proposal.slices.find((s) => s.slice === z); }

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
  if (proposalAt(z)) {
    const data = await loadImage(`proposal/${state.proposal.proposal}`, z);
    for (let p = 0, i = 0; p < w * h; p++, i += 4) if (data.data[i]) blend(i, [255, 140, 0], Math.max(alpha, 0.5));
  }
  const edit = state.edits[z];
  if (edit) {
    for (let p = 0, i = 0; p < w * h; p++, i += 4) if (edit.buf[p]) blend(i, COLOURS[1 + ((edit.buf[p] - 1) % (COLOURS.length - 1))], Math.max(alpha, 0.5));
  }
  const canvas = $("canvas");
  canvas.width = w * s; canvas.height = h * s;
  const tmp = document.createElement("canvas");
  tmp.width = w; tmp.height = h;
  tmp.getContext("2d").putImageData(out, 0, 0);
  const ctx = canvas.getContext("2d");
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(tmp, 0, 0, w * s, h * s);
  for (const li of $("proposal-list").children) li.classList.toggle("current", Number(li.dataset.slice) === z);
}

async function setSlice(z) {
  if (!state.meta) return;
  state.slice = Math.max(0, Math.min(state.meta.slices - 1, z));
  $("slice").value = state.slice;
  await draw();
}

// ----------------------------------------------------------------------------------------------- editing
async function ensureEdit() {
  const z = state.slice;
  if (state.edits[z]) return state.edits[z];
  if (!state.pendingEdits[z]) {
    state.pendingEdits[z] = (async () => {
      const baseName = $("edit-base").value;
      const img = await loadImage("image", z);
      const buf = new Uint8Array(img.width * img.height);
      if (baseName !== "empty") {
        const data = await loadImage(baseName, z);
        for (let p = 0; p < buf.length; p++) buf[p] = data.data[p * 4];
      }
      state.edits[z] = { buf, width: img.width, height: img.height, base: baseName, undo: [], redo: [] };
      delete state.pendingEdits[z];
      return state.edits[z];
    })();
  }
  return state.pendingEdits[z];
}

async function beginStroke() {
  const edit = await ensureEdit();
  edit.undo.push(edit.buf.slice());
  if (edit.undo.length > HISTORY) edit.undo.shift();
  edit.redo = [];
  state.serverRedo = [];
  state.redoAfterClear = null;
  renderEdits();
}

async function paint(ev) {
  if (state.tool === "off") return;
  const edit = await ensureEdit();
  const canvas = $("canvas");
  const rect = canvas.getBoundingClientRect();
  const s = canvas.width / edit.width;
  const cx = Math.floor((ev.clientX - rect.left) * (canvas.width / rect.width) / s);
  const cy = Math.floor((ev.clientY - rect.top) * (canvas.height / rect.height) / s);
  const r = Number($("brush-size").value);
  const value = state.tool === "eraser" ? 0 : Number($("paint-class").value || 1);
  for (let y = cy - r; y <= cy + r; y++) for (let x = cx - r; x <= cx + r; x++) {
    if (x < 0 || y < 0 || x >= edit.width || y >= edit.height || (x - cx) ** 2 + (y - cy) ** 2 > r * r) continue;
    edit.buf[y * edit.width + x] = value;
  }
  draw();
}

function toBase64(bytes) {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

async function save() {
  const z = state.slice;
  const edit = state.edits[z];
  if (!edit) { status("nothing painted on this slice"); return; }
  const v = await post(caseUrl("/correction"), {
    slice: z, width: edit.width, height: edit.height, data: toBase64(edit.buf), base: edit.base, user: $("user").value });
  delete state.edits[z];
  state.serverRedo = [];
  await reloadCase();
  status(`saved version ${v.version} of ${state.caseId} (slice ${z + 1})`);
}

async function reloadCase() {
  state.layers = { ...state.layers, correction: true };
  await openCase(state.caseId, true);
  await refreshLists();
}

// Undo: the last stroke of this slice; with none left, the last saved version (a new version restoring the one
// before it, so nothing is ever deleted). Redo: the stroke undone, or the saved version an undo restored.
async function undo() {
  const edit = state.edits[state.slice];
  if (edit && edit.undo.length) {
    edit.redo.push(edit.buf);
    edit.buf = edit.undo.pop();
    if (!edit.undo.length) {  // back to the map it started from: nothing unsaved on this slice any more
      delete state.edits[state.slice];
      state.redoAfterClear = { slice: state.slice, edit };
    }
    status(`undid a stroke on slice ${state.slice + 1}`);
    renderEdits();
    await draw();
    return;
  }
  const versions = state.meta ? state.meta.versions : [];
  if (!versions.length) { status("nothing to undo"); return; }
  const last = versions.at(-1);
  const v = await post(caseUrl("/revert"), { version: last.version, user: $("user").value });
  state.serverRedo.push(v.version);
  state.redoAfterClear = null;
  await reloadCase();
  status(`undid v${last.version} (slice ${last.slices.map((z) => z + 1).join(", ")}): saved as v${v.version}`);
}

async function redo() {
  let edit = state.edits[state.slice];
  const cleared = state.redoAfterClear;
  if (!edit && cleared && cleared.slice === state.slice && cleared.edit.redo.length) {
    edit = state.edits[state.slice] = cleared.edit;  // the strokes undone down to the base
    state.redoAfterClear = null;
  }
  if (edit && edit.redo.length) {
    edit.undo.push(edit.buf);
    edit.buf = edit.redo.pop();
    status(`redid a stroke on slice ${state.slice + 1}`);
    renderEdits();
    await draw();
    return;
  }
  const versions = state.meta ? state.meta.versions : [];
  const top = state.serverRedo.at(-1);
  if (top === undefined || !versions.length || versions.at(-1).version !== top) { status("nothing to redo"); return; }
  const v = await post(caseUrl("/revert"), { version: top, user: $("user").value });
  state.serverRedo.pop();
  await reloadCase();
  status(`redid: v${top} undone as v${v.version}`);
}

// ----------------------------------------------------------------------------------------------- propagation
function confidenceClass(c) { return c < 0.8 ? "low" : c < 0.9 ? "mid" : "high"; }

function renderProposal() {
  const list = $("proposal-list");
  list.replaceChildren();
  const p = state.proposal;
  $("proposal-box").hidden = !p || !p.slices.length;
  if (!p) return;
  for (const s of p.slices) {
    const li = document.createElement("li");
    li.dataset.slice = s.slice;
    if (s.slice === state.slice) li.classList.add("current");
    const text = document.createElement("span");
    text.className = `conf ${confidenceClass(s.confidence)}`;
    text.textContent = `slice ${s.slice + 1} · confidence ${s.confidence.toFixed(2)} · ${s.foreground} vx`;
    text.onclick = guard(() => setSlice(s.slice));
    const ok = document.createElement("button");
    ok.textContent = "accept";
    ok.className = "accept-slice";
    ok.onclick = guard(() => acceptSlices([s.slice]));
    const no = document.createElement("button");
    no.textContent = "discard";
    no.className = "discard-slice";
    no.onclick = guard(() => discardSlices([s.slice]));
    li.append(text, ok, no);
    list.appendChild(li);
  }
}

async function propagate() {
  status("propagating...");
  const res = await post(caseUrl("/propagate"), { slice: state.slice, user: $("user").value, preview: true });
  state.proposal = res;
  status(`proposal from slice(s) ${res.anchors.map((z) => z + 1).join(", ")}: ${res.slices.length} slice(s); accept or discard each`);
  renderProposal();
  await draw();
}

async function acceptSlices(slices) {
  if (!state.proposal) return;
  const v = await post(caseUrl("/propagate/accept"), { proposal: state.proposal.proposal, slices, user: $("user").value });
  state.proposal.slices = state.proposal.slices.filter((s) => !slices.includes(s.slice));
  state.serverRedo = [];
  await reloadCase();
  status(`accepted slice ${slices.map((z) => z + 1).join(", ")}: version ${v.version} (undo restores v${v.version - 1})`);
}

async function discardSlices(slices) {
  if (!state.proposal) return;
  await post(caseUrl("/propagate/discard"), { proposal: state.proposal.proposal, slices });
  state.proposal.slices = state.proposal.slices.filter((s) => !slices.includes(s.slice));
  status(`discarded slice ${slices.map((z) => z + 1).join(", ")} of the proposal`);
  renderProposal();
  await draw();
}

// ----------------------------------------------------------------------------------------------- review
async function reviewCase(decision) {
  await post(caseUrl("/review"), { decision, comment: $("comment").value, user: $("user").value });
  state.meta = await api(caseUrl());
  renderMeta();
  await refreshLists();
  status(`${decision}: ${state.caseId}`);
}

function setTool(tool) {
  state.tool = tool;
  for (const t of ["brush", "eraser", "off"]) $(`tool-${t}`).classList.toggle("active", t === tool);
}

function setBrush(size) {
  const range = $("brush-size");
  range.value = Math.max(Number(range.min), Math.min(Number(range.max), size));
  $("brush-size-label").textContent = range.value;
}

// ----------------------------------------------------------------------------------------------- keyboard
const NOT_TYPING = new Set(["range", "checkbox", "radio", "button", "submit", "reset", "color"]);

function typing(target) {
  if (!target || !target.tagName) return false;
  if (target.isContentEditable || target.tagName === "TEXTAREA" || target.tagName === "SELECT") return true;
  return target.tagName === "INPUT" && !NOT_TYPING.has(target.type);
}

function toggleHelp(show) { $("help").hidden = show === undefined ? !$("help").hidden : !show; }

// key -> action, for keys without Ctrl/Cmd/Alt (Shift only where the key needs it)
const onProposal = (fn) => () => (proposalAt(state.slice) ? fn([state.slice]) : status("no proposal on this slice"));

// key -> action, for keys without Ctrl/Cmd/Alt (Shift only where the key needs it)
const KEYS = {
  n: () => stepCase(1), j: () => stepCase(1), p: () => stepCase(-1), k: () => stepCase(-1),
  a: () => reviewCase("accept"), r: () => reviewCase("reject"), f: () => reviewCase("flag"),
  ArrowUp: () => setSlice(state.slice + 1), ArrowDown: () => setSlice(state.slice - 1),
  "]": () => setBrush(Number($("brush-size").value) + 1), "[": () => setBrush(Number($("brush-size").value) - 1),
  b: () => setTool("brush"), e: () => setTool("eraser"), Escape: () => setTool("off"),
  z: undo, Z: redo, y: redo, s: save, g: propagate,
  Enter: onProposal(acceptSlices), Delete: onProposal(discardSlices), Backspace: onProposal(discardSlices),
};
const ANYWHERE = new Set(["n", "j", "p", "k"]);  // the other keys act on an open case
const ON_PROPOSAL = new Set(["Enter", "Delete", "Backspace"]);

function onKey(ev) {
  if (typing(ev.target)) return;  // the comment, reviewer and filter fields get their keys
  const helpOpen = !$("help").hidden;
  if (ev.key === "?" || (ev.key === "Escape" && helpOpen)) {  // the overlay opens and closes at once
    ev.preventDefault();
    toggleHelp();
    return;
  }
  if (helpOpen) return;  // the overlay is modal
  // Enter/Delete on a focused button keep their meaning unless a proposal is being reviewed
  if (ON_PROPOSAL.has(ev.key) && (!state.proposal || !state.proposal.slices.length || ev.target.tagName === "BUTTON")) return;
  let action = null;
  if (ev.ctrlKey || ev.metaKey) {
    const key = ev.key.toLowerCase();
    if (ev.altKey) return;
    if (key === "z") action = ev.shiftKey ? redo : undo;
    else if (key === "y") action = redo;
  } else if (!ev.altKey) {
    action = KEYS[ev.key];
    if (!action && /^[1-9]$/.test(ev.key)) {
      const cls = $("paint-class");
      action = () => {
        if (Number(ev.key) > cls.options.length) return;
        cls.value = ev.key;
        status(`paint class ${cls.selectedOptions[0].textContent}`);
      };
    }
  }
  if (!action) return;
  ev.preventDefault();
  // One key at a time, in order: a key pressed while the last one still talks to the server waits for it, and
  // acts on the state the earlier keys left (the case, the slice). Keys other than case steps need an open case.
  const needsCase = !ANYWHERE.has(ev.key);
  keyChain = keyChain.then(guard(() => (needsCase && !state.meta ? undefined : action())));
}

let keyChain = Promise.resolve();

const guard = (fn) => async (...args) => { try { await fn(...args); } catch (e) { status(`error: ${e.message}`); } };

async function main() {
  state.info = await api("/api/info");
  $("dataset-name").textContent = `${state.info.name} · ${state.info.class_names.length - 1} class(es) · ${state.info.rater_ids.length} rater(s)`;
  const strategy = $("queue-strategy");
  for (const s of state.info.strategies) strategy.add(new Option(s, s));
  if (state.info.has_qa) strategy.add(new Option("qa table (all rows)", "qa-table"));
  strategy.value = state.info.default_strategy;
  strategy.onchange = guard(async () => { await loadQueue(); renderList(); });
  $("queue-reviewed").onchange = guard(async () => { await loadQueue(); renderList(); });
  $("filter-changed").options[1].textContent = state.info.run_trained_at
    ? `changed since last model (${state.info.run_trained_at.slice(0, 16)})`
    : "changed since the date below (no --run)";
  $("tab-cases").onclick = guard(() => showTab("cases"));
  $("tab-queue").onclick = guard(() => showTab("queue"));
  for (const id of ["filter-text", "filter-split", "filter-review"]) $(id).oninput = renderList;
  for (const id of ["filter-changed", "filter-since"]) $(id).onchange = guard(async () => { await loadChanged(); renderList(); });
  $("slice").oninput = (e) => { state.slice = Number(e.target.value); draw(); };
  $("opacity").oninput = draw;
  $("brush-size").oninput = () => setBrush(Number($("brush-size").value));
  $("btn-accept").onclick = guard(() => reviewCase("accept"));
  $("btn-reject").onclick = guard(() => reviewCase("reject"));
  $("btn-flag").onclick = guard(() => reviewCase("flag"));
  $("tool-brush").onclick = () => setTool("brush");
  $("tool-eraser").onclick = () => setTool("eraser");
  $("tool-off").onclick = () => setTool("off");
  $("edit-base").onchange = () => { delete state.edits[state.slice]; renderEdits(); draw(); };
  $("btn-save").onclick = guard(save);
  $("btn-undo").onclick = guard(undo);
  $("btn-redo").onclick = guard(redo);
  $("btn-propagate").onclick = guard(propagate);
  $("btn-accept-all").onclick = guard(() => acceptSlices(state.proposal.slices.map((s) => s.slice)));
  $("btn-discard-all").onclick = guard(() => discardSlices(state.proposal.slices.map((s) => s.slice)));
  $("btn-help").onclick = () => toggleHelp();
  $("btn-help-close").onclick = () => toggleHelp(false);
  let down = false;
  $("canvas").onmousedown = guard(async (e) => {
    if (state.tool === "off") return;
    down = true;
    await beginStroke();
    await paint(e);
  });
  $("canvas").onmousemove = (e) => { if (down) guard(paint)(e); };
  window.onmouseup = () => { down = false; };
  document.addEventListener("keydown", onKey);
  await refreshLists();
  status(`${state.cases.length} cases · press ? for keyboard shortcuts`);
}

guard(main)();

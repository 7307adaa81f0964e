// The room-DAG page (ranvier/admin/dag.py): fetches a window of the room's event graph and draws it with
// cytoscape and the dagre layered layout, oldest events at the top, each edge from a prev event to the
// event that cites it.
"use strict";

const TOKEN_KEY = "ranvier_admin_token";
const roomId = decodeURIComponent(location.pathname.split("/rooms/")[1].replace(/\/dag$/, ""));
const $ = (id) => document.getElementById(id);
let current = null;

cytoscape.use(cytoscapeDagre);

function token() {
  return localStorage.getItem(TOKEN_KEY);
}

function shortId(id) {
  return id.length > 12 ? id.slice(0, 10) + "…" : id;
}

function label(ev) {
  const kind = ev.type.startsWith("m.room.") ? ev.type.slice(7) : ev.type;
  const parts = [kind];
  if (ev.summary) parts.push(ev.summary);
  if (ev.type === "m.room.member" && ev.state_key) parts.push(ev.state_key.split(":")[0]);
  parts.push(shortId(ev.event_id));
  return parts.join("\n");
}

function classes(ev) {
  const out = [];
  if (ev.type === "org.matrix.dummy_event") out.push("dummy");
  else if (ev.state_key !== undefined) out.push("state");
  else out.push("message");
  if (ev.forward_extremity) out.push("fext");
  if (ev.outlier) out.push("outlier");
  if (ev.rejected_reason) out.push("rejected");
  if (ev.soft_failed) out.push("softfailed");
  if (ev.unacknowledged_by.length) out.push("unacked");
  return out.join(" ");
}

function elements(data) {
  const els = [];
  const held = new Set(data.events.map((e) => e.event_id));
  const missing = new Set(data.missing);
  for (const ev of data.events) {
    els.push({ data: { id: ev.event_id, label: label(ev), ev }, classes: classes(ev) });
  }
  for (const id of data.missing) {
    els.push({ data: { id, label: "gap\n" + shortId(id), missing: true }, classes: "missing" });
  }
  for (const ev of data.events) {
    for (const prev of ev.prev_events) {
      // Prev events held but outside the window are not drawn; the "Older" button pages to them.
      if (!held.has(prev) && !missing.has(prev)) continue;
      els.push({ data: { id: prev + "->" + ev.event_id, source: prev, target: ev.event_id } });
    }
  }
  return els;
}

const STYLE = [
  { selector: "node", style: {
      "label": "data(label)", "text-wrap": "wrap", "font-size": 9, "text-valign": "center",
      "width": 96, "height": 44, "shape": "round-rectangle", "border-width": 2, "border-color": "#555",
      "background-color": "#dfe6ee" } },
  { selector: "node.state", style: { "background-color": "#9cc3f0" } },
  { selector: "node.dummy", style: { "background-color": "#c9a6f5", "shape": "diamond", "width": 80,
      "height": 60 } },
  { selector: "node.fext", style: { "border-color": "#16a34a", "border-width": 4 } },
  { selector: "node.outlier", style: { "border-style": "dotted", "background-color": "#eee" } },
  { selector: "node.rejected", style: { "background-color": "#f4a3a3" } },
  { selector: "node.softfailed", style: { "background-color": "#f7c77e" } },
  { selector: "node.unacked", style: { "border-style": "double", "border-color": "#d97706",
      "border-width": 5 } },
  { selector: "node.missing", style: { "background-color": "#fff", "border-style": "dashed",
      "border-color": "#b00020", "color": "#b00020" } },
  { selector: "node:selected", style: { "overlay-opacity": 0.2 } },
  { selector: "edge", style: { "width": 1.5, "curve-style": "bezier", "target-arrow-shape": "triangle",
      "line-color": "#888", "target-arrow-color": "#888" } },
];

function describe(node) {
  const d = node.data();
  if (d.missing) {
    return `${d.id}\n\nNot held here: named as a prev event by an event of this window. ` +
      "A gap in the room's history (the gap filler and /messages backfill try to fetch it).";
  }
  return JSON.stringify(d.ev, null, 2);
}

function summarise(data) {
  const dummies = data.events.filter((e) => e.type === "org.matrix.dummy_event").length;
  const unacked = data.events.filter((e) => e.unacknowledged_by.length).length;
  $("summary").textContent =
    `${data.events.length} events · ${data.forward_extremities.length} forward extremities · ` +
    `${data.forks.length} forks · ${data.missing.length} gaps · ${dummies} dummy events · ` +
    `${unacked} not acknowledged by every server · servers: ${data.servers.join(", ")}` +
    (data.more_before ? " · older events exist" : "");
  for (const [key, value] of [["events", data.events.length], ["forks", data.forks.length],
      ["gaps", data.missing.length], ["dummies", dummies]]) {
    $("summary").dataset[key] = String(value);
  }
}

async function load() {
  $("error").textContent = "";
  const params = new URLSearchParams({ limit: $("limit").value || "200" });
  if ($("around").value) params.set("around", $("around").value);
  const url = `/_ranvier/admin/v1/rooms/${encodeURIComponent(roomId)}/dag?${params}`;
  const resp = await fetch(url, { headers: { Authorization: `Bearer ${token()}` } });
  const body = await resp.json();
  if (!resp.ok) {
    $("error").textContent = `${resp.status} ${body.errcode}: ${body.error}`;
    if (resp.status === 401) showTokenForm();
    return;
  }
  current = body;
  summarise(body);
  const cy = cytoscape({
    container: $("cy"),
    elements: elements(body),
    style: STYLE,
    layout: { name: "dagre", rankDir: "TB", nodeSep: 24, rankSep: 36 },
    wheelSensitivity: 0.3,
  });
  cy.on("tap", "node", (e) => { $("details").textContent = describe(e.target); });
  window.dagGraph = cy; // for the browser test and the operator's console
  document.body.dataset.loaded = "true";
}

function showTokenForm() {
  $("token-form").hidden = false;
}

$("room-id").textContent = roomId;
$("token-form").addEventListener("submit", (e) => {
  e.preventDefault();
  localStorage.setItem(TOKEN_KEY, $("token").value);
  $("token-form").hidden = true;
  load();
});
$("window-form").addEventListener("submit", (e) => { e.preventDefault(); load(); });
$("older").addEventListener("click", () => {
  if (!current || !current.events.length) return;
  $("around").value = current.events[0].event_id;
  load();
});
$("newest").addEventListener("click", () => { $("around").value = ""; load(); });
$("check").addEventListener("click", async () => {
  $("check-report").textContent = "checking…";
  const resp = await fetch(`/_ranvier/admin/v1/rooms/${encodeURIComponent(roomId)}/check`, {
    method: "POST",
    headers: { Authorization: `Bearer ${token()}`, "Content-Type": "application/json" },
    body: JSON.stringify({ heal: false }),
  });
  const body = await resp.json();
  $("check-report").textContent = resp.ok
    ? `${body.agrees ? "agrees" : "DIFFERS"}\n` + JSON.stringify(body.servers, null, 2)
    : `${resp.status} ${body.errcode}: ${body.error}`;
});
$("forget-token").addEventListener("click", () => { localStorage.removeItem(TOKEN_KEY); showTokenForm(); });

if (token()) load(); else showTokenForm();

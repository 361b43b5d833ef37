// The Workflows page: polls the admin API and renders the workflows table, a workflow's
// detail (mappings with Replay Data, event switches, opt-out direction, dead letters) and a
// read-only view of its config section, and the latest entries of the audit trail. Rows are
// updated in place so keyboard focus survives the live updates.
"use strict";

const POLL_MS = 1000;
const AUDIT_ROWS = 10;
const state = { detail: null, refused: {}, lastError: "", auditShown: "" };

function token() { return sessionStorage.getItem("conduit-token"); }

async function call(method, path) {
  const headers = { "X-Conduit-Request": "page" };
  if (token()) headers["Authorization"] = "Bearer " + token();
  const response = await fetch(path, { method, headers });
  if (response.status === 401) {
    const given = window.prompt("This host needs its admin token (CONDUIT_ADMIN_TOKEN):");
    if (given) { sessionStorage.setItem("conduit-token", given); return call(method, path); }
  }
  let body = null;
  try { body = await response.json(); } catch (_) { body = null; }
  if (!response.ok) {
    const message = (body && body.error) || ("the host answered " + response.status);
    throw new Error(message);
  }
  return body;
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

function setText(node, text) { if (node.textContent !== text) node.textContent = text; }

function showError(message) {
  state.lastError = message;
  const box = document.getElementById("connection");
  setText(box, message);
}

// ---- workflows table -------------------------------------------------------------------

function ensureRow(workflow) {
  const body = document.getElementById("workflow-rows");
  let row = body.querySelector(`tr[data-workflow="${workflow.id}"]`);
  if (row) return row;
  const detailLink = el("a", { href: `#/workflow/${workflow.id}`, class: "name", id: `open-${workflow.id}` });
  const toggle = el("button", { type: "button", class: "toggle", id: `toggle-${workflow.id}`,
    onclick: () => toggleWorkflow(workflow.id) });
  const edit = el("button", { type: "button", id: `edit-${workflow.id}`, text: "Edit",
    "aria-label": `View the configuration of ${workflow.name}`, onclick: () => openConfig(workflow.id) });
  row = el("tr", { "data-workflow": workflow.id },
    el("td", { "data-label": "Name" }, detailLink),
    el("td", { "data-label": "Backlog", class: "num backlog" }),
    el("td", { "data-label": "Status", class: "status-cell" },
      el("span", { class: "status" }, el("span", { class: "dot", "aria-hidden": "true" }), el("span", { class: "status-name" })),
      el("span", { class: "reason" }), el("span", { class: "warning" })),
    el("td", { "data-label": "Actions" }, el("div", { class: "actions" }, toggle, edit)));
  body.append(row);
  return row;
}

function renderWorkflows(view) {
  for (const workflow of view.workflows) {
    const row = ensureRow(workflow);
    setText(row.querySelector("a.name"), workflow.name);
    setText(row.querySelector(".backlog"), workflow.backlog.toLocaleString("en-US"));
    const status = row.querySelector(".status");
    status.className = "status status-" + workflow.status;
    setText(row.querySelector(".status-name"), workflow.status);
    const reason = row.querySelector(".reason");
    setText(reason, workflow.reason || "");
    reason.hidden = !workflow.reason;
    const warning = row.querySelector(".warning");
    const note = [workflow.warning, workflow.waiting].filter(Boolean).join(" · ");
    setText(warning, note);
    warning.hidden = !note;

    const toggle = row.querySelector("button.toggle");
    const running = workflow.status === "RUNNING" || workflow.status === "STARTING";
    setText(toggle, running ? "Stop" : "Start");
    toggle.className = "toggle " + (running ? "danger" : "primary");
    toggle.disabled = !workflow.configured;
    let label = `${running ? "Stop" : "Start"} ${workflow.name}`;
    let badge = toggle.querySelector(".badge");
    if (running && workflow.pending_changes) {
      const summary = "Changes pending restart: " + workflow.pending_summary.join("; ");
      toggle.title = summary;
      label += ". " + summary;
      if (!badge) { badge = el("span", { class: "badge", "aria-hidden": "true", text: "!" }); toggle.append(badge); }
    } else {
      toggle.removeAttribute("title");
      if (badge) badge.remove();
    }
    toggle.setAttribute("aria-label", label);
  }
  const problems = document.getElementById("problems");
  if (view.config_problems.length) {
    problems.hidden = false;
    setText(problems, "The config file has problems (running workflows are unaffected): " +
      view.config_problems.map((p) => `line ${p.line}, column ${p.column}: ${p.message}`).join(" · "));
  } else {
    problems.hidden = true;
  }
}

async function toggleWorkflow(id) {
  const row = document.querySelector(`tr[data-workflow="${id}"]`);
  const running = row.querySelector(".status-name").textContent;
  const action = running === "RUNNING" || running === "STARTING" ? "stop" : "start";
  try {
    await call("POST", `/api/workflows/${id}/${action}`);
    showError("");
  } catch (error) {
    showError(`${action} ${id}: ${error.message}`);
  }
  poll();
}

// ---- config dialog ---------------------------------------------------------------------

async function openConfig(id) {
  const dialog = document.getElementById("config-dialog");
  try {
    const config = await call("GET", `/api/workflows/${id}/config`);
    setText(document.getElementById("config-title"), `Configuration of ${id}`);
    document.getElementById("config-body").textContent = JSON.stringify(config.section, null, 2);
    const pending = document.getElementById("config-pending");
    pending.replaceChildren();
    if (config.pending_changes) {
      pending.append(el("h3", { text: "Changes pending restart" }),
        el("ul", { class: "pending-list" }, ...config.pending_summary.map((line) => el("li", { text: line }))),
        previewControl(id));
    }
    dialog.showModal();
    document.getElementById("config-close").focus();
  } catch (error) {
    showError(`config of ${id}: ${error.message}`);
  }
}

// ---- detail ------------------------------------------------------------------------------

function button(text, attrs) { return el("button", Object.assign({ type: "button", text }, attrs)); }

async function renderDetail(view) {
  const section = document.getElementById("detail");
  const crumb = document.getElementById("crumb-detail");
  const workflow = view.workflows.find((w) => w.id === state.detail);
  if (!workflow) { section.hidden = true; setText(crumb, ""); return; }
  setText(crumb, " › " + workflow.name);
  const [config, letters, mappings] = await Promise.all([
    call("GET", `/api/workflows/${workflow.id}/config`),
    call("GET", `/api/workflows/${workflow.id}/dead-letters?limit=50`),
    workflow.id === "ingress" ? call("GET", "/api/workflows/ingress/mappings") : Promise.resolve([]),
  ]);
  const parts = [el("h2", { text: workflow.name })];
  parts.push(el("dl", { class: "kv" },
    el("dt", { text: "Read" }), el("dd", { text: String(workflow.counters.read) }),
    el("dt", { text: "Written" }), el("dd", { text: String(workflow.counters.written) }),
    el("dt", { text: "Skipped" }), el("dd", { text: skippedText(workflow.counters) }),
    el("dt", { text: "Rate" }), el("dd", { text: `${workflow.write_rate.toFixed(1)} records/s` }),
    el("dt", { text: "ETA" }), el("dd", { text: workflow.eta_seconds ? `${Math.round(workflow.eta_seconds)} s` : "-" })));
  const settings = (config && config.section) || {};
  if (workflow.id === "ingress") {
    parts.push(el("h3", { text: "Table mappings" }));
    const rows = mappings.map((m) => {
      const refused = state.refused[m.name];
      const reason = m.replay_pending ? "Replay pending: it starts at the next stop and start"
        : (m.replay_blocked || refused || "");
      return el("tr", { "data-mapping": m.name },
        el("td", { text: m.name }), el("td", { text: m.source }), el("td", { text: m.destination }),
        el("td", {}, button("Replay Data", { id: `replay-${m.name}`, disabled: Boolean(reason),
          "aria-label": `Replay data of mapping ${m.name}`, "aria-describedby": `replay-reason-${m.name}`,
          onclick: () => replay(m.name) }),
          el("span", { id: `replay-reason-${m.name}`, class: "note replay-reason", text: reason ? " " + reason : "" })));
    });
    parts.push(el("table", { class: "mappings" },
      el("thead", {}, el("tr", {}, el("th", { text: "Mapping" }), el("th", { text: "Dynamics 365 table" }),
        el("th", { text: "Campaign table" }), el("th", { text: "Actions" }))),
      el("tbody", {}, ...rows)));
  } else if (workflow.id === "egress") {
    parts.push(el("h3", { text: "Campaign events sent to Dynamics 365" }));
    parts.push(el("dl", { class: "kv switches" }, ...["send", "click", "open", "bounce"].flatMap((kind) => [
      el("dt", { text: { send: "Sends", click: "Clicks", open: "Opens", bounce: "Bounces" }[kind] }),
      el("dd", { "data-switch": kind, text: settings[kind] ? "Yes" : "No" })])));
  } else {
    parts.push(el("h3", { text: "Opt in/out synchronization" }));
    parts.push(el("dl", { class: "kv" },
      el("dt", { text: "Direction" }), el("dd", { class: "direction", text: settings.direction || "disabled" }),
      ...(settings.pairs || []).flatMap((p) => [el("dt", { text: p.dynamics }), el("dd", { text: "⇄ " + p.campaign })])));
  }
  parts.push(el("h3", { text: `Dead letters (${workflow.counters.dead_letters})` }));
  if (letters.length === 0) {
    parts.push(el("p", { class: "note", text: "No dead letters." }));
  } else {
    parts.push(el("table", { class: "dead-letters" },
      el("thead", {}, el("tr", {}, el("th", { text: "Id" }), el("th", { text: "Stage" }), el("th", { text: "Origin" }),
        el("th", { text: "Reason" }), el("th", { text: "Actions" }))),
      el("tbody", {}, ...letters.map((letter) => el("tr", { "data-letter": letter.id },
        el("td", { text: String(letter.id) }), el("td", { text: letter.stage }), el("td", { text: letter.origin }),
        el("td", { text: letter.reason }),
        el("td", {}, el("div", { class: "actions" },
          button("Retry", { id: `retry-${letter.id}`, "aria-label": `Retry dead letter ${letter.id}`, onclick: () => deadLetter(letter.id, "retry") }),
          button("Drop", { id: `drop-${letter.id}`, class: "danger", "aria-label": `Drop dead letter ${letter.id}`, onclick: () => deadLetter(letter.id, "drop") }))))))));
  }
  if (state.lastError) parts.push(el("p", { class: "error-text", role: "alert", text: state.lastError }));
  const focused = document.activeElement && document.activeElement.id;
  const html = parts.map((p) => p.outerHTML).join("");
  if (section.dataset.rendered !== html) {
    section.replaceChildren(...parts);
    section.dataset.rendered = html;
    if (focused && document.getElementById(focused)) document.getElementById(focused).focus();
  }
  section.hidden = false;
}

async function replay(mapping) {
  try {
    await call("POST", `/api/workflows/ingress/replay/${encodeURIComponent(mapping)}`);
    delete state.refused[mapping];
    showError("");
  } catch (error) {
    state.refused[mapping] = "Refused: " + error.message;
  }
  poll();
}

async function deadLetter(id, action) {
  try {
    await call("POST", `/api/workflows/${state.detail}/dead-letters/${id}/${action}`);
    showError("");
  } catch (error) {
    showError(`${action} dead letter ${id}: ${error.message}`);
  }
  poll();
}

// ---- audit trail -----------------------------------------------------------------------

function renderAudit(entries) {
  // Rebuilt only when a new entry arrived: the table holds no focusable controls.
  const shown = entries.map((entry) => entry.id).join(",");
  if (shown === state.auditShown) return;
  state.auditShown = shown;
  const rows = entries.map((entry) => {
    const by = entry.caller.auth + " · " + entry.caller.via + (entry.caller.peer ? " · " + entry.caller.peer : "");
    return el("tr", { class: "outcome-" + entry.outcome },
      el("td", { "data-label": "Time", text: new Date(entry.at_ms).toLocaleString() }),
      el("td", { "data-label": "Action", text: entry.action }),
      el("td", { "data-label": "Target", text: entry.target }),
      el("td", { "data-label": "By", text: by }),
      el("td", { "data-label": "Outcome", text: entry.outcome }),
      el("td", { "data-label": "Detail", text: entry.detail }));
  });
  if (rows.length === 0) rows.push(el("tr", {}, el("td", { colspan: "6", class: "note", text: "No changes recorded yet." })));
  document.getElementById("audit-rows").replaceChildren(...rows);
}

// ---- loop --------------------------------------------------------------------------------

function route() {
  const match = location.hash.match(/^#\/workflow\/(\w+)/);
  state.detail = match ? match[1] : null;
}

let polling = false;
async function poll() {
  if (polling) return;
  polling = true;
  try {
    const view = await call("GET", "/api/workflows");
    renderWorkflows(view);
    await renderDetail(view);
    renderAudit(await call("GET", "/api/audit?limit=" + AUDIT_ROWS));
    if (!state.lastError) setText(document.getElementById("connection"), "Live · updated " + new Date().toLocaleTimeString());
  } catch (error) {
    showError("Cannot reach the host: " + error.message);
  } finally {
    polling = false;
  }
}

window.addEventListener("hashchange", () => { route(); poll(); });
document.getElementById("crumb-home").addEventListener("click", (event) => { event.preventDefault(); location.hash = ""; });
route();
poll();
setInterval(poll, POLL_MS);

// The skipped count with its reasons: nothing new to write, or a record Conduit did not create.
function skippedText(counters) {
  const reasons = [];
  if (counters.skipped_unchanged) reasons.push(`${counters.skipped_unchanged} unchanged`);
  if (counters.skipped_not_owned) {
    reasons.push(`${counters.skipped_not_owned} not created by Conduit, left alone`);
  }
  return reasons.length ? `${counters.skipped} (${reasons.join("; ")})` : String(counters.skipped);
}

// ---- restart preview -----------------------------------------------------------------------

// A "Preview the restart" button under the pending changes (Ingress): what the restart would
// write differently, per record, on a sample of source records (POST .../preview; nothing is
// written).
function previewControl(id) {
  if (id !== "ingress") return null;
  const box = el("div", { id: "preview-result", "aria-live": "polite" });
  const start = button("Preview the restart", { id: "preview-restart",
    onclick: () => showPreview(id, box) });
  return el("div", { class: "preview" }, start, box);
}

function describeChange(record) {
  const fields = record.fields.map((field) => `${field.field}: ${JSON.stringify(field.before)} → ${JSON.stringify(field.after)}`).join("; ");
  switch (record.change) {
    case "fields": return `${record.key}: ${fields}`;
    case "written": return `${record.key} newly written: ${fields}`;
    case "filtered": return `${record.key} newly filtered out (${record.reason || "filter"})`;
    case "deleted": return `${record.key} newly deleted`;
    case "rejected": return `${record.key} newly dead-lettered: ${record.reason || ""}`;
    default: return `${record.key}: ${record.change}`;
  }
}

async function showPreview(id, box) {
  box.replaceChildren(el("p", { text: "Reading a sample of source records…" }));
  try {
    const report = await call("POST", `/api/workflows/${id}/preview?limit=50`);
    const parts = [];
    for (const mapping of report.mappings) {
      parts.push(el("h4", { text: `${mapping.mapping} (${mapping.status}): ${mapping.records_read} read, ${mapping.records.length} would change` }));
      if (mapping.pending_error) parts.push(el("p", { class: "problems", text: "The pending plugin fails: " + mapping.pending_error }));
      if (mapping.records.length) {
        parts.push(el("ul", { class: "pending-list" }, ...mapping.records.map((change) => el("li", { text: describeChange(change) }))));
      }
    }
    parts.push(el("p", { class: "hint", text: "A changed record is written with the new values at its next change, or at once by Replay Data." }));
    box.replaceChildren(...parts);
  } catch (error) {
    box.replaceChildren(el("p", { text: "Preview failed: " + error.message }));
  }
}

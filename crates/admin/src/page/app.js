// The Workflows page: polls the admin API and renders the workflows table, a workflow's
// detail (mappings with Replay Data, event switches, opt-out direction, dead letters), the
// editor of a workflow's config section (behind Edit; see editor.js's part below), and the
// latest entries of the audit trail. Rows are updated in place so keyboard focus survives the
// live updates.
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
    "aria-label": `Edit the configuration of ${workflow.name}`,
    onclick: () => { location.hash = `#/edit/${workflow.id}`; } });
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

// ---- detail ------------------------------------------------------------------------------

function button(text, attrs) { return el("button", Object.assign({ type: "button", text }, attrs)); }

async function renderDetail(view) {
  const section = document.getElementById("detail");
  const crumb = document.getElementById("crumb-detail");
  const workflow = view.workflows.find((w) => w.id === state.detail);
  if (!workflow) {
    section.hidden = true;
    setText(crumb, editor.id ? " › Edit " + (WORKFLOW_NAMES[editor.id] || editor.id) : "");
    return;
  }
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

// ---- workflow editor ------------------------------------------------------------------
// Edit opens the workflow's section as a form. Every change is checked by the host (the
// validator of `conduit config check`) a moment after typing stops, and problems show at their
// fields. Save sends the section with the version of the file it was loaded from; the host
// writes it into the TOML (comments kept) or refuses: invalid, changed meanwhile, read-only.

const editor = { id: null, version: null, draft: null, choices: null, pending: [], metadata: {}, timer: null, local: {}, seq: 0 };
const WORKFLOW_NAMES = { ingress: "Microsoft Dynamics 365 to Campaign", egress: "Campaign to Microsoft Dynamics 365", optinout: "Opt In/Out" };

// A call whose refusals carry a body the editor reads (problems, the current text, a patch).
async function send(method, path, body) {
  const headers = { "X-Conduit-Request": "page", "Content-Type": "application/json" };
  if (token()) headers["Authorization"] = "Bearer " + token();
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  let answer = null;
  try { answer = await response.json(); } catch (_) { answer = null; }
  return { status: response.status, body: answer };
}

function pathText(parts) {
  return parts.map((part, i) => typeof part === "number" ? `[${part}]` : (i ? "." + part : part)).join("");
}
function fieldId(parts) { return "f-" + parts.join("-").replace(/[^\w-]/g, "_"); }
function getAt(parts) {
  let node = editor.draft;
  for (const part of parts) { if (node === null || node === undefined) return undefined; node = node[part]; }
  return node;
}
function setAt(parts, value) {
  let node = editor.draft;
  parts.slice(0, -1).forEach((part, i) => {
    if (node[part] === null || node[part] === undefined) node[part] = typeof parts[i + 1] === "number" ? [] : {};
    node = node[part];
  });
  node[parts[parts.length - 1]] = value;
}

function edited() { scheduleCheck(); setText(document.getElementById("editor-state"), "Unsaved changes"); }

// One labelled control with the place its problems show.
function field(label, parts, control, wide) {
  const id = fieldId(parts);
  control.id = id;
  control.dataset.path = pathText(parts);
  control.setAttribute("aria-describedby", "err-" + id);
  return el("div", { class: "field" + (wide ? " wide" : "") },
    el("label", { for: id, text: label }), control,
    el("span", { class: "field-error", id: "err-" + id, role: "status" }));
}
function textInput(label, parts, options) {
  const opts = options || {};
  const input = el("input", { type: "text", value: getAt(parts) ?? "", list: opts.list, autocomplete: "off", spellcheck: "false" });
  input.addEventListener("input", () => { setAt(parts, input.value === "" && opts.nullable ? null : input.value); edited(); });
  return field(label, parts, input, opts.wide);
}
function numberInput(label, parts) {
  const input = el("input", { type: "number", min: "0", inputmode: "numeric", value: getAt(parts) ?? "" });
  input.addEventListener("input", () => { const v = input.value.trim(); setAt(parts, v === "" ? null : Number(v)); edited(); });
  return field(label, parts, input);
}
function checkbox(label, parts, fallback) {
  const id = fieldId(parts);
  const value = getAt(parts);
  const input = el("input", { type: "checkbox", id, checked: value === undefined || value === null ? fallback : value });
  input.dataset.path = pathText(parts);
  input.setAttribute("aria-describedby", "err-" + id);
  input.addEventListener("change", () => { setAt(parts, input.checked); edited(); });
  return el("div", { class: "field check" }, input, el("label", { for: id, text: label }),
    el("span", { class: "field-error", id: "err-" + id, role: "status" }));
}
function select(label, parts, options, fallback, onchange) {
  const current = String(getAt(parts) ?? fallback);
  const control = el("select", {}, ...options.map(([value, text]) =>
    el("option", { value, text, selected: value === current })));
  if (!options.some(([value]) => value === current)) control.prepend(el("option", { value: current, text: current, selected: true }));
  control.addEventListener("change", () => { (onchange || ((v) => setAt(parts, v)))(control.value); edited(); });
  return field(label, parts, control);
}
function settingsInput(label, parts) {
  const key = pathText(parts);
  const value = getAt(parts);
  const area = el("textarea", { rows: "3", spellcheck: "false" });
  area.value = value && Object.keys(value).length ? JSON.stringify(value, null, 2) : "";
  area.addEventListener("input", () => {
    const error = document.getElementById("err-" + fieldId(parts));
    try {
      const parsed = area.value.trim() === "" ? null : JSON.parse(area.value);
      if (parsed !== null && (typeof parsed !== "object" || Array.isArray(parsed))) throw new Error("write a JSON object");
      setAt(parts, parsed);
      delete editor.local[key];
      setText(error, "");
      area.removeAttribute("aria-invalid");
      edited();
    } catch (problem) {
      editor.local[key] = "not valid JSON: " + problem.message;
      setText(error, editor.local[key]);
      area.setAttribute("aria-invalid", "true");
    }
  });
  return field(label, parts, area, true);
}

// A list of rows (fields, replacements, rules, pairs, mappings) with Add and Remove.
function listBlock(title, parts, makeRow, fresh, noun) {
  const items = getAt(parts) || [];
  const addId = "add-" + fieldId(parts);
  const block = el("fieldset", { class: "list", "data-path": pathText(parts) },
    el("legend", { text: title }), el("span", { class: "field-error", role: "status" }));
  items.forEach((_, i) => {
    const row = [...parts, i];
    block.append(el("div", { class: "row", "data-path": pathText(row) }, ...makeRow(row),
      button("Remove", { class: "danger remove", "aria-label": `Remove ${noun} ${i + 1}`, onclick: () => {
        const list = getAt(parts);
        list.splice(i, 1);
        renderEditor(addId);
        edited();
      } })));
  });
  block.append(button(`Add ${noun}`, { id: addId, onclick: () => {
    const list = getAt(parts) || [];
    const item = fresh();
    list.push(item);
    setAt(parts, list);
    renderEditor(fieldId([...parts, list.length - 1, Object.keys(item)[0]]));
    edited();
  } }));
  return block;
}

function pacingAndLimits() {
  return el("details", { class: "advanced" }, el("summary", { text: "Pacing and limits" }),
    el("div", { class: "grid" },
      numberInput("Records per page", ["pacing", "page_size"]),
      numberInput("Records per write batch", ["pacing", "write_batch"]),
      numberInput("Poll interval (ms)", ["pacing", "poll_interval_ms"]),
      numberInput("Plugin deadline (ms)", ["limits", "plugin_deadline_ms"]),
      numberInput("Plugin memory (MiB)", ["limits", "plugin_memory_mb"]),
      numberInput("Failures before ERROR", ["limits", "failure_threshold"]),
      numberInput("Replay limit (rows)", ["limits", "replay_max_rows"]),
      numberInput("Wait for a missing record (s)", ["limits", "missing_record_wait_secs"])));
}

function pluginInput() {
  return el("div", { class: "grid" },
    textInput("Plugin (builtin: name or .wasm path)", ["plugin"], { list: "dl-plugins", wide: true }),
    settingsInput("Plugin settings (JSON object, for a custom plugin)", ["settings"]));
}

// Runs `then` when the control in a field wrapper is changed and left (not on every key).
function withChange(wrapper, then) {
  wrapper.querySelector("input, select, textarea").addEventListener("change", then);
  return wrapper;
}

function mappingBlock(i) {
  const p = ["mappings", i];
  const mapping = getAt(p);
  const rulesPath = [...p, "filters", "rules"];
  return el("fieldset", { class: "mapping", "data-path": pathText(p) },
    el("legend", { text: `Table mapping ${mapping.name || i + 1}` }),
    el("span", { class: "field-error", role: "status" }),
    button("Remove this mapping", { class: "danger", id: `remove-mapping-${i}`,
      "aria-label": `Remove table mapping ${mapping.name || i + 1}`, onclick: () => {
        editor.draft.mappings.splice(i, 1);
        renderEditor("add-mapping");
        edited();
      } }),
    el("div", { class: "grid" },
      textInput("Name", [...p, "name"]),
      withChange(textInput("Dynamics 365 table", [...p, "source"], { list: "dl-tables" }), refreshLists),
      withChange(textInput("Campaign resource", [...p, "destination"], { list: "dl-resources" }), refreshLists),
      textInput("Key in Dynamics 365", [...p, "key", "source"], { list: `dl-d365-${i}` }),
      textInput("Identification key in Campaign", [...p, "key", "destination"], { list: `dl-campaign-${i}` })),
    el("p", { class: "note", id: `metadata-note-${i}`, role: "status" }),
    listBlock("Fields", [...p, "fields"], (row) => [
      textInput("Dynamics 365 field", [...row, "source"], { list: `dl-d365-${i}` }),
      textInput("Campaign field", [...row, "destination"], { list: `dl-campaign-${i}` }),
      checkbox("Apply updates", [...row, "apply_updates"], true)],
      () => ({ source: "", destination: "", apply_updates: true }), "field"),
    listBlock("Replacements", [...p, "replacements"], (row) => [
      textInput("Field", [...row, "field"], { list: `dl-d365-${i}` }),
      textInput("Value", [...row, "from"]),
      textInput("Replaced by", [...row, "to"])],
      () => ({ field: "", from: "", to: "" }), "replacement"),
    el("fieldset", { class: "list", "data-path": pathText([...p, "filters"]) },
      el("legend", { text: "Filters" }), el("span", { class: "field-error", role: "status" }),
      select("Records pass when", [...p, "filters", "combine"],
        editor.choices.combines.map((c) => [c, c === "and" ? "all rules hold (AND)" : "any rule holds (OR)"]), "and"),
      listBlock("Rules", rulesPath, (row) => [
        textInput("Field", [...row, "field"], { list: `dl-d365-${i}` }),
        select("Operator", [...row, "op"], editor.choices.filter_ops.map((o) => [o, o]), "eq", (op) => {
          setAt([...row, "op"], op);
          if (op === "null" || op === "notnull") setAt([...row, "value"], null);
          renderEditor(fieldId([...row, "op"]));
        }),
        textInput("Value", [...row, "value"], { nullable: true })],
        () => ({ field: "", op: "eq", value: "" }), "rule"),
      checkbox("Delete filtered-out records in Campaign", [...p, "filters", "delete_filtered_out"], false)),
    el("div", { class: "grid" },
      checkbox("Apply deletes", [...p, "apply_deletes"], true),
      select("Picklists", [...p, "technical_picklist_values"],
        [["false", "Display labels"], ["true", "Technical (numeric) values"]], "false",
        (v) => setAt([...p, "technical_picklist_values"], v === "true")),
      settingsInput("Plugin settings of this mapping (JSON object)", [...p, "settings"])));
}

function datalists() {
  const mappings = (editor.draft && editor.draft.mappings) || [];
  const unique = (values) => [...new Set(values.filter(Boolean))];
  const list = (id, values) => el("datalist", { id }, ...unique(values).map((value) => el("option", { value })));
  return el("div", { id: "editor-lists", hidden: true },
    list("dl-plugins", editor.choices.builtin_plugins),
    list("dl-tables", mappings.map((mapping) => mapping.source)),
    list("dl-resources", mappings.map((mapping) => mapping.destination)),
    ...mappings.flatMap((mapping, i) => [
      list(`dl-d365-${i}`, [mapping.key && mapping.key.source, ...(mapping.fields || []).map((pair) => pair.source)]),
      list(`dl-campaign-${i}`, [mapping.key && mapping.key.destination, ...(mapping.fields || []).map((pair) => pair.destination)])]),
    list("dl-opt-out", editor.choices.opt_out_attributes));
}

// Rebuilds the pickers (a mapping's table changed) without touching the form or its focus.
function refreshLists() {
  const lists = document.getElementById("editor-lists");
  if (lists) lists.replaceWith(datalists());
  ((editor.draft && editor.draft.mappings) || []).forEach((_, i) => fillMetadata(i));
}

// The fields of a table as the service describes it, asked once per editor.
function metadataFor(system, table) {
  const key = system + "/" + table;
  if (!editor.metadata[key]) {
    editor.metadata[key] = send("GET", `/api/metadata/${system}/${encodeURIComponent(table)}`).then((answer) =>
      answer.status === 200 ? { fields: answer.body } : { error: (answer.body && answer.body.error) || `the host answered ${answer.status}` });
  }
  return editor.metadata[key];
}

// Adds the services' fields, with their types as labels, to a mapping's pickers.
async function fillMetadata(i) {
  const mapping = ((editor.draft && editor.draft.mappings) || [])[i];
  if (!mapping) return;
  const notes = [];
  for (const [system, table, listId, service] of [["dynamics", mapping.source, `dl-d365-${i}`, "Dynamics 365"],
    ["campaign", mapping.destination, `dl-campaign-${i}`, "Campaign"]]) {
    if (!table) continue;
    const answer = await metadataFor(system, table);
    const list = document.getElementById(listId);
    if (!list) return;
    if (answer.fields) {
      const options = new Map([...list.options].map((option) => [option.value, option]));
      for (const field of answer.fields) {
        const option = options.get(field.name) || list.appendChild(el("option", { value: field.name }));
        option.label = field.kind;
      }
    } else {
      notes.push(`The ${service} fields of ${table} cannot be listed (${answer.error}); type their names.`);
    }
  }
  const note = document.getElementById(`metadata-note-${i}`);
  if (note) setText(note, notes.join(" "));
}

function renderEditor(focusId) {
  const section = document.getElementById("editor");
  const id = editor.id;
  const parts = [el("h2", { id: "editor-title", tabindex: "-1", text: `Edit ${WORKFLOW_NAMES[id] || id}` }),
    el("p", { class: "note", text: "Changes are written into the config file (its comments and layout kept) and apply at the next Stop and Start. Field pickers list the fields Dynamics 365 and Campaign describe, with their types; a name can also be typed." }),
    datalists()];
  if (editor.pending.length) {
    parts.push(el("div", { class: "problems" }, el("strong", { text: "Changes pending restart (Stop and Start the workflow to use them):" }),
      el("ul", { id: "editor-pending", class: "pending-list" }, ...editor.pending.map((line) => el("li", { text: line }))),
      previewControl(id)));
  }
  if (id === "ingress") {
    parts.push(pluginInput(), el("h3", { text: "Table mappings" }));
    ((editor.draft.mappings) || []).forEach((_, i) => parts.push(mappingBlock(i)));
    parts.push(el("div", { class: "actions" },
      button("Add table mapping", { id: "add-mapping", onclick: () => {
        editor.draft.mappings = editor.draft.mappings || [];
        editor.draft.mappings.push({ name: "", source: "", destination: "", key: { source: "", destination: "" }, fields: [] });
        renderEditor(fieldId(["mappings", editor.draft.mappings.length - 1, "name"]));
        edited();
      } })));
  } else if (id === "egress") {
    parts.push(pluginInput(), el("fieldset", { class: "list" }, el("legend", { text: "Campaign events sent to Dynamics 365" }),
      el("div", { class: "grid" }, checkbox("Sends", ["send"], false), checkbox("Opens", ["open"], false),
        checkbox("Clicks", ["click"], false), checkbox("Bounces (hard)", ["bounce"], false))));
  } else {
    parts.push(pluginInput(),
      select("Direction", ["direction"], editor.choices.directions.map((d) => [d, d]), "disabled"),
      listBlock("Attribute pairs", ["pairs"], (row) => [
        textInput("Dynamics 365 field", [...row, "dynamics"]),
        textInput("Campaign attribute", [...row, "campaign"], { list: "dl-opt-out" })],
        () => ({ dynamics: "", campaign: "" }), "pair"));
  }
  parts.push(pacingAndLimits(),
    el("div", { id: "editor-problems", class: "problems", role: "alert", hidden: true }),
    el("div", { class: "actions editor-actions" },
      button("Save", { id: "editor-save", class: "primary", onclick: saveEditor }),
      button("Back to workflows", { id: "editor-close", onclick: () => { location.hash = ""; } }),
      el("span", { id: "editor-state", class: "note", role: "status" })),
    el("div", { id: "editor-outcome", "aria-live": "polite" }));
  const outcome = document.getElementById("editor-outcome");
  const kept = outcome ? [...outcome.childNodes] : [];
  const state = document.getElementById("editor-state");
  const stateText = state ? state.textContent : "";
  section.replaceChildren(...parts);
  document.getElementById("editor-outcome").append(...kept);
  setText(document.getElementById("editor-state"), stateText);
  section.hidden = false;
  showProblems(editor.problems || []);
  const focus = focusId && document.getElementById(focusId);
  if (focus) focus.focus();
  ((editor.draft && editor.draft.mappings) || []).forEach((_, i) => fillMetadata(i));
}

async function openEditor(id) {
  editor.id = id;
  const answer = await send("GET", `/api/workflows/${id}/edit`);
  if (answer.status !== 200) {
    showError(`edit ${id}: ${(answer.body && answer.body.error) || answer.status}`);
    return;
  }
  loadEditor(answer.body);
  document.getElementById("detail").hidden = true;
  document.getElementById("editor").replaceChildren();
  renderEditor();
  document.getElementById("editor-title").focus();
}

function loadEditor(loaded) {
  editor.version = loaded.version;
  editor.draft = loaded.section || {};
  editor.choices = loaded.choices;
  editor.pending = loaded.pending_changes ? loaded.pending_summary : [];
  editor.metadata = {};
  editor.problems = [];
  editor.local = {};
}

function closeEditor() {
  editor.id = null;
  editor.draft = null;
  const section = document.getElementById("editor");
  section.hidden = true;
  section.replaceChildren();
}

function scheduleCheck() {
  clearTimeout(editor.timer);
  editor.timer = setTimeout(checkEditor, 400);
}

async function checkEditor() {
  if (!editor.id) return;
  const seq = ++editor.seq;
  const answer = await send("POST", `/api/workflows/${editor.id}/edit/check`, { version: editor.version, section: editor.draft });
  if (seq !== editor.seq || !editor.id) return;
  if (answer.status === 200) showProblems(answer.body.field_problems);
  else showProblems([{ path: null, message: (answer.body && answer.body.error) || "the host answered " + answer.status }]);
}

// The element a problem belongs to: the control at its path, else the nearest enclosing one.
function placeOf(path) {
  let at = path;
  while (at) {
    const found = document.querySelector(`#editor [data-path="${CSS.escape(at)}"]`);
    if (found) return found;
    const cut = Math.max(at.lastIndexOf("."), at.lastIndexOf("["));
    at = cut > 0 ? at.slice(0, cut) : "";
  }
  return null;
}

function showProblems(problems) {
  editor.problems = problems;
  const root = document.getElementById("editor");
  for (const node of root.querySelectorAll(".field-error")) setText(node, "");
  for (const node of root.querySelectorAll("[aria-invalid]")) node.removeAttribute("aria-invalid");
  for (const node of root.querySelectorAll(".has-problem")) node.classList.remove("has-problem");
  for (const [key, message] of Object.entries(editor.local)) {
    const place = placeOf(key);
    if (place) { place.setAttribute("aria-invalid", "true"); setText(document.getElementById(place.getAttribute("aria-describedby")), message); }
  }
  const summary = document.getElementById("editor-problems");
  const items = problems.map((problem) => {
    const text = problem.message + (problem.hint ? ` (${problem.hint})` : "");
    const place = problem.path ? placeOf(problem.path) : null;
    if (place) {
      const note = place.matches("input, select, textarea")
        ? document.getElementById(place.getAttribute("aria-describedby"))
        : place.querySelector(":scope > .field-error");
      if (note) setText(note, note.textContent ? note.textContent + " · " + text : text);
      place.setAttribute("aria-invalid", "true");
      place.classList.add("has-problem");
    }
    const where = problem.path ? problem.path : `line ${problem.line}`;
    return el("li", {}, place
      ? el("a", { href: "#", text: `${where}: ${text}`, onclick: (event) => { event.preventDefault(); focusPlace(place); } })
      : el("span", { text: `${where}: ${text}` }));
  });
  summary.replaceChildren(...(items.length ? [el("strong", { text: `${items.length} problem(s); the file is not written until they are fixed:` }), el("ul", {}, ...items)] : []));
  summary.hidden = items.length === 0;
}

function focusPlace(place) {
  const target = place.matches("input, select, textarea, button") ? place : place.querySelector("input, select, textarea, button");
  if (target) target.focus();
}

async function saveEditor() {
  if (Object.keys(editor.local).length) { showProblems(editor.problems); return; }
  clearTimeout(editor.timer);
  editor.seq++;
  const outcome = document.getElementById("editor-outcome");
  const answer = await send("POST", `/api/workflows/${editor.id}/edit`, { version: editor.version, section: editor.draft });
  outcome.replaceChildren();
  if (answer.status === 200) {
    const saved = answer.body || {};
    showProblems([]);
    editor.version = saved.version;
    const parts = [el("p", { class: "saved", id: "editor-saved", role: "status",
      text: saved.changed ? "Saved. The workflow uses the change after its next Stop and Start." : "Nothing changed." })];
    if (saved.diff) parts.push(el("h3", { text: "What changed in the file" }), el("pre", { id: "editor-diff", class: "diff", tabindex: "0", text: saved.diff }));
    outcome.append(...parts);
    setText(document.getElementById("editor-state"), "Saved");
    const fresh = await send("GET", `/api/workflows/${editor.id}/edit`);
    if (fresh.status === 200) { loadEditor(fresh.body); renderEditor("editor-save"); }
    poll();
    return;
  }
  const refusal = answer.body || {};
  if (refusal.refusal === "invalid") {
    showProblems(refusal.field_problems || []);
    const first = document.querySelector("#editor [aria-invalid]");
    if (first) focusPlace(first);
    setText(document.getElementById("editor-state"), "Not saved: fix the problems shown");
    return;
  }
  const parts = [el("p", { class: "error-text", id: "editor-refused", role: "alert", text: refusal.error || `the host answered ${answer.status}` })];
  if (refusal.refusal === "changed") {
    parts.push(el("h3", { text: "The other change" }),
      el("pre", { id: "editor-other-change", class: "diff", tabindex: "0", text: refusal.other_change || refusal.current_text || "" }),
      button("Load the current file (discards these edits)", { id: "editor-reload", onclick: () => openEditor(editor.id) }));
  } else if (refusal.refusal === "read_only") {
    const blob = URL.createObjectURL(new Blob([refusal.patch || ""], { type: "text/x-diff" }));
    parts.push(el("h3", { text: "The change as a patch" }),
      el("pre", { id: "editor-patch", class: "diff", tabindex: "0", text: refusal.patch || "" }),
      el("a", { href: blob, download: "conduit-toml.patch", text: "Download the patch" }));
  }
  outcome.append(...parts);
  setText(document.getElementById("editor-state"), "Not saved");
}

// ---- loop --------------------------------------------------------------------------------

function route() {
  const match = location.hash.match(/^#\/workflow\/(\w+)/);
  state.detail = match ? match[1] : null;
  const editing = location.hash.match(/^#\/edit\/(\w+)/);
  const id = editing ? editing[1] : null;
  if (id !== editor.id) {
    if (id) openEditor(id); else closeEditor();
  }
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

// A "Preview the restart" button under the pending changes of any workflow: what the restart
// would write differently, per record, on a sample of what the workflow reads (Ingress's rows,
// Egress's email events, Opt-in/out's contacts; POST .../preview; nothing is written).
function previewControl(id) {
  const box = el("div", { id: "preview-result", "aria-live": "polite" });
  const start = button("Preview the restart", { id: "preview-restart",
    onclick: () => showPreview(id, box) });
  return el("div", { class: "preview" }, start, box);
}

// When what the preview shows reaches the data, per workflow.
const PREVIEW_HINTS = {
  ingress: "A changed record is written with the new values at its next change, or at once by Replay Data.",
  egress: "Events read after the restart are mapped this way; activities already written stay as they are (verify with repair maps them again).",
  optinout: "A contact's flags are resolved this way at its next change. (not written): that rule writes nothing for the flag.",
};

function describeChange(record) {
  const shown = (value) => (value === null ? "(not written)" : JSON.stringify(value));
  const fields = record.fields.map((change) => `${change.field}: ${shown(change.before)} → ${shown(change.after)}`).join("; ");
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
  box.replaceChildren(el("p", { text: "Reading a sample of what the workflow reads…" }));
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
    parts.push(el("p", { class: "hint", text: PREVIEW_HINTS[id] || "" }));
    box.replaceChildren(...parts);
  } catch (error) {
    box.replaceChildren(el("p", { text: "Preview failed: " + error.message }));
  }
}

// aopkit Studio page. Every piece of content goes into the DOM through textContent or a DOM
// property, never as HTML: a message that contains markup shows as text.
"use strict";

const MAX_ROWS = 3000; // per list: older rows leave the DOM (the server keeps the log)
const $ = (id) => document.getElementById(id);

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function clock(t) {
  return typeof t === "number" ? new Date(t * 1000).toLocaleTimeString() : "";
}

function short(value, n = 300) {
  const s = typeof value === "string" ? value : JSON.stringify(value);
  return s && s.length > n ? s.slice(0, n) + "…" : s;
}

function textOf(msg) {
  if (typeof msg.content === "string") return msg.content;
  return msg.content.filter((b) => b.type === "text").map((b) => b.text).join("\n");
}

// -- state ----------------------------------------------------------------------------------
let lastSeq = 0;
const hubs = new Map(); // hub -> Set of agents
const running = new Map(); // agent -> replies in progress
let watched = new Set();
const incidents = new Map();
const approvals = new Map();
const inputs = new Map();
const hiddenTypes = new Set();

// -- rendering messages ---------------------------------------------------------------------
function mediaSource(source) {
  if (!source) return null;
  if (source.type === "url" && /^https?:\/\//i.test(source.url)) return source.url;
  if (source.type === "base64" && /^(image|audio|video)\/[\w.+-]+$/.test(source.media_type)) {
    return "data:" + source.media_type + ";base64," + source.data;
  }
  return null;
}

function renderBlock(block) {
  switch (block.type) {
    case "text":
      return el("div", "text", block.text);
    case "thinking": {
      const box = el("details", "thinking");
      box.append(el("summary", null, "thinking"), el("div", null, block.thinking));
      return box;
    }
    case "tool_use": {
      const args = block.raw_input != null ? block.raw_input : JSON.stringify(block.input);
      return el("div", "tool-use", "→ " + block.name + "(" + args + ")  #" + block.id);
    }
    case "tool_result": {
      const box = el("div", "tool-result" + (block.is_error ? " error" : ""));
      box.append("← " + block.name + ": ");
      if (typeof block.output === "string") box.append(block.output);
      else for (const inner of block.output) box.append(renderBlock(inner));
      return box;
    }
    case "image":
    case "audio":
    case "video": {
      const src = mediaSource(block.source);
      if (!src) return el("div", "text", "[" + block.type + ": " + short(block.source, 120) + "]");
      const node = el(block.type === "image" ? "img" : block.type);
      if (block.type !== "image") node.controls = true;
      else node.alt = "image";
      node.src = src;
      return node;
    }
    default:
      return el("div", "tool-use", "[" + block.type + "] " + short(block, 500));
  }
}

function renderMsg(msg) {
  const box = el("div", "msg");
  box.dataset.role = msg.role;
  const head = el("div", "head");
  head.append(el("span", "name", msg.name), el("span", "role", msg.role), el("span", "t", clock(msg.timestamp)));
  const usage = msg.metadata && msg.metadata.usage;
  if (usage && typeof usage === "object") head.append(el("span", "usage-line", usageLine(usage)));
  box.append(head);
  if (typeof msg.content === "string") box.append(el("div", "text", msg.content));
  else for (const block of msg.content) box.append(renderBlock(block));
  return box;
}

// -- usage ----------------------------------------------------------------------------------
function count(n) {
  return typeof n === "number" ? String(n) : "?"; // a count the server did not report is unknown
}

function dollars(n) {
  if (typeof n !== "number") return "?";
  return "$" + (n < 1 ? n.toFixed(6) : n.toFixed(2));
}

function usageLine(u) {
  let line = count(u.input_tokens) + " in · " + count(u.output_tokens) + " out";
  if (u.calls > 1) line += " · " + u.calls + " calls";
  if (u.cost !== undefined && u.cost !== null) line += " · " + dollars(u.cost);
  return line;
}

const USAGE_COLUMNS = [
  ["calls", (u) => String(u.calls)],
  ["retries", (u) => String(u.retries)],
  ["input", (u) => count(u.input_tokens)],
  ["cached", (u) => count(u.cached_input_tokens)],
  ["output", (u) => count(u.output_tokens)],
  ["reasoning", (u) => count(u.reasoning_tokens)],
  ["cost", (u) => dollars(u.cost)],
  ["refused", (u) => String(u.refused)],
];

function usageTable(table, first, rows) {
  const head = el("tr");
  head.append(el("th", null, first));
  for (const [name] of USAGE_COLUMNS) head.append(el("th", null, name));
  const body = [head];
  for (const [name, u, cls] of rows) {
    const tr = el("tr", cls);
    tr.dataset.name = name;
    tr.append(el("td", null, name));
    for (const [column, cell] of USAGE_COLUMNS) tr.append(el("td", column === "refused" && u.refused ? "refused" : null, cell(u)));
    body.push(tr);
  }
  table.replaceChildren(...body);
}

function budgetLine(name, u) {
  const b = u.budget;
  const parts = [];
  if (b.calls !== null) parts.push(u.calls + " of " + b.calls + " calls");
  if (b.tokens !== null) parts.push((u.input_tokens || 0) + (u.output_tokens || 0) + " of " + b.tokens + " tokens");
  if (b.cost !== null) parts.push(dollars(u.cost || 0) + " of " + dollars(b.cost));
  return name + ": " + (parts.join(", ") || "no limits") + (u.refused ? "; " + u.refused + " call(s) refused" : "");
}

function renderUsage(data) {
  const agents = Object.entries(data.agents).filter(([, u]) => u.calls || u.refused);
  $("usage-empty").hidden = data.total.calls > 0 || data.total.refused > 0;
  usageTable($("usage-agents"), "agent", [...agents.map(([n, u]) => [n, u, ""]), ["total", data.total, "total"]]);
  usageTable($("usage-models"), "model", Object.entries(data.models).map(([n, u]) => [n, u, ""]));
  const budgets = [];
  if (data.total.budget) budgets.push(el("li", null, budgetLine("kernel", data.total)));
  for (const [name, u] of Object.entries(data.agents)) if (u.budget) budgets.push(el("li", null, budgetLine("agent " + name, u)));
  if (!budgets.length) budgets.push(el("li", "muted", "no budget set"));
  $("usage-budgets").replaceChildren(...budgets);
  const notes = [];
  if (data.total.unreported) notes.push(el("li", null, data.total.unreported + " call(s) without token counts: ? is unknown, not zero"));
  if (data.total.unpriced) notes.push(el("li", null, data.total.unpriced + " call(s) with no price: costs count priced calls only"));
  $("usage-notes").replaceChildren(...notes);
}

let usageTimer = null;
async function loadUsage() {
  usageTimer = null;
  const response = await fetch("/api/usage", { credentials: "same-origin" });
  if (!response.ok) throw new Error(await response.text());
  renderUsage(await response.json());
}

function refreshUsageSoon() {
  if (usageTimer === null && !$("view-usage").hidden) usageTimer = setTimeout(() => loadUsage().catch(() => {}), 300);
}

// -- rendering events -----------------------------------------------------------------------
function summary(ev) {
  switch (ev.type) {
    case "message_sent":
      return ev.msg.name + ": " + short(textOf(ev.msg) || ev.msg.content.map((b) => b.type).join(", "));
    case "hub_joined":
      return ev.agent + " joined " + ev.hub;
    case "hub_left":
      return ev.agent + " left " + ev.hub;
    default: {
      const parts = [];
      for (const [key, value] of Object.entries(ev)) {
        if (key !== "type" && key !== "seq" && key !== "time") parts.push(key + "=" + short(value, 200));
      }
      return parts.join("  ");
    }
  }
}

function renderEvent(ev) {
  const row = el("div", "event");
  row.dataset.type = ev.type;
  row.append(el("span", "t", clock(ev.time)), el("span", "type", ev.type), el("span", "summary", summary(ev)));
  return row;
}

function chatLine(ev) {
  if (ev.type === "message_sent") {
    const msg = ev.msg;
    return clock(ev.time) + "  " + msg.name + ": " + (textOf(msg) || msg.content.map((b) => b.type).join(", ")) + "\n";
  }
  if (ev.type === "escalated") {
    const what = ev.resolution ? "resolved (" + ev.resolution + ")" : "escalated: " + ev.reason;
    return clock(ev.time) + "  incident " + ev.incident + " " + what + "\n";
  }
  return null;
}

const eventTypes = new Set();
function noteType(type) {
  if (eventTypes.has(type)) return;
  eventTypes.add(type);
  const label = el("label");
  const box = el("input");
  box.type = "checkbox";
  box.checked = true;
  box.dataset.type = type;
  box.addEventListener("change", () => {
    if (box.checked) hiddenTypes.delete(type);
    else hiddenTypes.add(type);
    applyFilter();
  });
  label.append(box, " " + type);
  $("event-types").append(label);
}

function visible(row) {
  const query = $("event-filter").value.toLowerCase();
  return !hiddenTypes.has(row.dataset.type) && (!query || row.textContent.toLowerCase().includes(query));
}

function applyFilter() {
  for (const row of $("events").children) row.hidden = !visible(row);
}

function append(container, fragment) {
  const stick = container.scrollTop + container.clientHeight >= container.scrollHeight - 40;
  container.append(fragment);
  while (container.childNodes.length > MAX_ROWS) container.firstChild.remove();
  if (stick) container.scrollTop = container.scrollHeight;
}

function applyEvents(events) {
  const messages = document.createDocumentFragment();
  const rows = document.createDocumentFragment();
  let chat = "";
  let agentsChanged = false;
  for (const ev of events) {
    if (ev.seq <= lastSeq) continue;
    lastSeq = ev.seq;
    noteType(ev.type);
    const row = renderEvent(ev);
    row.hidden = !visible(row);
    rows.append(row);
    const line = chatLine(ev);
    if (line) chat += line;
    switch (ev.type) {
      case "message_sent":
        messages.append(renderMsg(ev.msg));
        break;
      case "hub_joined":
        if (!hubs.has(ev.hub)) hubs.set(ev.hub, new Set());
        hubs.get(ev.hub).add(ev.agent);
        agentsChanged = true;
        break;
      case "hub_left":
        if (hubs.has(ev.hub)) hubs.get(ev.hub).delete(ev.agent);
        agentsChanged = true;
        break;
      case "reply_started":
        running.set(ev.agent, (running.get(ev.agent) || 0) + 1);
        agentsChanged = true;
        break;
      case "model_call_finished":
      case "budget_reached":
        refreshUsageSoon();
        break;
      case "reply_finished":
      case "reply_failed":
        running.set(ev.agent, Math.max(0, (running.get(ev.agent) || 1) - 1));
        agentsChanged = true;
        break;
    }
  }
  append($("messages"), messages);
  append($("events"), rows);
  if (chat) append($("chatlog"), document.createTextNode(chat));
  if (agentsChanged) {
    renderHubs();
    renderAgents();
  }
}

function renderHubs() {
  const box = $("hubs");
  box.replaceChildren();
  for (const [hub, members] of hubs) {
    if (!members.size) continue;
    const div = el("div", "hub");
    div.append(el("b", null, hub));
    for (const agent of members) div.append(el("span", "member", agent));
    box.append(div);
  }
}

function renderAgents() {
  const list = $("agents");
  list.replaceChildren();
  const names = new Set([...running.keys(), ...watched]);
  for (const name of [...names].sort()) {
    const busy = (running.get(name) || 0) > 0;
    const li = el("li", busy ? "running" : "");
    li.dataset.agent = name;
    li.append(el("span", "dot"), el("span", null, name));
    if (busy && watched.has(name)) {
      const stop = el("button", "small interrupt", "Interrupt");
      stop.addEventListener("click", () => post("/api/agents/" + encodeURIComponent(name) + "/interrupt", {}).catch(alert));
      li.append(stop);
    }
    list.append(li);
  }
}

// -- acting ---------------------------------------------------------------------------------
async function post(path, body) {
  const response = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
    credentials: "same-origin",
  });
  if (!response.ok) throw new Error(await response.text());
  return response.json();
}

function renderIncident(inc) {
  const card = el("div", "card incident");
  card.dataset.id = inc.id;
  card.append(el("h3", null, "Incident " + inc.id + ": " + inc.model + " could not produce a valid " + inc.target));
  const facts = el("dl");
  const fact = (name, value, pre) => facts.append(el("dt", null, name), pre ? wrap(el("pre", null, value)) : el("dd", null, value));
  const wrap = (node) => {
    const dd = el("dd");
    dd.append(node);
    return dd;
  };
  fact("reason", inc.reason);
  fact("request", inc.request, true);
  inc.outputs.forEach((out, i) => fact("raw output " + (i + 1), out, true));
  const tiers = el("ul", "plain");
  for (const t of inc.tiers) tiers.append(el("li", null, "tier " + t.tier + " " + t.by + ": " + t.outcome));
  if (!inc.tiers.length) tiers.append(el("li", null, "nothing could be tried"));
  facts.append(el("dt", null, "tiers tried"), wrap(tiers));
  if (inc.schema) fact("expected schema", JSON.stringify(inc.schema, null, 2), true);
  card.append(facts);
  const answer = el("textarea", "answer");
  answer.placeholder = "answer as JSON";
  answer.setAttribute("aria-label", "answer as JSON");
  const error = el("div", "error");
  const actions = el("div", "actions");
  const act = (label, cls, body) => {
    const button = el("button", cls, label);
    button.addEventListener("click", () => {
      error.textContent = "";
      post("/api/incidents/" + encodeURIComponent(inc.id), body()).catch((e) => (error.textContent = e.message));
    });
    actions.append(button);
  };
  act("Answer", "answer-button", () => ({ action: "answer", answer: answer.value }));
  act("Retry", "retry", () => ({ action: "retry" }));
  act("Abort", "abort", () => ({ action: "abort" }));
  card.append(answer, actions, error);
  return card;
}

function renderApproval(req) {
  const card = el("div", "card approval");
  card.dataset.id = req.id;
  card.append(el("h3", null, "Approval: " + req.agent + " asks to run " + req.calls.length + " tool call(s)" + (req.run ? " (run " + req.run + ")" : "")));
  const decisions = {};
  const error = el("div", "error");
  const send = () => {
    if (Object.keys(decisions).length < req.calls.length) return; // every call needs one
    post("/api/approvals/" + encodeURIComponent(req.id), { decisions }).catch((e) => {
      error.textContent = e.message;
      for (const key of Object.keys(decisions)) delete decisions[key];
    });
  };
  for (const call of req.calls) {
    const row = el("div", "call");
    row.dataset.call = call.id;
    row.append(el("b", null, call.tool), el("span", "muted", " " + call.id));
    const args = el("textarea", "arguments");
    args.value = JSON.stringify(call.arguments, null, 2);
    args.setAttribute("aria-label", "arguments of " + call.id + " as JSON");
    const reason = el("input", "reason");
    reason.placeholder = "reason (the model reads it)";
    reason.setAttribute("aria-label", "reason for " + call.id);
    const actions = el("div", "actions");
    const decide = (label, cls, make) => {
      const button = el("button", cls, label);
      button.addEventListener("click", () => {
        error.textContent = "";
        let decision;
        try {
          decision = make();
        } catch (e) {
          error.textContent = call.id + ": the arguments are not JSON (" + e.message + ")";
          return;
        }
        decisions[call.id] = decision;
        row.dataset.decided = decision.action;
        send();
      });
      actions.append(button);
    };
    decide("Approve", "approve", () => ({ action: "approve" }));
    decide("Reject", "reject", () => ({ action: "reject", reason: reason.value }));
    decide("Run edited", "edit", () => ({ action: "edit", arguments: JSON.parse(args.value) }));
    row.append(args, reason, actions);
    card.append(row);
  }
  card.append(error);
  return card;
}

function renderApprovals() {
  const box = $("approvals");
  const keep = new Set(approvals.keys());
  for (const card of [...box.children]) if (!keep.has(card.dataset.id)) card.remove();
  const shown = new Set([...box.children].map((c) => c.dataset.id));
  for (const [id, req] of approvals) if (!shown.has(id)) box.append(renderApproval(req));
  renderIncidents();
}

function renderIncidents() {
  const box = $("incidents");
  const keep = new Set(incidents.keys());
  for (const card of [...box.children]) if (!keep.has(card.dataset.id)) card.remove();
  const shown = new Set([...box.children].map((c) => c.dataset.id));
  for (const [id, inc] of incidents) if (!shown.has(id)) box.append(renderIncident(inc));
  const waiting = incidents.size + approvals.size;
  const count = $("incident-count");
  count.hidden = waiting === 0;
  count.textContent = String(waiting);
  $("no-incidents").hidden = waiting > 0;
}

function renderInputs() {
  const box = $("inputs");
  box.replaceChildren();
  for (const req of inputs.values()) {
    const card = el("div", "card input-request");
    card.dataset.id = req.id;
    card.append(el("b", null, req.agent + ", your turn"));
    if (req.prompt) card.append(el("div", "text", req.prompt));
    const field = el("input");
    field.placeholder = "type and press Enter";
    const send = el("button", null, "Send");
    const error = el("div", "error");
    const submit = () => post("/api/inputs/" + encodeURIComponent(req.id), { text: field.value }).catch((e) => (error.textContent = e.message));
    send.addEventListener("click", submit);
    field.addEventListener("keydown", (e) => e.key === "Enter" && submit());
    card.append(field, send, error);
    box.append(card);
  }
}

// -- the connection -------------------------------------------------------------------------
function handle(frame) {
  switch (frame.kind) {
    case "events":
      applyEvents(frame.events);
      break;
    case "state":
      incidents.clear();
      for (const inc of frame.incidents) incidents.set(inc.id, inc);
      approvals.clear();
      for (const req of frame.approvals || []) approvals.set(req.id, req);
      inputs.clear();
      for (const req of frame.inputs) inputs.set(req.id, req);
      watched = new Set(frame.agents);
      showDropped(frame.dropped);
      if (frame.missed) $("messages").append(el("p", "muted", frame.missed + " earlier events are no longer kept"));
      renderApprovals();
      renderInputs();
      renderAgents();
      break;
    case "incident":
      incidents.set(frame.incident.id, frame.incident);
      renderIncidents();
      break;
    case "incident_closed":
      incidents.delete(frame.id);
      renderIncidents();
      break;
    case "approval":
      approvals.set(frame.approval.id, frame.approval);
      renderApprovals();
      break;
    case "approval_closed":
      approvals.delete(frame.id);
      renderApprovals();
      break;
    case "input":
      inputs.set(frame.input.id, frame.input);
      renderInputs();
      break;
    case "input_closed":
      inputs.delete(frame.id);
      renderInputs();
      break;
    case "agents":
      watched = new Set(frame.agents);
      renderAgents();
      break;
    case "dropped":
      showDropped(frame.count);
      break;
  }
}

function showDropped(count) {
  $("dropped").hidden = !count;
  $("dropped").textContent = count + " events dropped (Studio too slow)";
}

function connect() {
  const ws = new WebSocket("ws://" + location.host + "/ws?since=" + lastSeq);
  ws.onopen = () => {
    $("status").textContent = "live";
    $("status").className = "status online";
  };
  ws.onmessage = (e) => handle(JSON.parse(e.data));
  ws.onclose = () => {
    $("status").textContent = "reconnecting…";
    $("status").className = "status";
    setTimeout(connect, 1000);
  };
}

// -- past runs ------------------------------------------------------------------------------
async function loadRuns() {
  const list = $("runs");
  list.replaceChildren();
  const runs = await (await fetch("/api/runs")).json();
  if (!runs.length) list.append(el("li", "muted", "no traces"));
  for (const run of runs) {
    const li = el("li");
    const open = el("button", null, run.name);
    open.addEventListener("click", () => showRun(run.name));
    li.append(open);
    list.append(li);
  }
}

async function showRun(name) {
  const response = await fetch("/api/runs/" + encodeURIComponent(name));
  const data = await response.json();
  $("run-title").textContent = name + ": " + data.events.length + " events" + (data.bad ? ", " + data.bad + " unreadable lines" : "");
  const messages = document.createDocumentFragment();
  const rows = document.createDocumentFragment();
  for (const ev of data.events) {
    if (ev.type === "message_sent" && ev.msg) messages.append(renderMsg(ev.msg));
    rows.append(renderEvent(ev));
  }
  $("run-messages").replaceChildren(messages);
  $("run-events").replaceChildren(rows);
}

// -- views ----------------------------------------------------------------------------------
function show(view) {
  for (const button of document.querySelectorAll("nav button")) button.classList.toggle("active", button.dataset.view === view);
  for (const section of document.querySelectorAll(".view")) section.hidden = section.id !== "view-" + view;
  if (view === "runs") loadRuns().catch((e) => $("runs").replaceChildren(el("li", "error", e.message)));
  if (view === "usage") loadUsage().catch((e) => $("usage-notes").replaceChildren(el("li", "error", e.message)));
}

for (const button of document.querySelectorAll("nav button")) button.addEventListener("click", () => show(button.dataset.view));
$("event-filter").addEventListener("input", applyFilter);
connect();

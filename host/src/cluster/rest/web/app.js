// weir's web UI: reads the REST endpoint every second and draws what it reads. No framework
// and no layout library: a job graph is a DAG whose vertices come in topological order, so a
// vertex's column is its longest distance from a source.
"use strict";

const main = document.getElementById("main");
let route = null; // { page, id, tab }
let skeletonFor = null;

function esc(value) {
  return String(value ?? "").replace(/[&<>"']/g, (c) => ({
    "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;",
  })[c]);
}

// The API token, kept for this tab only; asked for when the endpoint answers 401.
function headers(extra = {}) {
  const token = sessionStorage.getItem("weirToken");
  return token ? { ...extra, authorization: `Bearer ${token}` } : extra;
}

function call(path, options = {}) {
  return fetch(path, { ...options, headers: headers(options.headers) });
}

class Unauthorized extends Error {}

async function get(path) {
  const response = await call(path);
  const body = await response.json().catch(() => ({}));
  if (response.status === 401) throw new Unauthorized(body.errors?.[0] || "a token is needed");
  if (!response.ok) {
    throw new Error((body.errors || [response.statusText]).join("; "));
  }
  return body;
}

function askForToken(message) {
  skeletonFor = null;
  main.innerHTML = `<form id="token-form" class="card">
      <p>${esc(message)}</p>
      <input id="token" type="password" size="70" placeholder="API token" autocomplete="off">
      <button type="submit">Sign in</button>
    </form>`;
  document.getElementById("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem("weirToken", document.getElementById("token").value.trim());
    main.innerHTML = "Loading…";
    refresh();
  });
}

function time(ms) {
  return ms > 0 ? new Date(ms).toLocaleString() : "-";
}

function duration(ms) {
  if (ms < 1000) return `${ms} ms`;
  const s = Math.floor(ms / 1000);
  return s < 120 ? `${s} s` : `${Math.floor(s / 60)} min ${s % 60} s`;
}

function bytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1 << 20) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1 << 30) return `${(n / (1 << 20)).toFixed(1)} MiB`;
  return `${(n / (1 << 30)).toFixed(2)} GiB`;
}

function rate(n) {
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)} M/s`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)} k/s`;
  return `${n.toFixed(0)}/s`;
}

function parseRoute() {
  const parts = location.hash.replace(/^#\/?/, "").split("/");
  if (parts[0] === "job" && parts[1]) {
    return { page: "job", id: parts[1], tab: parts[2] || "graph" };
  }
  return { page: parts[0] || "overview" };
}

function jobTable(jobs) {
  if (jobs.length === 0) return `<p class="muted">No jobs yet.</p>`;
  const rows = jobs
    .slice()
    .sort((a, b) => b["start-time"] - a["start-time"])
    .map((j) => `<tr data-job-id="${esc(j.jid)}">
      <td><a href="#/job/${esc(j.jid)}">${esc(j.name)}</a></td>
      <td class="state-${esc(j.state)}">${esc(j.state)}</td>
      <td>${time(j["start-time"])}</td>
      <td><code>${esc(j.jid)}</code></td></tr>`)
    .join("");
  return `<table><tr><th>Name</th><th>State</th><th>Started</th><th>Job ID</th></tr>${rows}</table>`;
}

async function renderOverview() {
  const [overview, jobs] = await Promise.all([get("/overview"), get("/jobs/overview")]);
  const card = (label, value) =>
    `<div class="card"><div class="value">${esc(value)}</div><div class="label">${esc(label)}</div></div>`;
  main.innerHTML = `<div class="cards">
      ${card("TaskManagers", overview.taskmanagers)}
      ${card("Slots available", `${overview["slots-available"]} / ${overview["slots-total"]}`)}
      ${card("Running jobs", overview["jobs-running"])}
      ${card("Finished", overview["jobs-finished"])}
      ${card("Canceled", overview["jobs-cancelled"])}
      ${card("Failed", overview["jobs-failed"])}
    </div><h3>Jobs</h3>${jobTable(jobs.jobs)}`;
}

async function renderJobs() {
  const jobs = await get("/jobs/overview");
  main.innerHTML = `<h3>Jobs</h3>${jobTable(jobs.jobs)}`;
}

async function renderTaskManagers() {
  const tms = await get("/taskmanagers");
  const rows = tms.taskmanagers
    .map((t) => `<tr><td>${esc(t.id)}</td><td>${esc(t.dataPort)}</td>
      <td>${t.freeSlots} / ${t.slotsNumber}</td><td>${t.hardware.cpuCores}</td>
      <td>${t.hardware.networkBuffers}</td><td>${t.timeSinceLastHeartbeat} ms</td>
      <td>${t.metricsAddress ? esc(t.metricsAddress) : "-"}</td></tr>`)
    .join("");
  main.innerHTML = `<h3>TaskManagers</h3><table><tr><th>ID</th><th>Data port</th>
    <th>Free slots</th><th>CPU cores</th><th>Network buffers</th><th>Last heartbeat</th>
    <th>Metrics</th></tr>${rows}</table>`;
}

const JOB_TABS = [["graph", "Overview"], ["checkpoints", "Checkpoints"], ["exceptions", "Exceptions"], ["configuration", "Configuration"]];

// The job page's frame (header, buttons, tabs) is made once per job; refreshes change what is
// in it, so an element a user (or a test) is about to click is never replaced under them.
function jobSkeleton(id) {
  main.innerHTML = `<div class="job-head">
      <h2 id="job-name"></h2><span id="job-state"></span>
      <button id="savepoint-job">Savepoint</button>
      <button id="cancel-job" class="danger">Cancel</button>
      <span id="job-message" class="muted"></span>
    </div>
    <div class="muted" id="job-meta"></div>
    <div class="tabs" id="tabs">${JOB_TABS.map(([t, label]) =>
      `<a href="#/job/${esc(id)}/${t}" id="tab-${t}">${label}</a>`).join("")}</div>
    <div id="content">Loading…</div>`;
  document.getElementById("cancel-job").addEventListener("click", async () => {
    const answer = await call(`/jobs/${id}?mode=cancel`, { method: "PATCH" });
    const body = await answer.json().catch(() => ({}));
    document.getElementById("job-message").textContent = answer.ok
      ? "Cancelling…"
      : (body.errors || ["cannot cancel"]).join("; ");
    refresh();
  });
  document.getElementById("savepoint-job").addEventListener("click", async () => {
    const dir = prompt("Savepoint directory (on the JobManager's file system):", "/tmp/weir-savepoints");
    if (!dir) return;
    const message = document.getElementById("job-message");
    const answer = await call(`/jobs/${id}/savepoints`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ "target-directory": dir }),
    });
    const body = await answer.json().catch(() => ({}));
    if (!answer.ok) {
      message.textContent = (body.errors || ["cannot take a savepoint"]).join("; ");
      return;
    }
    message.textContent = "Savepoint in progress…";
    const trigger = body["request-id"];
    for (let i = 0; i < 600; i++) {
      await new Promise((r) => setTimeout(r, 500));
      const status = await get(`/jobs/${id}/savepoints/${trigger}`);
      if (status.status.id === "COMPLETED") {
        message.textContent = status.operation.location
          ? `Savepoint completed: ${status.operation.location}`
          : `Savepoint failed: ${status.operation["failure-cause"]["stack-trace"]}`;
        return;
      }
    }
  });
}

// Column of each vertex: its longest distance from a source.
function layout(plan) {
  const depth = {};
  for (const node of plan.nodes) {
    depth[node.id] = Math.max(0, ...node.inputs.map((i) => (depth[i.id] ?? 0) + 1));
  }
  const rows = {};
  const at = {};
  for (const node of plan.nodes) {
    const d = depth[node.id];
    rows[d] = (rows[d] ?? -1) + 1;
    at[node.id] = { x: 30 + d * 330, y: 30 + rows[d] * 140 };
  }
  return at;
}

function graphSvg(job) {
  const plan = job.plan;
  const byId = Object.fromEntries(job.vertices.map((v) => [v.id, v]));
  const at = layout(plan);
  const width = Math.max(...Object.values(at).map((p) => p.x)) + 250;
  const height = Math.max(...Object.values(at).map((p) => p.y)) + 130;
  const W = 220, H = 100;
  let edges = "";
  for (const node of plan.nodes) {
    for (const input of node.inputs) {
      const from = at[input.id], to = at[node.id];
      const x1 = from.x + W, y1 = from.y + H / 2, x2 = to.x - 4, y2 = to.y + H / 2;
      edges += `<path class="edge" d="M${x1},${y1} C${x1 + 40},${y1} ${x2 - 40},${y2} ${x2},${y2}"/>
        <text class="edge-label" text-anchor="middle" x="${(x1 + x2) / 2}" y="${(y1 + y2) / 2 - 6}">${esc(input.ship_strategy)}</text>`;
    }
  }
  const boxes = plan.nodes.map((node) => {
    const v = byId[node.id] || { metrics: {}, "backpressure-level": "ok", status: "CREATED" };
    const m = v.metrics;
    const level = v["backpressure-level"];
    const p = at[node.id];
    return `<g class="vertex bp-${esc(level)}" data-vertex-id="${esc(node.id)}"
        data-vertex-name="${esc(node.description)}" data-backpressure="${esc(level)}"
        transform="translate(${p.x},${p.y})">
      <rect width="${W}" height="${H}"></rect>
      <text class="title" x="10" y="20">${esc(node.description).slice(0, 30)}</text>
      <text x="10" y="38">Parallelism ${node.parallelism} · ${esc(v.status)}</text>
      <text x="10" y="56">In ${rate(m.recordsInPerSecond || 0)} · Out ${rate(m.recordsOutPerSecond || 0)}</text>
      <text x="10" y="74">Busy ${((m.busyTimeMsPerSecond || 0) / 10).toFixed(0)}% · Back-pressured ${((m.backPressuredTimeMsPerSecond || 0) / 10).toFixed(0)}%</text>
      <text x="10" y="92">Back-pressure: ${esc(level)}</text>
    </g>`;
  }).join("");
  return `<svg class="graph" width="${width}" height="${height}">
    <defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="8" markerHeight="8" orient="auto">
      <path d="M0,0 L10,5 L0,10 z" fill="#5b6678"/></marker></defs>${edges}${boxes}</svg>`;
}

function vertexTable(job) {
  const rows = job.vertices.map((v) => `<tr><td>${esc(v.name)}</td><td class="state-${esc(v.status)}">${esc(v.status)}</td>
    <td>${v.parallelism}</td><td>${v.metrics["read-records"]}</td><td>${v.metrics["write-records"]}</td>
    <td>${bytes(v.metrics["read-bytes"])}</td><td>${bytes(v.metrics["write-bytes"])}</td>
    <td>${esc(v["backpressure-level"])}</td></tr>`).join("");
  return `<h3>Vertices</h3><table><tr><th>Name</th><th>Status</th><th>Parallelism</th>
    <th>Records in</th><th>Records out</th><th>Bytes in</th><th>Bytes out</th>
    <th>Back-pressure</th></tr>${rows}</table>`;
}

async function renderCheckpoints(id) {
  const c = await get(`/jobs/${id}/checkpoints`);
  const rows = c.history.map((h) => `<tr data-checkpoint-id="${h.id}" data-checkpoint-status="${esc(h.status)}">
    <td>${h.id}${h.is_savepoint ? " (savepoint)" : ""}</td><td class="state-${esc(h.status)}">${esc(h.status)}</td>
    <td>${time(h.trigger_timestamp)}</td><td>${duration(h.end_to_end_duration)}</td>
    <td>${bytes(h.state_size)}</td><td>${duration(h.alignment_duration)}</td>
    <td>${h.num_acknowledged_subtasks} / ${h.num_subtasks}</td>
    <td>${esc(h.failure_message || "")}</td></tr>`).join("");
  const n = c.counts;
  return `<div class="cards">
      <div class="card"><div class="value" id="checkpoints-completed">${n.completed}</div><div class="label">Completed</div></div>
      <div class="card"><div class="value">${n.failed}</div><div class="label">Failed</div></div>
      <div class="card"><div class="value">${n.in_progress}</div><div class="label">In progress</div></div>
      <div class="card"><div class="value">${n.restored}</div><div class="label">Restored</div></div>
    </div>
    <table id="checkpoint-history"><tr><th>ID</th><th>Status</th><th>Triggered</th><th>End to end</th>
    <th>State size</th><th>Alignment</th><th>Acknowledged</th><th>Failure</th></tr>${rows}</table>`;
}

async function renderExceptions(id) {
  const e = await get(`/jobs/${id}/exceptions`);
  if (!e["root-exception"]) return `<p class="muted">No exceptions.</p>`;
  return e.exceptionHistory.entries.map((x) => `<div class="exception exception-entry">${time(x.timestamp)} · attempt ${x.attempt}
${x.taskName ? `task ${esc(x.taskName)} on TaskManager ${esc(x.taskManagerId || "?")}\n` : ""}${esc(x.stacktrace)}</div>`).join("");
}

async function renderConfiguration(id, job) {
  const config = await get("/config");
  const rows = Object.entries({ ...job.config, ...config })
    .map(([k, v]) => `<tr><td>${esc(k)}</td><td>${esc(JSON.stringify(v))}</td></tr>`).join("");
  return `<table><tr><th>Key</th><th>Value</th></tr>${rows}</table>`;
}

async function renderJob() {
  const { id, tab } = route;
  if (skeletonFor !== id) {
    jobSkeleton(id);
    skeletonFor = id;
  }
  const job = await get(`/jobs/${id}`);
  document.getElementById("job-name").textContent = job.name;
  const state = document.getElementById("job-state");
  state.textContent = job.state;
  state.className = `state-${job.state}`;
  document.getElementById("cancel-job").style.display = job.state === "RUNNING" ? "" : "none";
  document.getElementById("savepoint-job").style.display = job.state === "RUNNING" ? "" : "none";
  document.getElementById("job-meta").textContent =
    `${id} · started ${time(job["start-time"])} · restarts ${job.restarts ?? 0}`;
  for (const [t] of JOB_TABS) {
    document.getElementById(`tab-${t}`).classList.toggle("active", t === tab);
  }
  let html;
  if (tab === "checkpoints") html = await renderCheckpoints(id);
  else if (tab === "exceptions") html = await renderExceptions(id);
  else if (tab === "configuration") html = await renderConfiguration(id, job);
  else {
    const failure = job.failure ? `<div class="exception" id="job-failure">${esc(job.failure)}</div>` : "";
    html = failure + (job.plan ? graphSvg(job) + vertexTable(job) : `<p class="muted">No plan.</p>`);
  }
  document.getElementById("content").innerHTML = html;
}

async function refresh() {
  if (document.getElementById("token-form")) return;
  route = parseRoute();
  if (route.page !== "job") skeletonFor = null;
  try {
    if (route.page === "job") await renderJob();
    else if (route.page === "jobs") await renderJobs();
    else if (route.page === "taskmanagers") await renderTaskManagers();
    else await renderOverview();
    document.getElementById("refreshed").textContent = `refreshed ${new Date().toLocaleTimeString()}`;
  } catch (e) {
    if (e instanceof Unauthorized) {
      askForToken(`${e.message}.`);
      return;
    }
    const target = document.getElementById("content") || main;
    target.innerHTML = `<p class="error" id="load-error">${esc(e.message)}</p>`;
  }
}

window.addEventListener("hashchange", refresh);
refresh();
setInterval(refresh, 1000);

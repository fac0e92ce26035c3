// mesh dashboard: a single page on the coordinator's REST API (/api/v1/), no dependencies.
// Every string from the API goes through esc() before it reaches innerHTML.
"use strict";

(() => {
  const API = "/api/v1/";
  const $ = (sel, root = document) => root.querySelector(sel);
  const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

  // ---------- text and numbers ----------

  const ESC = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
  const esc = (value) => String(value ?? "").replace(/[&<>"']/g, (c) => ESC[c]);
  const isNum = (n) => typeof n === "number" && Number.isFinite(n);
  const shortId = (id) => String(id).slice(0, 8);
  const intFmt = new Intl.NumberFormat("en-US");

  function fmtInt(n) {
    return isNum(n) ? intFmt.format(Math.round(n)) : "–";
  }

  function fmtCompact(n) {
    if (!isNum(n)) return "–";
    const a = Math.abs(n);
    if (a >= 1e9) return (n / 1e9).toFixed(a >= 1e10 ? 0 : 1) + "G";
    if (a >= 1e6) return (n / 1e6).toFixed(a >= 1e7 ? 0 : 1) + "M";
    if (a >= 1e4) return (n / 1e3).toFixed(a >= 1e5 ? 0 : 1) + "k";
    return a >= 100 || Number.isInteger(n) ? fmtInt(n) : n.toFixed(1);
  }

  // A rate as a plain number (no separators: tests and people read it alike).
  function plainRate(n) {
    if (!isNum(n)) return "0";
    return n >= 100 ? String(Math.round(n)) : String(Math.round(n * 10) / 10);
  }

  function fmtBytes(n) {
    if (!isNum(n)) return "–";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i === 0 ? String(n) : n.toFixed(n >= 100 ? 0 : 1)) + " " + units[i];
  }

  function fmtDuration(ms) {
    if (!isNum(ms)) return "–";
    if (ms < 0) ms = 0;
    if (ms < 1000) return Math.round(ms) + " ms";
    const s = ms / 1000;
    if (s < 60) return s.toFixed(s < 10 ? 1 : 0) + " s";
    const pad = (v) => String(Math.floor(v)).padStart(2, "0");
    if (s < 3600) return `${Math.floor(s / 60)}m ${pad(s % 60)}s`;
    if (s < 86400) return `${Math.floor(s / 3600)}h ${pad((s % 3600) / 60)}m`;
    return `${Math.floor(s / 86400)}d ${pad((s % 86400) / 3600)}h`;
  }

  const fmtIso = (ms) => (isNum(ms) ? new Date(ms).toISOString() : "–");
  function fmtClock(ms) {
    if (!isNum(ms)) return "–";
    const d = new Date(ms);
    const p = (v, n = 2) => String(v).padStart(n, "0");
    return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
  }
  const fmtAgo = (ms) => (isNum(ms) ? fmtDuration(Date.now() - ms) + " ago" : "–");
  const pct = (r) => (isNum(r) ? Math.round(r * 100) + "%" : "–");

  // ---------- small HTML pieces ----------

  const TONES = {
    CREATED: "grey", SCHEDULING: "grey", SCHEDULED: "grey", DEPLOYED: "grey", RUNNING: "blue",
    RESTARTING: "amber", CANCELLING: "amber", ENDING: "teal", FINISHED: "green", CANCELED: "grey",
    FAILED: "red", LOST: "red", COMPLETED: "green", ABORTED: "amber", DISCARDED: "grey",
    node_lost: "red", node_left: "grey", task_exception: "red", task_stopped: "amber",
    checkpoints: "amber", checkpoint_failed: "amber", error: "red", checkpoint: "grey", savepoint: "purple",
    ok: "green", low: "amber", high: "red", free: "grey", used: "blue", held: "amber",
  };
  const badge = (text, tone) =>
    `<span class="badge tone-${tone || TONES[text] || "grey"}">${esc(String(text).replace(/_/g, " "))}</span>`;

  // A small bar (SVG: no inline styles, so a strict CSP holds).
  function bar(ratio, level, withNumber = true) {
    const r = isNum(ratio) ? Math.max(0, Math.min(1, ratio)) : 0;
    const lv = level || (r >= 0.5 ? "high" : r >= 0.1 ? "low" : "ok");
    return `<span class="bar"><svg width="56" height="6" aria-hidden="true"><rect class="bar-track" width="56" height="6" rx="3"/>` +
      `<rect class="bar-fill lvl-${lv}" width="${(56 * r).toFixed(1)}" height="6" rx="3"/></svg>` +
      (withNumber ? `<span class="bar-num">${isNum(ratio) ? pct(ratio) : "–"}</span>` : "") + `</span>`;
  }

  const safeUrl = (url) => (typeof url === "string" && /^https?:\/\//i.test(url) ? url : null);
  const traceLink = (url) =>
    safeUrl(url) ? `<a class="trace" href="${esc(url)}" target="_blank" rel="noopener noreferrer">trace ↗</a>` : "";
  const stat = (label, value, extra = "") =>
    `<div class="stat"><div class="stat-label">${esc(label)}</div><div class="stat-value">${value}</div>${extra}</div>`;
  const empty = (cols, text) => `<tr class="empty"><td colspan="${cols}">${esc(text)}</td></tr>`;

  // Replace only the rows whose markup changed (keeps the DOM calm at 1 Hz).
  function patchRows(tbody, rows) {
    const kids = tbody.children;
    for (let i = 0; i < rows.length; i++) {
      const cur = kids[i];
      if (cur && cur._src === rows[i]) continue;
      const tmp = document.createElement("tbody");
      tmp.innerHTML = rows[i];
      const tr = tmp.firstElementChild;
      tr._src = rows[i];
      if (cur) cur.replaceWith(tr); else tbody.appendChild(tr);
    }
    while (kids.length > rows.length) tbody.lastElementChild.remove();
  }

  // For big tables: rows are {attrs, cells: [[class, html], ...]}; only the cells whose
  // markup changed are touched (no reparsing of whole rows every second).
  function patchCells(tbody, rows) {
    const kids = tbody.children;
    for (let i = 0; i < rows.length; i++) {
      const row = rows[i];
      let tr = kids[i];
      if (!tr || tr._attrs !== row.attrs || tr.cells.length !== row.cells.length) {
        const tmp = document.createElement("tbody");
        tmp.innerHTML = `<tr ${row.attrs}>${"<td></td>".repeat(row.cells.length)}</tr>`;
        const fresh = tmp.firstElementChild;
        fresh._attrs = row.attrs;
        if (tr) tr.replaceWith(fresh); else tbody.appendChild(fresh);
        tr = fresh;
      }
      const tds = tr.cells;
      for (let c = 0; c < row.cells.length; c++) {
        const [cls, html] = row.cells[c];
        const td = tds[c];
        if (td._cls !== cls) { td.className = cls; td._cls = cls; }
        if (td._src !== html) {
          if (/[<&]/.test(html)) td.innerHTML = html; else td.textContent = html;
          td._src = html;
        }
      }
    }
    while (kids.length > rows.length) tbody.lastElementChild.remove();
  }

  // Set innerHTML only when it differs from what was set last time.
  function setHtml(el, html) {
    if (el && el._src !== html) { el.innerHTML = html; el._src = html; }
  }

  // ---------- the API ----------

  class ApiError extends Error {
    constructor(status, message, field, code) { super(message); this.status = status; this.field = field; this.code = code; }
  }

  async function api(path, options = {}) {
    const init = { method: options.method || "GET", headers: { Accept: "application/json" } };
    if (options.body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(options.body);
    }
    let res;
    try {
      res = await fetch(API + path, init);
    } catch (e) {
      connection(false);
      throw new ApiError(0, "cannot reach the coordinator", null);
    }
    connection(true);
    let body = null;
    if (res.status !== 204) {
      try { body = await res.json(); } catch (e) { body = null; }
    }
    if (res.status === 401) { authRequired(); throw new ApiError(401, "unauthorized", null); }
    if (!res.ok) {
      const msg = (body && body.error) || `${res.status} ${res.statusText}`;
      throw new ApiError(res.status, msg, body && body.field, body && body.code);
    }
    return body;
  }

  function connection(ok) {
    const el = $("#conn-banner");
    if (ok === !el.hidden) return;
    el.hidden = ok;
    el.textContent = ok ? "" : "Cannot reach the coordinator; retrying…";
  }

  let locked = false;
  function authRequired() {
    if (locked) return;
    locked = true;
    killScope(route.scope);
    killScope(headerScope);
    $("#main").innerHTML =
      `<section class="auth card"><h1>Sign-in needed</h1><p>This coordinator has security on. ` +
      `Open the dashboard with the URL printed by the coordinator, the one ending in ` +
      `<code>?token=…</code>; the page keeps the token in a cookie.</p></section>`;
  }

  // ---------- polling scopes ----------
  // A scope owns timers; killing it stops its loops. Loops skip their fetch while the
  // tab is hidden.

  const newScope = () => ({ alive: true, timers: new Set() });
  function killScope(scope) {
    if (!scope) return;
    scope.alive = false;
    scope.timers.forEach(clearTimeout);
    scope.timers.clear();
  }

  function loop(scope, ms, fn) {
    let timer = null, running = false;
    const tick = async () => {
      if (!scope.alive || running) return;
      if (timer !== null) { clearTimeout(timer); scope.timers.delete(timer); timer = null; }
      running = true;
      if (document.visibilityState === "visible") {
        try { await fn(); } catch (e) { if (!(e instanceof ApiError)) console.warn(e); }
      }
      running = false;
      if (scope.alive) {
        timer = setTimeout(() => { scope.timers.delete(timer); timer = null; tick(); }, ms);
        scope.timers.add(timer);
      }
    };
    tick();
    return tick;
  }

  // Run every loop of a scope now (after an action).
  const kicks = new Set();
  function kickAll() { kicks.forEach((k) => k()); }

  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") kickAll();
  });

  // ---------- notices and the confirmation dialog ----------

  function notice(html, tone = "info", sticky = false) {
    const el = document.createElement("div");
    el.className = `notice notice-${tone}`;
    el.setAttribute("role", tone === "error" ? "alert" : "status");
    el.innerHTML = `<div class="notice-body">${html}</div><button class="notice-close" type="button" aria-label="Dismiss">×</button>`;
    $("#notices").appendChild(el);
    if (!sticky) setTimeout(() => el.remove(), 7000);
    return el;
  }

  function confirmDialog(title, text, confirmLabel, dismissLabel, danger) {
    const dlg = $("#confirm-dialog");
    $("[data-confirm]", dlg).className = `btn ${danger ? "btn-danger" : "btn-primary"}`;
    $("#confirm-title").textContent = title;
    $("#confirm-text").innerHTML = text;
    $("[data-confirm]", dlg).textContent = confirmLabel;
    $("[data-dismiss]", dlg).textContent = dismissLabel;
    dlg.returnValue = "";
    return new Promise((resolve) => {
      dlg.addEventListener("close", () => resolve(dlg.returnValue === "confirm"), { once: true });
      dlg.showModal();
    });
  }

  // ---------- job actions ----------

  const busy = new Set(); // job ids with a savepoint on the way
  const ACTIONS = {
    cancel: {
      title: "Cancel job?", confirm: "Cancel job", dismiss: "Keep running",
      text: (n) => `Cancel <b>${n}</b>? It stops now, without a savepoint; its latest checkpoint stays.`,
    },
    savepoint: {
      title: "Take a savepoint?", confirm: "Take savepoint", dismiss: "Back",
      text: (n) => `Take a savepoint of <b>${n}</b>? The job keeps running.`,
    },
    "cancel-savepoint": {
      title: "Savepoint, then cancel?", confirm: "Savepoint and cancel", dismiss: "Keep running",
      text: (n) => `Take a savepoint of <b>${n}</b>, then cancel it? Resume it later with ` +
        `<code>mesh submit --from-savepoint PATH</code>.`,
    },
  };

  const CANCELLABLE = new Set(["CREATED", "SCHEDULING", "RUNNING", "RESTARTING"]);

  function actionButtons(job) {
    if (!CANCELLABLE.has(job.state)) return "";
    const dis = busy.has(job.job_id) ? " disabled" : "";
    const b = (action, label, cls) =>
      `<button type="button" class="btn btn-sm ${cls}" data-action="${action}" data-job-id="${esc(job.job_id)}" ` +
      `data-job-name="${esc(job.name)}"${dis}>${label}</button>`;
    const running = job.state === "RUNNING"; // a savepoint needs every task running
    return `<div class="actions">${running ? b("savepoint", "Savepoint", "") + b("cancel-savepoint", "Cancel with savepoint", "") : ""}` +
      `${b("cancel", "Cancel", "btn-danger-soft")}</div>`;
  }

  async function runAction(action, jobId, jobName) {
    const a = ACTIONS[action];
    const who = `${esc(jobName)}</b> <span class="mono muted">${esc(shortId(jobId))}</span><b>`;
    if (!(await confirmDialog(a.title, a.text(who), a.confirm, a.dismiss, action !== "savepoint"))) return;
    try {
      if (action === "cancel") {
        const res = await api(`jobs/${encodeURIComponent(jobId)}/cancel`, { method: "POST" });
        notice(`Cancelling <b>${esc(jobName)}</b>: ${esc(res.detail || res.state)}`, "info");
      } else {
        await savepoint(jobId, jobName, action === "cancel-savepoint");
      }
    } catch (e) {
      if (e.code === "savepoint_pending") {
        notice(`The savepoint of <b>${esc(jobName)}</b> is still being taken; it will be listed under Checkpoints.`, "info", true);
      } else {
        notice(`${esc(a.confirm)} failed for <b>${esc(jobName)}</b>: ${esc(e.message)}`, "error", true);
      }
    }
    kickAll();
  }

  async function savepoint(jobId, jobName, cancel) {
    busy.add(jobId);
    kickAll();
    const progress = notice(
      `<span class="spinner" aria-hidden="true"></span> Taking a savepoint of <b>${esc(jobName)}</b>` +
      (cancel ? " (then cancelling)" : "") + "…", "info", true);
    progress.classList.add("notice-progress");
    try {
      const res = await api(`jobs/${encodeURIComponent(jobId)}/savepoints`, { method: "POST", body: { cancel } });
      notice(
        `Savepoint ${esc(res.checkpoint_id)} of <b>${esc(jobName)}</b> written` +
        (res.cancelled ? "; the job is cancelled" : "") +
        `<div class="path-row"><code data-savepoint-path>${esc(res.path)}</code>` +
        `<button type="button" class="btn btn-xs" data-copy="${esc(res.path)}">Copy</button></div>`,
        "success", true);
    } finally {
      progress.remove();
      busy.delete(jobId);
    }
  }

  // ---------- header ----------

  const headerScope = newScope();
  async function refreshHeader() {
    const o = await api("overview");
    $("#version").textContent = o.version ? "v" + o.version : "";
    const jobs = Object.entries(o.jobs || {}).filter(([, n]) => n > 0)
      .map(([s, n]) => `<span class="chip"><span class="dot tone-${TONES[s] || "grey"}"></span>${esc(s.toLowerCase())} <b>${n}</b></span>`).join("");
    const free = o.slots ? `${o.slots.free}/${o.slots.total}` : "–";
    const jaeger = safeUrl(o.jaeger_url) ? `<a class="chip" href="${esc(o.jaeger_url)}" target="_blank" rel="noopener noreferrer">Jaeger ↗</a>` : "";
    setHtml($("#cluster"),
      `<span class="chip" title="coordinator ${esc(o.coordinator)}"><b>${esc(o.nodes)}</b> nodes</span>` +
      `<span class="chip"><b>${esc(free)}</b> slots free</span>${jobs}${jaeger}` +
      `<span class="chip ${o.security ? "chip-secure" : "chip-open"}" title="${o.security ? "token required" : "no authentication"}">` +
      `${o.security ? "secured" : "open"}</span>`);
  }

  // ---------- router ----------

  const route = { scope: null, page: null, jobId: null, tab: null, tabScope: null };

  function parseHash() {
    const parts = location.hash.replace(/^#\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
    if (parts[0] === "nodes") return { page: "nodes" };
    if (parts[0] === "jobs" && parts[1]) {
      const tab = ["graph", "checkpoints", "failovers", "watermarks"].includes(parts[2]) ? parts[2] : "graph";
      return { page: "job", jobId: parts[1], tab };
    }
    return { page: "jobs" };
  }

  function navigate() {
    if (locked) return;
    const next = parseHash();
    $$("[data-nav]").forEach((a) => a.classList.toggle("active", a.dataset.nav === (next.page === "nodes" ? "nodes" : "jobs")));
    if (next.page === "job" && route.page === "job" && route.jobId === next.jobId && route.scope && route.scope.alive) {
      showTab(next.tab);
      return;
    }
    killScope(route.tabScope);
    killScope(route.scope);
    closePanel();
    kicks.clear();
    kicks.add(headerTick);
    route.scope = newScope();
    Object.assign(route, next);
    const main = $("#main");
    if (next.page === "nodes") nodesPage(main, route.scope);
    else if (next.page === "job") jobPage(main, route.scope, next.jobId, next.tab);
    else jobsPage(main, route.scope);
  }

  const addLoop = (scope, ms, fn) => kicks.add(loop(scope, ms, fn));

  // ---------- jobs page ----------

  function jobsPage(main, scope) {
    document.title = "Jobs · mesh";
    main.innerHTML =
      `<section data-page="jobs"><div class="page-head"><h1>Jobs</h1>` +
      `<label class="filter">State <select id="state-filter"><option value="">all</option>` +
      ["RUNNING", "RESTARTING", "SCHEDULING", "FINISHED", "CANCELED", "FAILED"].map((s) => `<option>${s}</option>`).join("") +
      `</select></label></div><div class="card table-card"><table class="table jobs-table"><thead><tr>` +
      `<th>Name</th><th>Id</th><th>State</th><th class="num">Uptime</th><th class="num">Attempt</th>` +
      `<th class="num">Restarts</th><th class="num">Tasks</th><th>Started</th><th class="act">Actions</th>` +
      `</tr></thead><tbody id="jobs-body"></tbody></table></div></section>`;
    const filter = $("#state-filter");
    const refresh = async () => {
      const q = filter.value ? `?state=${encodeURIComponent(filter.value)}` : "";
      const res = await api("jobs" + q);
      if (!scope.alive) return;
      const rows = res.jobs.map((j) =>
        `<tr data-job-id="${esc(j.job_id)}" class="row-link"><td><a href="#/jobs/${esc(encodeURIComponent(j.job_id))}" class="job-name">${esc(j.name)}</a></td>` +
        `<td class="mono muted" title="${esc(j.job_id)}">${esc(shortId(j.job_id))}</td><td>${badge(j.state)}</td>` +
        `<td class="num">${fmtDuration(j.uptime_ms)}</td><td class="num">${esc(j.attempt)}</td>` +
        `<td class="num${j.restarts ? " warn" : ""}">${esc(j.restarts)}</td>` +
        `<td class="num" title="${esc(j.subtasks)} subtasks">${esc(j.tasks)} <span class="muted">/ ${esc(j.subtasks)}</span></td>` +
        `<td class="muted" title="${esc(fmtIso(j.started_ms || j.created_ms))}">${fmtClock(j.started_ms || j.created_ms)}</td>` +
        `<td class="act">${actionButtons(j)}</td></tr>`);
      patchRows($("#jobs-body"), rows.length ? rows : [empty(9, filter.value ? `No ${filter.value.toLowerCase()} jobs.` : "No jobs yet: submit one with mesh run or mesh submit.")]);
    };
    filter.addEventListener("change", () => refresh().catch(() => {}));
    addLoop(scope, 2000, refresh);
  }

  // ---------- job page ----------

  const TABS = [["graph", "Graph"], ["checkpoints", "Checkpoints"], ["failovers", "Failovers"], ["watermarks", "Watermarks"]];

  function jobPage(main, scope, jobId, tab) {
    const id = encodeURIComponent(jobId);
    main.innerHTML =
      `<section data-page="job" data-job-id="${esc(jobId)}">` +
      `<div class="crumbs"><a href="#/jobs">Jobs</a> / <span class="mono">${esc(shortId(jobId))}</span></div>` +
      `<div class="job-head card"><div class="job-title"><div class="job-title-main"><h1 id="job-name">…</h1>` +
      `<span id="job-state"></span><span class="mono muted" id="job-id" title="job id">${esc(jobId)}</span></div>` +
      `<div id="job-actions"></div></div><div class="stats" id="job-stats"></div><div id="job-error"></div></div>` +
      `<nav class="tabs" role="tablist">${TABS.map(([t, label]) =>
        `<a role="tab" data-tab="${t}" href="#/jobs/${esc(id)}/${t}">${label}</a>`).join("")}</nav>` +
      `<div id="tab-body"></div></section>`;
    route.metrics = [];
    addLoop(scope, 2000, async () => {
      try {
        renderJobHead(await api(`jobs/${id}`));
      } catch (e) {
        if (e.status === 404 || e.status === 400) {
          killScope(scope);
          main.innerHTML = `<section data-page="job" class="card missing"><h1>No such job</h1><p>${esc(e.message)}</p><p><a href="#/jobs">Back to jobs</a></p></section>`;
        }
        throw e;
      }
    });
    addLoop(scope, 2000, async () => {
      const m = await api(`jobs/${id}/metrics`);
      if (!scope.alive) return;
      route.metrics = m.points || [];
      const spark = $("#spark-out");
      if (spark) setHtml(spark, sparkline(route.metrics.map((p) => p.out_rate), 110, 26));
      const chart = $("#chart");
      if (chart) setHtml(chart, rateChart(route.metrics, chartWidth(chart), 150));
    });
    showTab(tab);
  }

  function renderJobHead(j) {
    if (!route.scope || !route.scope.alive) return;
    document.title = `${j.name} · mesh`;
    $("#job-name").textContent = j.name;
    setHtml($("#job-state"), badge(j.state));
    setHtml($("#job-actions"), actionButtons(j));
    const t = j.totals || {};
    const progress = isNum(j.source_progress)
      ? stat("Input read", pct(j.source_progress), `<div class="progress">${bar(j.source_progress, "ok", false)}</div>`) : "";
    const ck = j.latest_checkpoint;
    setHtml($("#job-stats"),
      stat("Uptime", fmtDuration(j.uptime_ms)) +
      stat("Attempt", esc(j.attempt)) +
      stat("Restarts", `<span class="${j.restarts ? "warn" : ""}">${esc(j.restarts)}</span>`) +
      stat("Parallelism", `${esc(j.parallelism)} <span class="muted">· ${esc(j.tasks)} tasks / ${esc(j.subtasks)} subtasks</span>`) +
      stat("Records in", `${fmtCompact(t.records_in)} <span class="rate">${fmtCompact(t.in_rate)}/s</span>`) +
      stat("Records out", `${fmtCompact(t.records_out)} <span class="rate">${fmtCompact(t.out_rate)}/s</span>`,
        `<div class="spark" id="spark-out">${sparkline(route.metrics.map((p) => p.out_rate), 110, 26)}</div>`) +
      stat("Dead letters", `<span class="${j.dead_letters ? "bad" : ""}">${fmtInt(j.dead_letters)}</span>`) +
      stat("Late records", fmtInt(j.late_records)) +
      stat("Last checkpoint", ck ? `#${esc(ck.checkpoint_id)} <span class="muted">${fmtAgo(ck.ended_ms || ck.triggered_ms)}</span>` : "–") +
      progress);
    const waiting = j.waiting_for_slots ? `<div class="banner banner-warn">Waiting for slots: the job needs ${esc(j.slots_needed)}.</div>` : "";
    setHtml($("#job-error"), (j.error ? `<div class="banner banner-error"><b>Error:</b> ${esc(j.error)}</div>` : "") + waiting);
  }

  function showTab(tab) {
    killScope(route.tabScope);
    closePanel();
    route.tab = tab;
    route.tabScope = newScope();
    $$("[data-tab]").forEach((a) => {
      a.classList.toggle("active", a.dataset.tab === tab);
      a.setAttribute("aria-selected", String(a.dataset.tab === tab));
    });
    const body = $("#tab-body");
    const id = encodeURIComponent(route.jobId);
    ({ graph: graphTab, checkpoints: checkpointsTab, failovers: failoversTab, watermarks: watermarksTab })[tab](body, route.tabScope, id);
  }

  // ---------- charts ----------

  // The chart's width, measured once and again after a resize (measuring every second
  // would force a layout of the page).
  let chartW = null;
  window.addEventListener("resize", () => { chartW = null; });
  function chartWidth(el) {
    if (chartW === null) chartW = el.clientWidth || 800;
    return chartW;
  }

  function sparkline(values, w, h) {
    if (values.length < 2) return "";
    const max = Math.max(...values, 1);
    const step = w / (values.length - 1);
    const pts = values.map((v, i) => `${(i * step).toFixed(1)},${(h - 2 - (v / max) * (h - 4)).toFixed(1)}`).join(" ");
    return `<svg class="sparkline" width="${w}" height="${h}" viewBox="0 0 ${w} ${h}" aria-hidden="true">` +
      `<polygon class="spark-area" points="0,${h} ${pts} ${w},${h}"/><polyline class="spark-line" points="${pts}"/></svg>`;
  }

  function niceMax(v) {
    const e = Math.pow(10, Math.floor(Math.log10(v)));
    const f = v / e;
    return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 2.5 ? 2.5 : f <= 5 ? 5 : 10) * e;
  }

  function rateChart(points, w, h) {
    if (points.length < 2) return `<div class="chart-empty muted">No throughput yet: the chart fills while the job runs.</div>`;
    const padL = 48, padR = 8, padT = 8, bpH = 14, padB = 20 + bpH;
    const iw = w - padL - padR, ih = h - padT - padB;
    const max = niceMax(Math.max(1, ...points.map((p) => Math.max(p.in_rate, p.out_rate))));
    const t0 = points[0].time_ms, t1 = points[points.length - 1].time_ms, span = Math.max(1, t1 - t0);
    const x = (t) => padL + ((t - t0) / span) * iw;
    const y = (v) => padT + ih - (v / max) * ih;
    // A 5-second moving average: per-second rates of a bursty job are mostly noise.
    const smooth = (key) => points.map((p, i) => {
      const win = points.slice(Math.max(0, i - 2), i + 3);
      return win.reduce((sum, q) => sum + q[key], 0) / win.length;
    });
    const line = (key) => smooth(key).map((v, i) => `${x(points[i].time_ms).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
    const grid = [0, 0.5, 1].map((f) =>
      `<line class="grid" x1="${padL}" x2="${w - padR}" y1="${y(max * f).toFixed(1)}" y2="${y(max * f).toFixed(1)}"/>` +
      `<text class="axis" x="${padL - 6}" y="${(y(max * f) + 4).toFixed(1)}" text-anchor="end">${fmtCompact(max * f)}</text>`).join("");
    const bw = iw / points.length;
    const bpY = h - bpH;
    const bp = points.map((p, i) => {
      const lv = p.backpressure_ratio >= 0.5 ? "high" : p.backpressure_ratio >= 0.1 ? "low" : "ok";
      return `<rect class="bp-cell lvl-${lv}" x="${(padL + i * bw).toFixed(1)}" y="${bpY}" width="${Math.max(0.5, bw - (bw > 4 ? 1 : 0)).toFixed(1)}" height="${bpH - 4}"/>`;
    }).join("");
    const mins = Math.round(span / 60000);
    return `<svg class="chart" width="${w}" height="${h}" viewBox="0 0 ${w} ${h}" role="img" aria-label="records per second over time">` +
      grid + `<polyline class="line-in" points="${line("in_rate")}"/><polyline class="line-out" points="${line("out_rate")}"/>` +
      bp + `<text class="axis" x="${padL - 6}" y="${bpY + 8}" text-anchor="end">bp</text>` +
      `<text class="axis" x="${padL}" y="${bpY - 5}">${mins ? "−" + mins + " min" : fmtDuration(span) + " ago"}</text>` +
      `<text class="axis" x="${w - padR}" y="${bpY - 5}" text-anchor="end">now</text></svg>`;
  }

  // ---------- graph tab ----------

  function graphTab(body, scope, id) {
    body.innerHTML =
      `<div class="banner banner-bottleneck" id="bottleneck" data-bottleneck-banner hidden></div>` +
      `<div class="card graph-card"><div class="graph" id="graph"><div class="muted pad">Loading the graph…</div></div>` +
      `<div class="legend"><span><i class="sw lvl-ok"></i>ok</span><span><i class="sw lvl-low"></i>low backpressure</span>` +
      `<span><i class="sw lvl-high"></i>high backpressure</span><span class="muted">bar: worst subtask's share of time ` +
      `waiting to send · click a task for its subtasks</span></div></div>` +
      `<div class="card chart-card"><div class="chart-head"><h3>Throughput</h3><span class="legend-inline">` +
      `<span><i class="ln ln-in"></i>records/s in</span><span><i class="ln ln-out"></i>records/s out</span><span class="muted">5 s average</span>` +
      `<span class="muted">bp strip: max backpressure</span></span></div><div id="chart"></div></div>`;
    chartW = null;
    setHtml($("#chart"), rateChart(route.metrics, chartWidth($("#chart")), 150));
    const graphEl = $("#graph");
    graphEl.addEventListener("click", (ev) => {
      const g = ev.target.closest("[data-task]");
      if (g) openPanel(Number(g.dataset.task));
    });
    graphEl.addEventListener("keydown", (ev) => {
      const g = ev.target.closest("[data-task]");
      if (g && (ev.key === "Enter" || ev.key === " ")) { ev.preventDefault(); openPanel(Number(g.dataset.task)); }
    });
    let key = null;
    addLoop(scope, 1000, async () => {
      const g = await api(`jobs/${id}/graph`);
      if (!scope.alive) return;
      const k = graphKey(g);
      if (k !== key) { drawGraph(graphEl, g); key = k; }
      updateGraph(graphEl, g);
      const banner = $("#bottleneck");
      const b = g.bottleneck;
      banner.hidden = !b;
      setHtml(banner, b ? `<span class="bn-icon" aria-hidden="true">▲</span><div><b>Bottleneck: ${esc(b.name)}</b> ` +
        `<span class="muted">subtask ${esc(b.subtask)}${b.node ? " on " + esc(b.node) : ""}</span><div>${esc(b.reason)}</div></div>` : "");
    });
  }

  const graphKey = (g) => JSON.stringify([g.width, g.height,
    g.tasks.map((t) => [t.id, t.name, t.parallelism, t.x, t.y, t.width, t.height]),
    g.edges.map((e) => [e.source, e.target, e.partitioning, e.points])]);

  const PAD = 26;

  function midpoint(points) {
    let total = 0;
    const seg = [];
    for (let i = 1; i < points.length; i++) {
      const d = Math.hypot(points[i][0] - points[i - 1][0], points[i][1] - points[i - 1][1]);
      seg.push(d);
      total += d;
    }
    let half = total / 2;
    for (let i = 0; i < seg.length; i++) {
      if (half <= seg[i] && seg[i] > 0) {
        const f = half / seg[i], a = points[i], b = points[i + 1];
        return [a[0] + (b[0] - a[0]) * f, a[1] + (b[1] - a[1]) * f];
      }
      half -= seg[i];
    }
    return points[0];
  }

  function clip(text, width, charW = 7.2) {
    const n = Math.max(4, Math.floor(width / charW));
    return text.length > n ? text.slice(0, n - 1) + "…" : text;
  }

  // Shorten task names that would run into "p=N" (measured, so any font works).
  function fitNames(svg) {
    for (const text of svg.querySelectorAll(".task-name")) {
      const box = text.closest("[data-task]").querySelector(".task-box");
      const max = Number(box.getAttribute("width")) - 62;
      const full = text.textContent;
      let n = full.length;
      while (n > 3 && text.getComputedTextLength() > max) text.textContent = full.slice(0, --n) + "…";
    }
  }

  function drawGraph(el, g) {
    const w = g.width + PAD * 2, h = g.height + PAD * 2;
    const edges = g.edges.map((e) => {
      const pts = e.points.map((p) => `${p[0]},${p[1]}`).join(" ");
      const [mx, my] = midpoint(e.points);
      return `<g class="edge" data-edge="${esc(e.source)}-${esc(e.target)}"><polyline points="${pts}" marker-end="url(#arrow)"/>` +
        `<text class="edge-label" x="${mx.toFixed(1)}" y="${(my - 6).toFixed(1)}" text-anchor="middle">${esc(e.partitioning)}</text></g>`;
    }).join("");
    const clips = new Map();
    const tasks = g.tasks.map((t) => {
      const tw = t.width, th = t.height, bw = tw - 86;
      const size = `${tw}x${th}`;
      if (!clips.has(size)) clips.set(size, `<clipPath id="clip-${clips.size}"><rect width="${tw}" height="${th}" rx="8"/></clipPath>`);
      const clipId = `clip-${[...clips.keys()].indexOf(size)}`;
      return `<g class="task" data-task="${esc(t.id)}" transform="translate(${t.x},${t.y})" tabindex="0" role="button" aria-label="task ${esc(t.name)}">` +
        `<title>${esc(t.name)} (task ${esc(t.id)}, p=${esc(t.parallelism)})</title>` +
        `<rect class="task-outline" x="-4" y="-4" width="${tw + 8}" height="${th + 8}" rx="11"/>` +
        `<rect class="task-box" width="${tw}" height="${th}" rx="8"/>` +
        `<rect class="task-stripe" width="5" height="${th}" clip-path="url(#${clipId})"/>` +
        `<text class="task-name" x="14" y="22">${esc(clip(t.name, tw - 62, 5))}</text>` +
        `<text class="task-par" x="${tw - 10}" y="22" text-anchor="end">p=${esc(t.parallelism)}</text>` +
        `<text class="task-rates" x="14" y="46"><tspan class="k">in </tspan><tspan data-rate-in>0</tspan>` +
        `<tspan class="k">/s · out </tspan><tspan data-rate-out>0</tspan><tspan class="k">/s</tspan></text>` +
        `<rect class="bp-track" x="14" y="62" width="${bw}" height="7" rx="3.5"/>` +
        `<rect class="bp-fill" x="14" y="62" width="0" height="7" rx="3.5"/>` +
        `<text class="bp-label" x="${tw - 10}" y="69" text-anchor="end">bp 0%</text>` +
        `<g class="bn-tag" transform="translate(${tw - 84},-11)"><rect width="78" height="18" rx="9"/>` +
        `<text x="39" y="13" text-anchor="middle">bottleneck</text></g></g>`;
    }).join("");
    el.innerHTML =
      `<svg class="graph-svg" viewBox="${-PAD} ${-PAD} ${w} ${h}" width="100%" preserveAspectRatio="xMidYMin meet" role="img" aria-label="task graph">` +
      `<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="8" markerHeight="8" orient="auto-start-reverse">` +
      `<path d="M0,1 L9,5 L0,9 z"/></marker>${[...clips.values()].join("")}</defs><g class="edges">${edges}</g><g class="tasks">${tasks}</g></svg>`;
    const svg = el.firstElementChild;
    fitNames(svg);
    svg.style.maxWidth = `${Math.round(w * 1.15)}px`; // scale down to fit, never up by much
  }

  function updateGraph(el, g) {
    const bn = g.bottleneck ? String(g.bottleneck.task) : null;
    for (const t of g.tasks) {
      const node = el.querySelector(`[data-task="${CSS.escape(String(t.id))}"]`);
      if (!node) continue;
      node.setAttribute("class", `task lvl-${t.backpressure_level}${String(t.id) === bn ? " is-bottleneck" : ""}` +
        (String(t.id) === String(panel.task) ? " selected" : ""));
      node.setAttribute("data-bottleneck", String(String(t.id) === bn));
      const rin = node.querySelector("[data-rate-in]"), rout = node.querySelector("[data-rate-out]");
      rin.textContent = plainRate(t.in_rate);
      rout.textContent = plainRate(t.out_rate);
      rout.setAttribute("data-value", String(t.out_rate));
      const fill = node.querySelector(".bp-fill");
      const bw = Number(node.querySelector(".bp-track").getAttribute("width"));
      const r = Math.max(0, Math.min(1, t.backpressure_ratio || 0));
      fill.setAttribute("width", (bw * r).toFixed(1));
      node.querySelector(".bp-label").textContent = "bp " + pct(r);
      const states = Object.entries(t.states || {}).map(([s, n]) => `${n} ${s.toLowerCase()}`).join(", ");
      node.querySelector("title").textContent =
        `${t.name} (task ${t.id}, p=${t.parallelism})\nrecords in ${fmtInt(t.records_in)}, out ${fmtInt(t.records_out)}` +
        `\nbackpressure ${pct(t.backpressure_ratio)} (${t.backpressure_level})` +
        (t.input_fill != null ? `\ninput fill ${pct(t.input_fill)}` : "") +
        (t.dead_letters ? `\ndead letters ${t.dead_letters}` : "") + (states ? `\nsubtasks: ${states}` : "");
    }
  }

  // ---------- subtasks panel and peek ----------

  const panel = { task: null, scope: null, peek: null };

  function openPanel(taskId) {
    closePanel();
    const id = encodeURIComponent(route.jobId);
    panel.task = taskId;
    panel.scope = newScope();
    $$("#graph [data-task]").forEach((g) => g.classList.toggle("selected", g.dataset.task === String(taskId)));
    const el = document.createElement("aside");
    el.className = "panel";
    el.id = "panel";
    el.setAttribute("data-task-panel", String(taskId));
    el.setAttribute("aria-label", "subtasks");
    el.innerHTML =
      `<header class="panel-head"><div><h2 id="panel-title">Task ${esc(taskId)}</h2><div class="muted" id="panel-sub"></div></div>` +
      `<button type="button" class="icon-btn" data-close-panel aria-label="Close">×</button></header>` +
      `<div class="panel-body"><div class="table-scroll"><table class="table dense subtasks-table"><thead><tr>` +
      `<th>Subtask</th><th>Node</th><th class="num">Slot</th><th>State</th><th class="num">In</th><th class="num">Out</th>` +
      `<th class="num">In/s</th><th class="num">Out/s</th><th>Backpressure</th><th>Input fill</th><th>Watermark</th>` +
      `<th class="num">Lag</th><th class="num">Dead</th></tr></thead><tbody data-subtasks></tbody></table></div>` +
      `<section class="peek"><div class="peek-head"><h3>Live records</h3>` +
      `<label class="filter">max/s <select data-peek-rate><option>1</option><option>5</option><option selected>10</option><option>50</option></select></label>` +
      `<button type="button" class="btn btn-sm btn-primary" data-peek-start>Peek records</button>` +
      `<button type="button" class="btn btn-sm" data-peek-stop hidden>Stop</button>` +
      `<span class="muted peek-status" data-peek-status>Off: sampling starts when you ask, and stops when you close this panel.</span></div>` +
      `<ol class="peek-list" data-peek-records></ol></section></div>`;
    document.body.appendChild(el);
    const scope = panel.scope;
    addLoop(scope, 1000, async () => {
      const s = await api(`jobs/${id}/tasks/${encodeURIComponent(taskId)}/subtasks`);
      if (!scope.alive) return;
      $("#panel-title").textContent = s.name;
      $("#panel-sub").textContent = `task ${s.task} · p=${s.parallelism}`;
      patchCells($("[data-subtasks]", el), s.subtasks.map(subtaskRow));
    });
  }

  function subtaskRow(s) {
    const lag = isNum(s.watermark_lag_ms) && s.watermark_lag_ms > 60000 ? " warn" : "";
    return {
      attrs: `data-subtask="${esc(s.subtask)}"`,
      cells: [
        ["mono", esc(s.subtask)], ["", esc(s.node ?? "–")], ["num", esc(s.slot ?? "–")], ["", badge(s.state)],
        ["num", fmtCompact(s.records_in)], ["num", fmtCompact(s.records_out)],
        ["num", fmtCompact(s.in_rate)], ["num", fmtCompact(s.out_rate)],
        ["", bar(s.backpressure_ratio, s.backpressure_level)], ["", s.input_fill == null ? "–" : bar(s.input_fill)],
        ["mono small", s.watermark == null ? "–" : esc(fmtIso(s.watermark).slice(11, 23))],
        ["num" + lag, fmtDuration(s.watermark_lag_ms)],
        ["num" + (s.dead_letters ? " bad" : ""), fmtInt(s.dead_letters)],
      ],
    };
  }

  function closePanel() {
    stopPeek();
    killScope(panel.scope);
    panel.scope = null;
    panel.task = null;
    const el = $("#panel");
    if (el) el.remove();
    $$("#graph [data-task].selected").forEach((g) => g.classList.remove("selected"));
  }

  function startPeek() {
    stopPeek();
    const el = $("#panel");
    if (!el) return;
    const scope = newScope();
    panel.peek = scope;
    const list = $("[data-peek-records]", el);
    const status = $("[data-peek-status]", el);
    const rate = $("[data-peek-rate]", el);
    $("[data-peek-start]", el).hidden = true;
    $("[data-peek-stop]", el).hidden = false;
    rate.disabled = true;
    let next = null, seen = 0;
    status.textContent = "Starting…";
    const url = `jobs/${encodeURIComponent(route.jobId)}/tasks/${encodeURIComponent(panel.task)}/peek`;
    loop(scope, 1000, async () => {
      const q = (next != null ? `after=${encodeURIComponent(next)}&` : "") + `max_per_second=${encodeURIComponent(rate.value)}`;
      let res;
      try {
        res = await api(`${url}?${q}`);
      } catch (e) {
        if (scope.alive && e.status >= 400) {
          stopPeek();
          status.textContent = `Peek stopped: ${e.message}`;
        }
        throw e;
      }
      if (!scope.alive) return;
      next = res.next;
      seen += res.records.length;
      appendRecords(list, res.records);
      status.textContent = `Sampling, at most ${res.max_per_second}/s · ${seen} record${seen === 1 ? "" : "s"} seen, last 100 kept`;
      if (!res.records.length && !seen) status.textContent = `Sampling, at most ${res.max_per_second}/s · waiting for records…`;
    });
  }

  function appendRecords(list, records) {
    if (!records.length) return;
    const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 24;
    const tmp = document.createElement("ol");
    tmp.innerHTML = records.map((r) => {
      let value;
      try { value = JSON.stringify(r.value); } catch (e) { value = String(r.value); }
      return `<li data-seq="${esc(r.seq)}"><span class="peek-meta"><span class="mono">${esc(fmtIso(r.time_ms).slice(11, 23))}</span>` +
        ` <span class="sub">${esc(r.subtask)}</span></span><code>${esc(value)}</code></li>`;
    }).join("");
    const frag = document.createDocumentFragment();
    while (tmp.firstChild) frag.appendChild(tmp.firstChild);
    list.appendChild(frag);
    while (list.children.length > 100) list.firstElementChild.remove();
    if (atBottom) list.scrollTop = list.scrollHeight;
  }

  function stopPeek() {
    if (!panel.peek) return;
    killScope(panel.peek);
    panel.peek = null;
    // Tell the coordinator now rather than letting the lease run out.
    api(`jobs/${encodeURIComponent(route.jobId)}/tasks/${encodeURIComponent(panel.task)}/peek`, { method: "DELETE" }).catch(() => {});
    const el = $("#panel");
    if (!el) return;
    $("[data-peek-start]", el).hidden = false;
    $("[data-peek-stop]", el).hidden = true;
    $("[data-peek-rate]", el).disabled = false;
    $("[data-peek-status]", el).textContent = "Stopped: sampling ends on the nodes within 10 s.";
  }

  // ---------- checkpoints tab ----------

  function checkpointsTab(body, scope, id) {
    body.innerHTML = `<div id="ck-summary" class="card stats-card"></div>` +
      `<div class="card table-card"><h3 class="card-title">History</h3><table class="table"><thead><tr>` +
      `<th class="num">Id</th><th>Kind</th><th>State</th><th>Triggered</th><th class="num">Duration</th>` +
      `<th class="num">Size</th><th class="num">Alignment</th><th>Trace</th></tr></thead><tbody id="ck-history"></tbody></table></div>` +
      `<div class="card table-card"><h3 class="card-title">Savepoints</h3><table class="table"><thead><tr>` +
      `<th class="num">Id</th><th>Path</th><th>Taken</th><th class="num">Size</th><th>Trace</th></tr></thead>` +
      `<tbody id="ck-savepoints"></tbody></table></div>`;
    addLoop(scope, 3000, async () => {
      const c = await api(`jobs/${id}/checkpoints?limit=50`);
      if (!scope.alive) return;
      const counts = ["COMPLETED", "FAILED", "ABORTED", "DISCARDED"]
        .map((s) => `<span class="count">${badge(s)} <b>${fmtInt((c.counts || {})[s] || 0)}</b></span>`).join("");
      const rp = c.restore_point;
      setHtml($("#ck-summary"), `<div class="stats">` +
        stat("Interval", c.interval_ms == null ? "off" : fmtDuration(c.interval_ms)) +
        stat("Counts", `<span class="counts">${counts}</span>`) +
        stat("In flight", c.in_flight == null ? "none" : `#${esc(c.in_flight)}`) +
        stat("Restore point", rp ? `#${esc(rp.checkpoint_id)} <span class="muted">${fmtAgo(rp.ended_ms || rp.triggered_ms)}</span>` : "none",
          rp && rp.path ? `<div class="mono small path" title="${esc(rp.path)}">${esc(rp.path)}</div>` : "") +
        (c.restored_from ? stat("Restored from", `<span class="mono small path">${esc(c.restored_from)}</span>`) : "") +
        `</div>` + (c.last_failure ? `<div class="banner banner-warn"><b>Last failure:</b> ${esc(c.last_failure)}</div>` : ""));
      patchRows($("#ck-history"), c.history.length ? c.history.map((r) =>
        `<tr data-checkpoint="${esc(r.checkpoint_id)}"><td class="num mono">${esc(r.checkpoint_id)}</td><td>${r.kind === "savepoint" ? badge(r.kind) : `<span class="kind">${esc(r.kind)}</span>`}</td>` +
        `<td>${badge(r.state)}${r.reason ? `<div class="reason">${esc(r.reason)}</div>` : ""}</td>` +
        `<td title="${esc(fmtIso(r.triggered_ms))}">${fmtClock(r.triggered_ms)} <span class="muted">${fmtAgo(r.triggered_ms)}</span></td>` +
        `<td class="num">${fmtDuration(r.duration_ms)}</td><td class="num">${fmtBytes(r.size_bytes)}</td>` +
        `<td class="num">${r.alignment_ms == null ? "–" : fmtDuration(r.alignment_ms)}</td><td>${traceLink(r.trace_url)}</td></tr>`)
        : [empty(8, "No checkpoints yet.")]);
      patchRows($("#ck-savepoints"), c.savepoints.length ? c.savepoints.map((r) =>
        `<tr><td class="num mono">${esc(r.checkpoint_id)}</td><td class="mono small path">${esc(r.path || "–")}</td>` +
        `<td title="${esc(fmtIso(r.triggered_ms))}">${fmtClock(r.triggered_ms)} <span class="muted">${fmtAgo(r.triggered_ms)}</span></td>` +
        `<td class="num">${fmtBytes(r.size_bytes)}</td><td>${traceLink(r.trace_url)}</td></tr>`)
        : [empty(5, "No savepoints: take one with the Savepoint button.")]);
    });
  }

  // ---------- failovers tab ----------

  function failoversTab(body, scope, id) {
    body.innerHTML = `<div class="cols"><div class="col-main"><div class="card"><h3 class="card-title">Failures</h3>` +
      `<div id="fo-timeline"></div></div></div><div class="col-side"><div class="card" id="fo-summary"></div>` +
      `<div class="card"><h3 class="card-title">Dead letters</h3><div id="fo-dead"></div></div></div></div>`;
    let last = null;
    addLoop(scope, 3000, async () => {
      const f = await api(`jobs/${id}/failovers`);
      if (!scope.alive) return;
      setHtml($("#fo-summary"), `<h3 class="card-title">Restarts</h3><div class="stats stats-col">` +
        stat("State", badge(f.state)) + stat("Attempt", esc(f.attempt)) + stat("Restarts", esc(f.restarts)) +
        stat("Restart strategy", `<span class="mono small">${esc(f.restart_strategy)}</span>`) + `</div>`);
      const d = f.dead_letters;
      setHtml($("#fo-dead"), `<div class="big-num${d.total ? " bad" : ""}">${fmtInt(d.total)}</div>` +
        (d.by_subtask.length ? `<table class="table dense"><thead><tr><th>Subtask</th><th class="num">Records</th></tr></thead><tbody>` +
          d.by_subtask.map((s) => `<tr><td class="mono">${esc(s.subtask)}</td><td class="num">${fmtInt(s.count)}</td></tr>`).join("") +
          `</tbody></table>` : `<p class="muted">No record was sent to the dead letters.</p>`));
      const key = JSON.stringify([f.failures, f.checkpoint_failures]);
      if (key === last) return; // keep expanded tracebacks open
      last = key;
      // One timeline, newest first: failed attempts, and the checkpoints that failed.
      const checkpoints = (f.checkpoint_failures || []).map((c) => ({
        time_ms: c.time_ms, attempt: null, cause: "checkpoint_failed", trace_url: c.trace_url,
        summary: `${c.kind} ${c.checkpoint_id} failed: ${c.reason}`, error: "", checkpoint: c.checkpoint_id,
      }));
      const items = f.failures.concat(checkpoints).sort((a, b) => b.time_ms - a.time_ms);
      const timeline = $("#fo-timeline");
      const open = new Set($$("details[open]", timeline).map((d) => d.closest("[data-failure]").dataset.failure));
      timeline.innerHTML = items.length ? `<ol class="timeline">` + items.map((x) =>
        `<li class="tl-item" data-failure="${esc(x.time_ms)}-${esc(x.attempt ?? "c" + x.checkpoint)}"` +
        (x.attempt == null ? ` data-checkpoint-failure="${esc(x.checkpoint)}">` : ` data-failure-attempt="${esc(x.attempt)}">`) +
        `<span class="tl-dot tone-${TONES[x.cause] || "red"}"></span>` +
        `<div class="tl-head"><time title="${esc(fmtIso(x.time_ms))}">${fmtClock(x.time_ms)}</time>` +
        `<span class="muted">${fmtAgo(x.time_ms)}</span>${x.attempt == null ? "" : `<span>attempt ${esc(x.attempt)}</span>`}` +
        `${badge(x.cause)}${traceLink(x.trace_url)}</div>` +
        `<div class="tl-summary">${esc(x.summary || "(no message)")}</div>` +
        (x.error && x.error.trim() !== (x.summary || "").trim()
          ? `<details><summary>Full error</summary><pre>${esc(x.error)}</pre></details>` : "") + `</li>`).join("") + `</ol>`
        : `<p class="muted pad">No failures: attempt ${esc(f.attempt)} has run since the start.</p>`;
      $$("[data-failure]", timeline).forEach((li) => {
        const d = $("details", li);
        if (d && open.has(li.dataset.failure)) d.open = true;
      });
    });
  }

  // ---------- watermarks tab ----------

  function watermarksTab(body, scope, id) {
    const table = (title, tid) => `<div class="card table-card"><h3 class="card-title">${title}</h3><table class="table wm-table"><thead><tr>` +
      `<th>Task</th><th>Subtask</th><th>Watermark (UTC)</th><th class="num">Lag</th><th class="num">Late records</th></tr></thead>` +
      `<tbody id="${tid}"></tbody></table></div>`;
    body.innerHTML = table("Sources", "wm-sources") + table("Windows", "wm-windows");
    const rows = (list, none) => list.length ? list.map((r) => {
      const lag = isNum(r.lag_ms) ? r.lag_ms : null;
      return `<tr data-subtask="${esc(r.subtask)}"><td>${esc(r.name)}</td><td class="mono">${esc(r.subtask)}</td>` +
        `<td class="mono">${r.watermark == null ? `<span class="muted">none yet</span>` : esc(fmtIso(r.watermark))}</td>` +
        `<td class="num${lag != null && lag > 60000 ? " warn" : ""}">${fmtDuration(lag)}</td>` +
        `<td class="num${r.late_records ? " warn" : ""}">${fmtInt(r.late_records)}</td></tr>`;
    }) : [empty(5, none)];
    addLoop(scope, 2000, async () => {
      const w = await api(`jobs/${id}/watermarks`);
      if (!scope.alive) return;
      patchRows($("#wm-sources"), rows(w.sources, "No source assigns event time (no watermark strategy)."));
      patchRows($("#wm-windows"), rows(w.windows, "No window operators."));
    });
  }

  // ---------- nodes page ----------

  function jobTone(jobId, order) {
    if (!order.has(jobId)) order.set(jobId, order.size % 8);
    return `job-c${order.get(jobId)}`;
  }

  function nodesPage(main, scope) {
    document.title = "Nodes · mesh";
    main.innerHTML = `<section data-page="nodes"><div class="page-head"><h1>Nodes</h1><div id="nodes-legend" class="legend"></div></div>` +
      `<div class="nodes" id="nodes"></div></section>`;
    const order = new Map();
    addLoop(scope, 2000, async () => {
      const res = await api("nodes");
      if (!scope.alive) return;
      const names = new Map();
      res.nodes.forEach((n) => n.slot_usage.forEach((s) => s.subtasks.forEach((x) => names.set(x.job_id, x.job_name))));
      setHtml($("#nodes-legend"), [...names].map(([jid, name]) =>
        `<span><i class="sw ${jobTone(jid, order)}"></i>${esc(name)} <span class="mono muted">${esc(shortId(jid))}</span></span>`).join("") +
        `<span><span class="colo">group</span> co-location group</span>`);
      setHtml($("#nodes"), res.nodes.length ? res.nodes.map((n) => nodeCard(n, order)).join("")
        : `<div class="card pad muted">No nodes registered.</div>`);
    });
  }

  function nodeCard(n, order) {
    const hb = n.heartbeat_age_ms;
    const hbCls = hb > 10000 ? "bad" : hb > 3000 ? "warn" : "";
    const slots = n.slot_usage.map((s) => {
      const subs = s.subtasks.map((x) =>
        `<li class="${jobTone(x.job_id, order)}" title="${esc(x.job_name)} · ${esc(x.name)} · subtask ${esc(x.subtask)}` +
        `${x.slot_sharing_group ? " · sharing group " + esc(x.slot_sharing_group) : ""}">` +
        `<span class="sub-idx mono">${esc(x.subtask)}</span><span class="sub-name">${esc(x.name)}</span>` +
        (x.co_location_group ? `<span class="colo" title="co-location group ${esc(x.co_location_group)}">${esc(x.co_location_group)}</span>` : "") +
        `</li>`).join("");
      const job = s.subtasks[0] ? s.subtasks[0].job_name : s.job_id ? shortId(s.job_id) : "";
      return `<div class="slot slot-${esc(s.state)}" data-slot="${esc(s.slot)}"><div class="slot-head"><span>slot ${esc(s.slot)}</span>` +
        `${badge(s.state)}</div>${job ? `<div class="slot-job">${esc(job)}</div>` : ""}` +
        (subs ? `<ul class="slot-subs">${subs}</ul>` : `<div class="slot-empty muted">${s.state === "held" ? "held for a job" : "free"}</div>`) +
        (s.subtasks.length > 1 ? `<div class="slot-foot muted">${s.subtasks.length} subtasks share this slot</div>` : "") + `</div>`;
    }).join("");
    return `<article class="card node" data-node="${esc(n.node_id)}"><header class="node-head"><div><h2>${esc(n.node_id)}</h2>` +
      `<span class="muted mono">${esc(n.host)} · pid ${esc(n.pid)}</span></div>${n.leaving ? badge("leaving", "amber") : badge("active", "green")}</header>` +
      `<div class="stats">` + stat("Heartbeat", `<span class="${hbCls}">${fmtDuration(hb)} ago</span>`) +
      stat("RSS", isNum(n.rss_bytes) ? `${(n.rss_bytes / 1048576).toFixed(0)} MB` : "–") +
      stat("Slots free", `${esc(n.free)} / ${esc(n.slots)}`) +
      stat("Wire errors", `<span class="${n.wire_errors ? "warn" : ""}">${fmtInt(n.wire_errors)}</span>`) +
      `</div><div class="slots">${slots}</div></article>`;
  }

  // ---------- events ----------

  document.addEventListener("click", (ev) => {
    const t = ev.target;
    const act = t.closest("button[data-action]");
    if (act) { ev.preventDefault(); runAction(act.dataset.action, act.dataset.jobId, act.dataset.jobName); return; }
    if (t.closest(".notice-close")) { t.closest(".notice").remove(); return; }
    const copy = t.closest("[data-copy]");
    if (copy) {
      if (navigator.clipboard) navigator.clipboard.writeText(copy.dataset.copy).then(() => { copy.textContent = "Copied"; }, () => {});
      return;
    }
    if (t.closest("[data-close-panel]")) { closePanel(); return; }
    if (t.closest("[data-peek-start]")) { startPeek(); return; }
    if (t.closest("[data-peek-stop]")) { stopPeek(); return; }
    const row = t.closest("tr[data-job-id]");
    if (row && !t.closest("a, button, select, input")) location.hash = `#/jobs/${encodeURIComponent(row.dataset.jobId)}`;
  });

  document.addEventListener("keydown", (ev) => {
    if (ev.key === "Escape" && $("#panel") && !$("#confirm-dialog").open) closePanel();
  });

  window.addEventListener("hashchange", navigate);
  window.addEventListener("pagehide", () => { killScope(route.scope); killScope(route.tabScope); closePanel(); });

  const headerTick = loop(headerScope, 3000, refreshHeader);
  navigate();
})();

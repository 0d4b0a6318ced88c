// The pages. Each takes the <main> element (and route parameters), draws
// itself, and may return a function that refreshes it (called every 2 s).

import { ApiError, call, graphSvg, path } from "./api.js";
import { badge, fill, h, json, row, table, time } from "./dom.js";

export const STATUSES = [
  "pending", "running", "waiting_for_worker", "waiting_for_human", "waiting_for_parallel_tasks",
  "waiting_for_sub_job", "finished", "failed", "cancelled", "error", "quarantined",
];
const ENDED = new Set(["finished", "failed", "cancelled", "error", "quarantined"]);

const jobLink = (id) => h("a", { href: `#/jobs/${encodeURIComponent(id)}`, class: "mono" }, id);

function message(el, text, kind = "error") {
  el.hidden = !text;
  el.className = kind;
  el.textContent = text ?? "";
}

function errorBox(id) {
  return h("p", { id, class: "error", role: "alert", hidden: true });
}

function progressCell(job) {
  const value = Number(job.progress ?? 0);
  if (!(value > 0)) return "";
  return h("span", { class: "progress-cell" },
    h("progress", { max: 1, value }), ` ${Math.round(value * 100)}%`);
}

// ---------------------------------------------------------------- jobs

// Kept while the tab lives, so coming back to the list keeps the filters.
const filters = { status: [], blueprint: "", since: "", until: "", limit: 20, offset: 0 };

function toRfc3339(local) {
  if (!local) return "";
  const date = new Date(local);
  return Number.isNaN(date.getTime()) ? "" : date.toISOString();
}

export async function jobs(main) {
  const statusSelect = h("select", { id: "f-status", multiple: true, size: 4, title: "status (ctrl-click for several)" },
    STATUSES.map((s) => h("option", { value: s, selected: filters.status.includes(s) }, s)));
  const blueprint = h("input", { id: "f-blueprint", list: "blueprint-names", value: filters.blueprint,
    placeholder: "any blueprint" });
  const names = h("datalist", { id: "blueprint-names" });
  const since = h("input", { id: "f-since", type: "datetime-local", value: filters.since });
  const until = h("input", { id: "f-until", type: "datetime-local", value: filters.until });
  const limit = h("select", { id: "f-limit" },
    [20, 50, 100].map((n) => h("option", { value: n, selected: n === filters.limit }, `${n} a page`)));
  const error = errorBox("jobs-error");
  const body = h("tbody", { id: "jobs-body" });
  const pageInfo = h("span", { id: "page-info" });
  const prev = h("button", { id: "prev", type: "button" }, "← Newer");
  const next = h("button", { id: "next", type: "button" }, "Older →");
  const counts = h("div", { id: "counts", class: "counts" });

  const form = h("form", { id: "job-filters", class: "filters" },
    h("label", {}, "Status", statusSelect),
    h("label", {}, "Blueprint", blueprint, names),
    h("label", {}, "Created since", since),
    h("label", {}, "until", until),
    h("label", {}, "Page", limit),
    h("span", { class: "filter-buttons" },
      h("button", { type: "submit" }, "Apply"),
      h("button", { type: "button", id: "clear-filters", onclick: () => {
        Object.assign(filters, { status: [], blueprint: "", since: "", until: "", offset: 0 });
        for (const option of statusSelect.options) option.selected = false;
        blueprint.value = since.value = until.value = "";
        refresh();
      } }, "Clear")));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    filters.status = [...statusSelect.selectedOptions].map((o) => o.value);
    filters.blueprint = blueprint.value.trim();
    filters.since = since.value;
    filters.until = until.value;
    filters.limit = Number(limit.value);
    filters.offset = 0;
    refresh();
  });
  limit.addEventListener("change", () => form.requestSubmit());
  prev.addEventListener("click", () => {
    filters.offset = Math.max(0, filters.offset - filters.limit);
    refresh();
  });
  next.addEventListener("click", () => {
    filters.offset += filters.limit;
    refresh();
  });

  fill(main,
    h("h1", {}, "Jobs"),
    counts,
    form,
    error,
    table(["Job", "Blueprint", "Status", "State", "Progress", "Created", "Updated"], [], { id: "jobs-table" }),
    h("div", { class: "pager" }, prev, pageInfo, next));
  main.querySelector("#jobs-table tbody").replaceWith(body);

  // The names for the blueprint filter, where the server lists them.
  call("/api/v1/blueprints").then((list) => {
    fill(names, (list ?? []).map((b) => h("option", { value: b.name })));
  }).catch(() => {});

  async function refresh() {
    const query = {
      status: filters.status.join(","),
      blueprint: filters.blueprint,
      since: toRfc3339(filters.since),
      until: toRfc3339(filters.until),
      limit: filters.limit,
      offset: filters.offset,
    };
    try {
      const [list, dashboard] = await Promise.all([
        call(path("/api/v1/jobs", query)),
        call("/api/v1/dashboard").catch(() => null),
      ]);
      message(error, "");
      fill(body, list.length === 0
        ? h("tr", {}, h("td", { colspan: 7, class: "empty" }, "No jobs."))
        : list.map((job) => row([
          jobLink(job.id),
          job.blueprint_name,
          badge(job.status),
          job.current_state,
          progressCell(job),
          time(job.created_at),
          time(job.updated_at),
        ], { dataset: { jobId: job.id, status: job.status } })));
      prev.disabled = filters.offset === 0;
      next.disabled = list.length < filters.limit;
      pageInfo.textContent = list.length
        ? `${filters.offset + 1}–${filters.offset + list.length}`
        : `from ${filters.offset + 1}`;
      if (dashboard) fill(counts, countCards(dashboard, true));
    } catch (e) {
      message(error, e.message);
    }
  }
  await refresh();
  return refresh;
}

function countCards(dashboard, compact) {
  const jobs = dashboard.jobs ?? {};
  const shown = compact ? Object.entries(jobs).filter(([, n]) => n > 0) : Object.entries(jobs);
  return [
    h("div", { class: "count" }, h("b", {}, String(dashboard.workers?.total ?? 0)), " workers"),
    shown.map(([status, n]) => h("div", { class: `count status-${status}`, dataset: { status } },
      h("b", {}, String(n)), ` ${status}`)),
  ];
}

// ---------------------------------------------------------------- one job

export async function job(main, id) {
  const status = h("span", { id: "job-status" });
  const state = h("span", { id: "job-state", class: "mono" });
  const bar = h("progress", { id: "job-progress", max: 1, value: 0 });
  const progressText = h("span", { id: "job-progress-message" });
  const jobError = h("p", { id: "job-error-message", class: "error", hidden: true });
  const loadError = errorBox("job-error");
  const actionMessage = h("p", { id: "action-message", hidden: true, role: "status" });
  const facts = h("dl", { class: "facts" });
  const graph = h("div", { id: "graph", class: "graph" });
  const stateHistory = h("div", { id: "state-history" });
  const tasks = h("div", { id: "tasks" });
  const events = h("div", { id: "events" });

  const act = (label, elementId, action, confirmText) => h("button", {
    id: elementId, type: "button",
    onclick: async (event) => {
      if (confirmText && !window.confirm(confirmText)) return;
      event.target.disabled = true;
      try {
        const answer = await call(`/api/v1/jobs/${encodeURIComponent(id)}/${action}`, { method: "POST" });
        message(actionMessage, `${label}: ${answer?.status ?? "done"}`, "ok");
      } catch (e) {
        message(actionMessage, `${label} failed: ${e.message}`);
      } finally {
        event.target.disabled = false;
      }
      await refresh();
    },
  }, label);
  const cancel = act("Cancel", "cancel", "cancel");
  const retry = act("Retry", "retry", "retry");
  const webhook = act("Re-send webhook", "resend-webhook", "webhook");

  fill(main,
    h("p", {}, h("a", { href: "#/jobs" }, "← Jobs")),
    h("h1", {}, "Job ", h("span", { class: "mono" }, id)),
    loadError,
    h("div", { id: "job-body", hidden: true },
      h("div", { class: "summary" },
        h("div", {}, "Status ", status),
        h("div", {}, "State ", state),
        h("div", { class: "progress" }, bar, " ", progressText)),
      jobError,
      h("div", { class: "actions" }, cancel, retry, webhook),
      actionMessage,
      facts,
      h("h2", {}, "State graph"),
      graph,
      h("h2", {}, "State history"),
      stateHistory,
      h("h2", {}, "Tasks"),
      tasks,
      h("h2", {}, "Events"),
      events));

  let drawnFor = null;
  let historyOff = false;
  // States the job went through, from its history events (when history is on).
  let visited = [];

  async function refresh() {
    let current;
    try {
      current = await call(`/api/v1/jobs/${encodeURIComponent(id)}`);
    } catch (e) {
      message(loadError, e.message);
      main.querySelector("#job-body").hidden = true;
      return;
    }
    message(loadError, "");
    main.querySelector("#job-body").hidden = false;
    fill(status, badge(current.status));
    status.dataset.status = current.status;
    state.textContent = current.current_state;
    bar.value = Number(current.progress ?? 0);
    progressText.textContent = `${Math.round(Number(current.progress ?? 0) * 100)}%` +
      (current.progress_message ? ` — ${current.progress_message}` : "");
    message(jobError, current.error_message ?? "");

    const ended = ENDED.has(current.status);
    cancel.hidden = ended;
    retry.hidden = current.status !== "quarantined";
    webhook.hidden = !(ended && current.webhook_url);

    fill(facts,
      [["Blueprint", current.blueprint_name], ["Blueprint version", current.blueprint_version],
        ["Created", time(current.created_at)], ["Updated", time(current.updated_at)],
        ["Transitions", current.transitions], ["Webhook", current.webhook_url],
        ["Parent job", current.parent_job_id && jobLink(current.parent_job_id)],
        ["Child jobs", (current.child_job_ids ?? []).map((c) => [jobLink(c), " "])],
        ["Current task", current.current_task && json(current.current_task)],
        ["Initial data", json(current.initial_data)]]
        .filter(([, v]) => v !== undefined && v !== null && v !== "" && !(Array.isArray(v) && v.length === 0))
        .map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));

    const history = Object.entries(current.state_history ?? {});
    fill(stateHistory, history.length === 0 ? h("p", { class: "empty" }, "Empty.")
      : table(["Key", "Value"], history.map(([k, v]) => row([k, json(v)]))));

    const key = `${current.blueprint_name}\u0000${current.current_state}\u0000${visited.join(",")}`;
    if (key !== drawnFor) {
      try {
        const svg = await graphSvg(current.blueprint_name, current.current_state, visited);
        fill(graph, svg);
        drawnFor = key;
      } catch (e) {
        fill(graph, h("p", { class: "error" }, `No graph: ${e.message}`));
      }
    }

    if (!historyOff) await drawHistory();
  }

  async function drawHistory() {
    let list;
    try {
      list = await call(path(`/api/v1/jobs/${encodeURIComponent(id)}/history`, { limit: 1000 }));
    } catch (e) {
      // Without history storage the route is not there at all.
      if (e instanceof ApiError && e.status === 404 && /no route|not enabled/.test(e.message)) {
        historyOff = true;
        for (const el of [tasks, events]) {
          fill(el, h("p", { class: "empty history-off" }, "History is off on this server (HISTORY_DATABASE_URI)."));
        }
      } else {
        fill(events, h("p", { class: "error" }, e.message));
      }
      return;
    }
    // A state name with a comma cannot be told apart in the query; it goes unshaded.
    visited = [...new Set(list.map((e) => e.state).filter((s) => s && !s.includes(",")))];
    const byTask = new Map();
    for (const event of list) {
      if (!event.task_id) continue;
      const task = byTask.get(event.task_id) ?? { id: event.task_id, first: event.timestamp };
      Object.assign(task, {
        last: event.event_type, at: event.timestamp,
        worker: event.worker_id ?? task.worker, attempt: event.attempt_number ?? task.attempt,
        state: event.state ?? task.state, duration: event.duration_ms ?? task.duration,
      });
      byTask.set(event.task_id, task);
    }
    fill(tasks, byTask.size === 0 ? h("p", { class: "empty" }, "No tasks.")
      : table(["Task", "State", "Worker", "Attempt", "Last event", "At", "Duration"],
        [...byTask.values()].map((t) => row([h("span", { class: "mono" }, t.id), t.state ?? "", t.worker ?? "",
          t.attempt ?? "", t.last, time(t.at), t.duration != null ? `${t.duration} ms` : ""]))));
    fill(events, list.length === 0 ? h("p", { class: "empty" }, "No events.")
      : table(["At", "Event", "State", "Next state", "Worker", "Details"],
        list.map((e) => row([time(e.timestamp), e.event_type, e.state ?? e.previous_state ?? "", e.next_state ?? "",
          e.worker_id ?? "", e.context_snapshot ? json(e.context_snapshot) : ""]))));
  }

  await refresh();
  return refresh;
}

// ---------------------------------------------------------------- quarantined

export async function quarantined(main) {
  const error = errorBox("quarantined-error");
  const actionMessage = h("p", { id: "action-message", hidden: true, role: "status" });
  const body = h("tbody", { id: "quarantined-body" });
  fill(main, h("h1", {}, "Quarantined jobs"),
    h("p", { class: "hint" }, "Jobs whose worker reported a permanent error. Retry sends one back to its current state."),
    error, actionMessage,
    h("table", { id: "quarantined-table" },
      h("thead", {}, h("tr", {}, ["Job", "Blueprint", "State", "Error", "Updated", ""].map((t) => h("th", {}, t)))),
      body));

  async function refresh() {
    try {
      const list = await call(path("/api/v1/jobs", { status: "quarantined", limit: 100 }));
      message(error, "");
      // The filter is the server's; this keeps the page right on one without it.
      const shown = list.filter((j) => j.status === "quarantined");
      fill(body, shown.length === 0 ? h("tr", {}, h("td", { colspan: 6, class: "empty" }, "No quarantined jobs."))
        : shown.map((job) => row([
          jobLink(job.id), job.blueprint_name, job.current_state, job.error_message ?? "", time(job.updated_at),
          h("button", { type: "button", class: "retry", dataset: { jobId: job.id }, onclick: async (event) => {
            event.target.disabled = true;
            try {
              const answer = await call(`/api/v1/jobs/${encodeURIComponent(job.id)}/retry`, { method: "POST" });
              message(actionMessage, `Retry ${job.id}: ${answer?.status ?? "done"}`, "ok");
            } catch (e) {
              message(actionMessage, `Retry ${job.id} failed: ${e.message}`);
            }
            await refresh();
          } }, "Retry"),
        ], { dataset: { jobId: job.id } })));
    } catch (e) {
      message(error, e.message);
    }
  }
  await refresh();
  return refresh;
}

// ---------------------------------------------------------------- workers

const WORKER_FIELDS = new Set(["worker_id", "worker_type", "supported_tasks", "max_concurrent_tasks", "status",
  "load", "in_flight", "reputation"]);

export async function workers(main) {
  const error = errorBox("workers-error");
  const body = h("tbody", { id: "workers-body" });
  fill(main, h("h1", {}, "Workers"), error,
    h("table", { id: "workers-table" },
      h("thead", {}, h("tr", {}, ["Worker", "Type", "Status", "Load", "In flight", "Reputation", "Tasks",
        "Resources and more"].map((t) => h("th", {}, t)))),
      body));

  async function refresh() {
    try {
      const list = await call("/api/v1/workers");
      message(error, "");
      fill(body, list.length === 0 ? h("tr", {}, h("td", { colspan: 8, class: "empty" }, "No live workers."))
        : list.map((w) => {
          const extra = Object.fromEntries(Object.entries(w).filter(([k]) => !WORKER_FIELDS.has(k)));
          return row([
            h("span", { class: "mono" }, w.worker_id),
            w.worker_type ?? "",
            badge(w.status),
            h("span", {}, h("meter", { min: 0, max: 1, value: Number(w.load ?? 0) }), ` ${Number(w.load ?? 0).toFixed(2)}`),
            w.max_concurrent_tasks ? `${w.in_flight} / ${w.max_concurrent_tasks}` : String(w.in_flight ?? 0),
            `${Math.round(Number(w.reputation ?? 1) * 100)}%`,
            h("ul", { class: "tags" }, (w.supported_tasks ?? []).map((t) => h("li", {}, t))),
            Object.keys(extra).length ? json(extra) : "",
          ], { dataset: { workerId: w.worker_id } });
        }));
    } catch (e) {
      message(error, e.message);
    }
  }
  await refresh();
  return refresh;
}

// ---------------------------------------------------------------- schedules

export async function schedules(main) {
  const error = errorBox("schedules-error");
  const holder = h("div", { id: "schedules" });
  fill(main, h("h1", {}, "Schedules"), error, holder);

  async function refresh() {
    try {
      const list = await call("/api/v1/schedules");
      message(error, "");
      if (list.length === 0) {
        fill(holder, h("p", { class: "empty" }, "No schedules (SCHEDULES_CONFIG_PATH)."));
        return;
      }
      const keys = [...new Set(list.flatMap((s) => Object.keys(s)))];
      fill(holder, table(keys, list.map((s) => row(keys.map((k) => {
        const v = s[k];
        if (v === null || v === undefined) return "";
        if (typeof v === "object") return json(v);
        return /(^next|_at$|run)/.test(k) && typeof v === "string" ? time(v) : String(v);
      })))));
    } catch (e) {
      message(error, e.message);
    }
  }
  await refresh();
  return refresh;
}

// ---------------------------------------------------------------- blueprints

export async function blueprints(main) {
  const error = errorBox("blueprints-error");
  const holder = h("div", { id: "blueprints" });
  fill(main, h("h1", {}, "Blueprints"), error, holder);
  let list;
  try {
    list = await call("/api/v1/blueprints");
  } catch (e) {
    message(error, e.status === 404 ? "This server does not list its blueprints (GET /api/v1/blueprints)." : e.message);
    return;
  }
  fill(holder, list.map((b) => {
    const graph = h("div", { class: "graph" });
    graphSvg(b.name).then((svg) => fill(graph, svg))
      .catch((e) => fill(graph, h("p", { class: "error" }, `No graph: ${e.message}`)));
    return h("section", { class: "blueprint", dataset: { blueprint: b.name } },
      h("h2", {}, b.name),
      h("dl", { class: "facts" },
        [["Version", h("span", { class: "mono" }, String(b.version ?? "").slice(0, 16))],
          ["Endpoint", b.endpoint ? h("code", {}, `POST ${b.endpoint}`) : "none"],
          ["API version", b.api_version ?? ""], ["Start state", b.start ?? ""],
          ["States", String((b.states ?? []).length)]]
          .map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
      graph);
  }));
}

// ---------------------------------------------------------------- status

export async function status(main) {
  const error = errorBox("status-error");
  const cards = h("div", { id: "status-counts", class: "counts large" });
  fill(main, h("h1", {}, "Status"), h("p", { class: "hint" }, "Jobs by status, and the live workers."), error, cards);

  async function refresh() {
    try {
      fill(cards, countCards(await call("/api/v1/dashboard"), false));
      message(error, "");
    } catch (e) {
      message(error, e.message);
    }
  }
  await refresh();
  return refresh;
}

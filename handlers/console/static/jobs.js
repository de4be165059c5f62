// Jobs: the tenant's jobs, newest first, filtered and paged by the service's cursor; one job's
// timeline, options, webhook and artifacts.

import { api, blobUrl } from "./api.js";
import { describeError, fmtBytes, fmtTime, h } from "./dom.js";

const PAGE_SIZE = 25;
const STATUSES = ["", "queued", "processing", "completed", "failed", "cancelled"];
const DOORS = ["", "http", "broker", "object-drop", "seed"];
const state = { status: "", door: "", client_ref: "", cursors: [null] };

function row(job) {
  const name = job.filename || job.client_ref || job.job_id;
  return h(
    "tr",
    { dataset: { jobId: job.job_id, status: job.status } },
    h("td", {}, fmtTime(job.created_at)),
    h("td", {}, h("a", { href: `#/jobs/${encodeURIComponent(job.job_id)}` }, name)),
    h("td", {}, job.status),
    h("td", {}, job.result ? String(job.result.page_count) : job.progress?.pages_total ? `${job.progress.pages_done}/${job.progress.pages_total}` : ""),
    h("td", {}, job.client_ref || ""),
    h("td", {}, job.error ? job.error.code : ""),
  );
}

export function jobsView() {
  const body = h("tbody");
  const info = h("span.detail", { "aria-live": "polite" });
  const older = h("button", { type: "button", id: "older" }, "Older");
  const newer = h("button", { type: "button", id: "newer" }, "Newer");
  const abort = new AbortController();

  async function load() {
    const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
    for (const name of ["status", "door", "client_ref"]) if (state[name]) params.set(name, state[name]);
    const cursor = state.cursors[state.cursors.length - 1];
    if (cursor) params.set("cursor", cursor);
    info.textContent = "loading…";
    try {
      const page = await api(`/v1/jobs?${params}`, { signal: abort.signal });
      // One page at a time in the DOM: a thousand jobs are forty pages, never one table.
      body.replaceChildren(...page.jobs.map(row));
      older.disabled = !page.next_cursor;
      older.onclick = () => {
        state.cursors.push(page.next_cursor);
        load();
      };
      newer.disabled = state.cursors.length <= 1;
      info.textContent = `page ${state.cursors.length}, ${page.jobs.length} jobs`;
    } catch (err) {
      if (!abort.signal.aborted) info.textContent = describeError(err);
    }
  }
  newer.addEventListener("click", () => {
    state.cursors.pop();
    load();
  });

  const select = (name, values) =>
    h("select", { name, onchange: (ev) => ((state[name] = ev.target.value), (state.cursors = [null]), load()) },
      values.map((v) => h("option", { value: v, selected: state[name] === v }, v || "any")));
  const ref = h("input", { name: "client_ref", value: state.client_ref, size: 14 });
  const filters = h(
    "form.row",
    { onsubmit: (ev) => (ev.preventDefault(), (state.client_ref = ref.value.trim()), (state.cursors = [null]), load()) },
    h("label", {}, "Status", select("status", STATUSES)),
    h("label", {}, "Door", select("door", DOORS)),
    h("label", {}, "Client reference", ref),
    h("button", { type: "submit" }, "Filter"),
  );
  const table = h(
    "table.list",
    { id: "jobs-table" },
    h("thead", {}, h("tr", {}, ["Created", "File", "Status", "Pages", "Client ref", "Error"].map((t) => h("th", { scope: "col" }, t)))),
    body,
  );
  const node = h("section", {}, h("h1", {}, "Jobs"), filters, h("div.pager", {}, newer, older, info), table);
  load();
  return { node, close: () => abort.abort() };
}

function entry(dl, term, value) {
  dl.append(h("dt", {}, term), h("dd", {}, value ?? "—"));
}

async function download(job, art, button) {
  button.disabled = true;
  try {
    const url = await blobUrl(`/v1/jobs/${encodeURIComponent(job.job_id)}/artifacts/${encodeURIComponent(art.name)}`);
    const a = h("a", { href: url, download: art.name });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
  } catch (err) {
    button.after(h("span.error", {}, ` ${describeError(err)}`));
  } finally {
    button.disabled = false;
  }
}

export function jobDetailView(jobId) {
  const node = h("section", {}, h("h1", {}, "Job"), h("p.detail", {}, "loading…"));
  const path = `/v1/jobs/${encodeURIComponent(jobId)}`;

  async function show() {
    let job;
    try {
      job = await api(path);
    } catch (err) {
      node.replaceChildren(h("h1", {}, "Job"), h("p.error", {}, describeError(err)));
      return;
    }
    const timeline = h("dl.timeline", { id: "timeline" });
    entry(timeline, "Job", job.job_id);
    entry(timeline, "File", job.filename);
    entry(timeline, "Status", job.status);
    entry(timeline, "Door", job.door);
    entry(timeline, "Client reference", job.client_ref);
    entry(timeline, "Created", fmtTime(job.created_at));
    entry(timeline, "Started", fmtTime(job.started_at));
    entry(timeline, "Finished", fmtTime(job.finished_at));
    if (job.error) entry(timeline, "Error", `${job.error.code}: ${job.error.message}`);
    if (job.result) entry(timeline, "Pages", String(job.result.page_count));
    const actions = h("div.actions");
    if (job.webhook) {
      const hook = job.webhook;
      entry(timeline, "Webhook", `${hook.state || "pending"}, ${hook.attempts ?? 0} attempts, last HTTP ${hook.last_status ?? "—"}`);
      const redeliver = h("button", { type: "button" }, "Redeliver webhook");
      redeliver.addEventListener("click", async () => {
        redeliver.disabled = true;
        try {
          await api(`${path}/webhook/redeliver`, { method: "POST" });
          redeliver.after(h("span.detail", {}, " queued for delivery"));
        } catch (err) {
          redeliver.after(h("span.error", {}, ` ${describeError(err)}`));
        }
      });
      actions.append(redeliver);
    }
    if (job.status === "completed") actions.prepend(h("a", { href: `#/read/${encodeURIComponent(job.job_id)}/1` }, "Read beside the pages"));
    const artifacts = h("ul", { id: "artifacts" });
    for (const art of job.result?.artifacts || []) {
      const button = h("button", { type: "button" }, `Download ${art.name}`);
      button.addEventListener("click", () => download(job, art, button));
      artifacts.append(h("li", {}, button, ` ${fmtBytes(art.size)} · sha256 ${String(art.sha256 || "").slice(0, 12)}…`));
    }
    node.replaceChildren(
      h("h1", {}, job.filename || job.job_id),
      actions,
      h("h2", {}, "Timeline"),
      timeline,
      h("h2", {}, "Options"),
      h("pre", {}, JSON.stringify(job.options, null, 2)),
      h("h2", {}, "Artifacts"),
      artifacts.childElementCount ? artifacts : h("p.detail", {}, "none"),
    );
  }
  show();
  return { node };
}

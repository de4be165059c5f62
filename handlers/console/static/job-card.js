// <job-card>: one job, followed live; every card's events come over one stream of the page
// (api.js `jobStream`), however many cards there are.

import { api, jobStream } from "./api.js";
import { describeError, h } from "./dom.js";

const TERMINAL = new Set(["completed", "failed", "cancelled"]);

/** How far a job has got: a view that is not ahead of the shown one must not undo it. */
function stage(view) {
  const rank = TERMINAL.has(view.status) ? 2 : view.status === "processing" ? 1 : 0;
  return [rank, view.progress?.pages_done ?? 0];
}

function behind(view, shown) {
  const [a, b] = [stage(view), stage(shown)];
  return a[0] < b[0] || (a[0] === b[0] && a[0] === 1 && a[1] < b[1]);
}

export class JobCard extends HTMLElement {
  constructor() {
    super();
    this.job = null;
    this.unwatch = null;
  }

  /** Show upload progress before there is a job. */
  uploading(name, fraction) {
    this.name = name;
    this.dataset.status = "uploading";
    this.render({ label: `uploading ${Math.round(fraction * 100)} %`, fraction });
  }

  waitingToRetry(name, message) {
    this.name = name;
    this.dataset.status = "waiting";
    this.render({ label: message });
  }

  failedUpload(name, err) {
    this.name = name;
    this.dataset.status = "rejected";
    this.render({ label: "not accepted", error: describeError(err) });
  }

  /** The job exists: show it and follow it until it ends. */
  async follow(job) {
    this.update(job);
    if (TERMINAL.has(job.status)) return;
    try {
      this.unwatch = await jobStream.watch(job.job_id, (_type, data) => this.update(data));
      // Read after subscribing, so no change is missed; queue position and ETA are in it.
      this.update(await api(`/v1/jobs/${encodeURIComponent(job.job_id)}`));
    } catch (err) {
      this.render({ error: describeError(err) });
    }
    this.stopWatchingIfEnded();
  }

  stopWatchingIfEnded() {
    if (this.unwatch && TERMINAL.has(this.job.status)) {
      this.unwatch();
      this.unwatch = null;
    }
  }

  update(view) {
    const known = this.job || {};
    if (this.job && behind(view, known)) return; // an older state that came in late
    this.job = { ...known, ...view };
    if (view.queue_position === undefined && known.queue_position !== undefined && view.status === "queued") {
      this.job.queue_position = known.queue_position;
      this.job.eta_s = known.eta_s;
    }
    this.dataset.status = this.job.status;
    this.dataset.jobId = this.job.job_id;
    this.stopWatchingIfEnded();
    this.render();
  }

  async cancel() {
    const button = this.querySelector("button.cancel");
    if (button) button.disabled = true;
    try {
      this.update(await api(`/v1/jobs/${encodeURIComponent(this.job.job_id)}`, { method: "DELETE" }));
    } catch (err) {
      this.render({ error: describeError(err) });
    }
  }

  render(extra = {}) {
    const job = this.job;
    const name = (job && (job.filename || job.client_ref)) || this.name || (job && job.job_id) || "";
    const status = job ? job.status : this.dataset.status;
    const parts = [h("div.card-head", {}, h("span.name", { title: name }, name), h("span.badge", {}, status))];
    if (job) {
      const done = job.progress?.pages_done ?? 0;
      const total = job.progress?.pages_total ?? 0;
      if (status === "queued") {
        const pos = job.queue_position;
        const eta = job.eta_s;
        parts.push(h("div.detail", {}, `queued${pos != null ? `, position ${pos}` : ""}${eta != null ? `, about ${Math.ceil(eta)} s` : ""}`));
      } else if (status === "processing") {
        parts.push(h("progress", { max: total || 1, value: done, "aria-label": "pages done" }));
        parts.push(h("div.detail", {}, total ? `${done} / ${total} pages` : "processing"));
      } else if (status === "completed") {
        parts.push(h("div.detail.pages", {}, `${job.result?.page_count ?? "?"} pages`));
      } else if (status === "failed" && job.error) {
        parts.push(h("div.error", {}, `${job.error.code}: ${job.error.message}`));
      }
      const links = h("div.actions");
      if (status === "completed") links.append(h("a.read", { href: `#/read/${encodeURIComponent(job.job_id)}/1` }, "Read"));
      links.append(h("a.details", { href: `#/jobs/${encodeURIComponent(job.job_id)}` }, "Details"));
      if (!TERMINAL.has(status)) links.append(h("button.cancel", { type: "button", onclick: () => this.cancel() }, "Cancel"));
      parts.push(links);
    } else if (extra.fraction !== undefined) {
      parts.push(h("progress", { max: 1, value: extra.fraction, "aria-label": "uploaded" }));
    }
    if (extra.label) parts.push(h("div.detail", {}, extra.label));
    if (extra.error) parts.push(h("div.error", { role: "alert" }, extra.error));
    this.replaceChildren(...parts);
  }
}

customElements.define("job-card", JobCard);

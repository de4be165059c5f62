// Operate: queue depths, workers, pages/s, failures of the last hour, parked webhooks (replay).
// Read when the view opens and on "Refresh": nothing polls.

import { api } from "./api.js";
import { describeError, h } from "./dom.js";

function stat(label, value, id) {
  return h("div.stat", { id }, h("div.detail", {}, label), h("div.value", {}, value ?? "—"));
}

export function opsView() {
  const body = h("div", {}, h("p.detail", {}, "loading…"));
  const refresh = h("button", { type: "button", id: "ops-refresh" }, "Refresh");

  async function load() {
    refresh.disabled = true;
    try {
      const ops = await api("/v1/console/ops");
      const extract = ops.queues.find((q) => q.name === "extract") || {};
      const queues = h(
        "table.list",
        { id: "queues" },
        h("thead", {}, h("tr", {}, ["Queue", "Ready", "Consumers"].map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, ops.queues.map((q) => h("tr", {}, h("td", {}, q.name), h("td", {}, q.ready ?? "?"), h("td", {}, q.consumers ?? "?")))),
      );
      const workers = ops.workers.size != null ? `${ops.workers.busy} / ${ops.workers.size}` : `${extract.consumers ?? "?"} consumers`;
      const dead = h("tbody");
      for (const d of ops.dead_webhooks) {
        const replay = h("button", { type: "button" }, "Replay");
        replay.addEventListener("click", async () => {
          replay.disabled = true;
          try {
            const r = await api(`/v1/console/dead-webhooks/${encodeURIComponent(d.job_id)}/replay`, { method: "POST" });
            replay.replaceWith(h("span.detail", {}, `replayed ${r.replayed}`));
          } catch (err) {
            replay.after(h("span.error", {}, ` ${describeError(err)}`));
          }
        });
        dead.append(h("tr", {}, h("td", {}, h("a", { href: `#/jobs/${encodeURIComponent(d.job_id)}` }, d.job_id)), h("td", {}, d.event_type || ""), h("td", {}, String(d.attempts)), h("td", {}, d.last_status ?? d.reason ?? ""), h("td", {}, replay)));
      }
      body.replaceChildren(
        h(
          "div.stats",
          {},
          stat("Waiting to extract", extract.ready, "stat-queued"),
          stat("Workers busy", workers, "stat-workers"),
          stat("Pages per second", ops.pages_per_s != null ? ops.pages_per_s.toFixed(1) : null, "stat-rate"),
          stat("Failed in the last hour", `${ops.failed_last_hour}${ops.failed_last_hour_more ? "+" : ""}`, "stat-failed"),
        ),
        h("h2", {}, "Queues"),
        queues,
        h("h2", {}, "Dead-lettered webhooks"),
        ops.dead_webhooks.length
          ? h("table.list", { id: "dead-webhooks" }, h("thead", {}, h("tr", {}, ["Job", "Event", "Attempts", "Last", ""].map((t) => h("th", { scope: "col" }, t)))), dead)
          : h("p.detail", {}, "none"),
      );
    } catch (err) {
      body.replaceChildren(h("p.error", {}, describeError(err)));
    } finally {
      refresh.disabled = false;
    }
  }
  refresh.addEventListener("click", load);
  load();
  return { node: h("section", {}, h("h1", {}, "Operate"), refresh, body) };
}

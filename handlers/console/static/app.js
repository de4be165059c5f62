// The console: a hash router over five views, and the API key dialog.

import { getKey, hooks, setKey } from "./api.js";
import { jobDetailView, jobsView } from "./jobs.js";
import { opsView } from "./ops.js";
import { readView } from "./read.js";
import { submitView } from "./submit.js";

const main = document.getElementById("view");
const dialog = document.getElementById("key-dialog");
const keyInput = document.getElementById("key-input");
let current = null;

const ROUTES = [
  [/^#\/jobs\/([^/]+)$/, (m) => jobDetailView(decodeURIComponent(m[1])), "jobs"],
  [/^#\/jobs$/, () => jobsView(), "jobs"],
  [/^#\/read\/([^/]+)(?:\/(\d+))?$/, (m) => readView(decodeURIComponent(m[1]), Number(m[2] || 1)), "jobs"],
  [/^#\/ops$/, () => opsView(), "ops"],
  [/^/, () => submitView(), "submit"],
];

function route() {
  const hash = location.hash || "#/submit";
  for (const [pattern, make, nav] of ROUTES) {
    const m = hash.match(pattern);
    if (!m) continue;
    // The read view turns its own pages (it replaces the hash without leaving).
    if (current && current.handles && current.handles(hash)) return;
    if (current && current.close) current.close();
    current = make(m);
    main.replaceChildren(current.node);
    for (const a of document.querySelectorAll("header nav a")) {
      if (a.dataset.view === nav) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    }
    if (current.focus) current.focus();
    return;
  }
}

function askForKey() {
  keyInput.value = "";
  if (!dialog.open) dialog.showModal();
}

hooks.unauthorized = askForKey;
document.getElementById("key-button").addEventListener("click", askForKey);
document.getElementById("key-forget").addEventListener("click", () => {
  setKey("");
  dialog.close();
});
dialog.addEventListener("close", () => {
  if (dialog.returnValue === "save" && keyInput.value.trim()) {
    setKey(keyInput.value.trim());
    current = null; // re-open the view with the key
    route();
  }
});

window.addEventListener("hashchange", route);
document.documentElement.dataset.key = getKey() ? "set" : "unset";
route();
document.documentElement.dataset.ready = "true";

// Submit: drop or pick PDFs (or give a URL), choose options, watch each job as a card.

import { ApiError, api, submitForm } from "./api.js";
import { h } from "./dom.js";
import { JobCard } from "./job-card.js";

const OUTPUTS = ["text", "markdown", "metadata", "page_images", "images", "tables"];
const cards = h("div.cards", { id: "cards", "aria-live": "polite" });

function optionsForm() {
  const outputs = OUTPUTS.map((name) =>
    h("label", {}, h("input", { type: "checkbox", name: "outputs", value: name, checked: ["text", "markdown", "metadata"].includes(name) }), name),
  );
  return h(
    "fieldset",
    {},
    h("legend", {}, "Options"),
    h("div.row.checks", {}, outputs),
    h(
      "div.row",
      {},
      h("label", {}, "Pages", h("input", { name: "pages", placeholder: "all, or 1-3,7", size: 10 })),
      h("label", {}, "OCR", h("select", { name: "ocr" }, ["auto", "always", "never"].map((v) => h("option", { value: v }, v)))),
      h("label", {}, "OCR language", h("input", { name: "ocr_language", placeholder: "eng", size: 8 })),
      h("label", {}, "Webhook URL", h("input", { name: "webhook_url", type: "url", placeholder: "https://…", size: 28 })),
      h("label", {}, "Client reference", h("input", { name: "client_ref", size: 12 })),
    ),
  );
}

function readOptions(form) {
  const data = new FormData(form);
  const options = { outputs: data.getAll("outputs") };
  const pages = String(data.get("pages") || "").trim();
  if (pages) options.pages = pages;
  options.ocr = String(data.get("ocr") || "auto");
  const lang = String(data.get("ocr_language") || "").trim();
  if (lang) options.ocr_language = lang;
  return {
    options,
    webhook: String(data.get("webhook_url") || "").trim(),
    clientRef: String(data.get("client_ref") || "").trim(),
  };
}

function newCard() {
  const card = new JobCard();
  cards.prepend(card);
  return card;
}

async function submitFile(file, form) {
  const card = newCard();
  const { options, webhook, clientRef } = readOptions(form);
  const body = new FormData();
  body.append("file", file, file.name);
  body.append("options", JSON.stringify(options));
  if (webhook) body.append("webhook_url", webhook);
  if (clientRef) body.append("client_ref", clientRef);
  card.uploading(file.name, 0);
  try {
    const job = await submitForm(
      body,
      (fraction) => card.uploading(file.name, fraction),
      (err, wait) => card.waitingToRetry(file.name, `${err.status === 429 ? "over quota" : "service busy"} (${err.code}): retrying in ${wait} s`),
    );
    await card.follow({ filename: file.name, ...job });
  } catch (err) {
    card.failedUpload(file.name, err);
  }
}

async function submitUrl(url, form) {
  const card = newCard();
  const { options, webhook, clientRef } = readOptions(form);
  const payload = { source: { url }, options };
  if (webhook) payload.webhook = { url: webhook };
  if (clientRef) payload.client_ref = clientRef;
  card.waitingToRetry(url, "submitting");
  for (let attempt = 1; ; attempt++) {
    try {
      const job = await api("/v1/jobs", { method: "POST", body: payload });
      await card.follow({ filename: url, ...job });
      return;
    } catch (err) {
      const retry = err instanceof ApiError && (err.status === 429 || err.status === 503) && attempt < 5;
      if (!retry) {
        card.failedUpload(url, err);
        return;
      }
      card.waitingToRetry(url, `service busy (${err.code}): retrying in ${err.retryAfter ?? 5} s`);
      await new Promise((resolve) => setTimeout(resolve, (err.retryAfter ?? 5) * 1000));
    }
  }
}

export function submitView() {
  const form = h("form", { id: "submit-form", onsubmit: (ev) => ev.preventDefault() });
  const picker = h("input", { type: "file", id: "file-input", accept: "application/pdf,.pdf", multiple: true, className: "visually-hidden" });
  const submitAll = (files) => {
    for (const file of files) submitFile(file, form);
  };
  picker.addEventListener("change", () => {
    submitAll([...picker.files]);
    picker.value = "";
  });
  const choose = h("button.primary", { type: "button", id: "choose-files", onclick: () => picker.click() }, "Choose PDFs…");
  const drop = h("div.drop", { id: "drop-zone" }, h("p", {}, "Drop PDFs here, or "), choose, picker);
  drop.addEventListener("dragover", (ev) => {
    ev.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (ev) => {
    ev.preventDefault();
    drop.classList.remove("over");
    submitAll([...(ev.dataTransfer?.files || [])]);
  });
  const url = h("input", { type: "url", id: "url-input", name: "source_url", placeholder: "https://example.org/file.pdf", size: 40 });
  const urlRow = h(
    "div.row",
    {},
    h("label", {}, "Or a PDF's URL", url),
    h("button", { type: "button", id: "submit-url", onclick: () => url.value.trim() && submitUrl(url.value.trim(), form) }, "Submit URL"),
  );
  url.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && url.value.trim()) submitUrl(url.value.trim(), form);
  });
  form.append(drop, optionsForm(), urlRow);
  const node = h("section", { "aria-labelledby": "submit-title" }, h("h1", { id: "submit-title" }, "Submit"), form, h("h2", {}, "This session's jobs"), cards);
  return { node, focus: () => choose.focus() };
}

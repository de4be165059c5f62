// Read: the result beside the document, one page at a time — that page's image (rendered on
// demand by the service, cached there) and its text, the Markdown or its tables. Only the
// visible page is in the DOM, however long the document.

import { api, blobUrl } from "./api.js";
import { describeError, h } from "./dom.js";
import { renderMarkdown } from "./markdown.js";
import { entries, read } from "./zip.js";

const results = new Map(); // job id -> result promise (the last few jobs read)
const WIDTHS = [400, 800, 1200, 1600];
const MAX_IMAGES_ZIP = 64 * 1024 * 1024; // larger: offered for download, not opened here
const SHOWN_TYPES = { jpg: "image/jpeg", png: "image/png" }; // what a browser can show

function result(jobId) {
  if (!results.has(jobId)) {
    if (results.size >= 3) results.delete(results.keys().next().value);
    const p = api(`/v1/jobs/${encodeURIComponent(jobId)}/result`);
    p.catch(() => results.delete(jobId));
    results.set(jobId, p);
  }
  return results.get(jobId);
}

const codePoints = new WeakMap(); // result -> its Markdown as an array of code points

/**
 * That page's part of the result's Markdown (`markdown_pages`: offsets in code points), or
 * null when the result does not say. A JS string counts a character beyond U+FFFF twice, so
 * such a Markdown is cut as code points.
 */
function pageMarkdown(res, page) {
  const span = (res.markdown_pages || []).find((p) => p.number === page);
  if (!span) return res.markdown_pages ? "" : null;
  const md = res.markdown;
  if (!/[\uD800-\uDFFF]/.test(md)) return md.slice(span.start, span.end);
  if (!codePoints.has(res)) codePoints.set(res, Array.from(md));
  return codePoints.get(res).slice(span.start, span.end).join("");
}

function previewWidth(box) {
  const want = (box.clientWidth || 600) * (window.devicePixelRatio || 1);
  return WIDTHS.find((w) => w >= want) || WIDTHS[WIDTHS.length - 1];
}

export function readView(jobId, firstPage) {
  const prefix = `#/read/${encodeURIComponent(jobId)}/`;
  const title = h("h1", {}, "Read");
  const status = h("span.detail", { id: "read-status", "aria-live": "polite" });
  const prev = h("button", { type: "button", id: "prev-page", "aria-keyshortcuts": "ArrowLeft" }, "◀ Previous");
  const next = h("button", { type: "button", id: "next-page", "aria-keyshortcuts": "ArrowRight" }, "Next ▶");
  const jump = h("input", { type: "number", id: "page-input", min: 1, inputMode: "numeric", "aria-label": "page number" });
  const of = h("span", {});
  const jumpForm = h("form.toolbar", { id: "jump-form" }, h("label", {}, "Page ", jump), of, h("button", { type: "submit" }, "Go"));
  const tabs = ["text", "markdown", "tables", "images"].map((name) =>
    h("button", { type: "button", role: "tab", id: `tab-${name}`, "aria-selected": name === "text" ? "true" : "false" }, name[0].toUpperCase() + name.slice(1)),
  );
  const image = h("img", { id: "page-image", alt: "" });
  const imageBox = h("figure.page-image", { id: "page-image-box" }, h("span.detail", {}, "…"));
  const panel = h("div.side-body", { id: "page-side", role: "tabpanel", tabIndex: 0 });
  const node = h(
    "section",
    { id: "reader", tabIndex: -1 },
    title,
    h("div.toolbar", {}, prev, next, jumpForm, h("div.tabs", { role: "tablist" }, tabs), status),
    h("div.reader", {}, imageBox, h("div.side", {}, panel)),
  );
  let res = null;
  let page = firstPage;
  let tab = "text";
  let objectUrl = null;
  let imageAbort = null;
  let markdownNode = null;
  let job = null;
  let images = null; // { buffer, entries, manifest } of images.zip, once opened
  const imageUrls = [];

  const go = (n) => {
    if (!res) return;
    const target = Math.min(Math.max(1, n), res.page_count);
    location.hash = `${prefix}${target}`;
  };
  prev.addEventListener("click", () => go(page - 1));
  next.addEventListener("click", () => go(page + 1));
  jumpForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    go(Number(jump.value));
  });
  node.addEventListener("keydown", (ev) => {
    if (ev.target instanceof HTMLInputElement) return;
    if (ev.key === "ArrowRight" || ev.key === "PageDown") go(page + 1);
    else if (ev.key === "ArrowLeft" || ev.key === "PageUp") go(page - 1);
    else return;
    ev.preventDefault();
  });
  for (const button of tabs) {
    button.addEventListener("click", () => {
      tab = button.id.slice(4);
      for (const b of tabs) b.setAttribute("aria-selected", String(b === button));
      showSide();
    });
  }

  function showSide() {
    if (!res) return;
    if (tab === "markdown") {
      const part = res.markdown ? pageMarkdown(res, page) : null;
      if (part !== null) {
        const node = h("div.markdown", { id: "markdown", dataset: { page: String(page) } });
        if (part.trim()) renderMarkdown(node, part);
        else node.append(h("p.detail", {}, "No Markdown on this page."));
        panel.replaceChildren(h("p.detail", {}, `The Markdown of page ${page}:`), node);
        return;
      }
      // No Markdown, or a result that does not say where its pages are (stored before it did).
      if (!markdownNode) {
        markdownNode = h("div.markdown", { id: "markdown" });
        if (res.markdown) renderMarkdown(markdownNode, res.markdown);
        else markdownNode.append(h("p.detail", {}, "No Markdown: the job did not ask for the markdown output."));
      }
      panel.replaceChildren(h("p.detail", {}, "The Markdown of the whole document:"), markdownNode);
      return;
    }
    if (tab === "images") {
      showImages(page);
      return;
    }
    if (tab === "tables") {
      const tables = (res.tables || []).filter((t) => t.page === page);
      panel.replaceChildren(
        ...(tables.length
          ? tables.map((t) =>
              h("table.tables", {}, h("caption", {}, String(t.name || "")), h("tbody", {}, (t.rows || []).map((r) => h("tr", {}, r.map((c) => h("td", {}, c ?? "")))))),
            )
          : [h("p.detail", {}, res.tables ? "No tables on this page." : "Tables were not extracted (the tables output).")]),
      );
      return;
    }
    const text = res.pages.find((p) => p.number === page);
    panel.replaceChildren(text ? h("pre", { id: "page-text" }, text.text) : h("p.detail", {}, "This page was not extracted (see the job's pages option)."));
  }

  function forgetImageUrls() {
    for (const url of imageUrls.splice(0)) URL.revokeObjectURL(url);
  }

  async function openImages(art) {
    if (!images) {
      const resp = await api(`/v1/jobs/${encodeURIComponent(jobId)}/artifacts/${art.name}`, { raw: true });
      const buffer = await resp.arrayBuffer();
      const found = entries(buffer);
      const manifest = JSON.parse(new TextDecoder().decode(await read(buffer, found.get("manifest.json"))));
      images = { buffer, entries: found, manifest };
    }
    return images;
  }

  async function showImages(n) {
    const art = (job?.result?.artifacts || []).find((a) => a.name === "images.zip");
    if (!art) {
      panel.replaceChildren(h("p.detail", {}, "Embedded images were not extracted (the images output)."));
      return;
    }
    if (art.size > MAX_IMAGES_ZIP) {
      panel.replaceChildren(h("p.detail", {}, "The images archive is large: download it from the job's details."));
      return;
    }
    panel.replaceChildren(h("p.detail", {}, "opening the images…"));
    try {
      const zip = await openImages(art);
      if (n !== page || tab !== "images") return;
      forgetImageUrls();
      const figures = [];
      for (const item of zip.manifest.images || []) {
        if (!(item.pages || []).includes(n)) continue;
        const type = SHOWN_TYPES[item.format];
        const entry = zip.entries.get(String(item.name));
        const caption = h("figcaption.detail", {}, `${item.name} · ${item.width}×${item.height} ${item.format}`);
        if (!type || !entry) {
          figures.push(h("figure", {}, caption));
          continue;
        }
        const url = URL.createObjectURL(new Blob([await read(zip.buffer, entry)], { type }));
        imageUrls.push(url);
        figures.push(h("figure", {}, h("img.embedded", { src: url, alt: `embedded image ${item.name}` }), caption));
      }
      panel.replaceChildren(...(figures.length ? figures : [h("p.detail", {}, "No embedded images on this page.")]));
    } catch (err) {
      panel.replaceChildren(h("p.error", {}, `The images could not be opened: ${describeError(err)}`));
    }
  }

  async function showImage() {
    if (imageAbort) imageAbort.abort();
    imageAbort = new AbortController();
    const signal = imageAbort.signal;
    imageBox.replaceChildren(h("span.detail", {}, `rendering page ${page}…`));
    try {
      const url = await blobUrl(`/v1/jobs/${encodeURIComponent(jobId)}/pages/${page}/preview?width=${previewWidth(imageBox)}`, signal);
      if (signal.aborted) return URL.revokeObjectURL(url);
      if (objectUrl) URL.revokeObjectURL(objectUrl);
      objectUrl = url;
      image.src = url;
      image.alt = `Page ${page} of the document`;
      image.dataset.page = String(page);
      imageBox.replaceChildren(image);
    } catch (err) {
      if (!signal.aborted) imageBox.replaceChildren(h("p.error", {}, `No image of page ${page}: ${describeError(err)}`));
    }
  }

  function show(n) {
    page = Math.min(Math.max(1, n), res.page_count);
    jump.value = String(page);
    prev.disabled = page <= 1;
    next.disabled = page >= res.page_count;
    status.textContent = `page ${page} of ${res.page_count}`;
    node.dataset.page = String(page);
    showSide();
    showImage();
  }

  async function start() {
    try {
      const [j, r] = await Promise.all([api(`/v1/jobs/${encodeURIComponent(jobId)}`), result(jobId)]);
      res = r;
      job = j;
      title.textContent = job.filename || job.job_id;
      of.textContent = `of ${res.page_count}`;
      jump.max = String(res.page_count);
      show(firstPage);
    } catch (err) {
      panel.replaceChildren(h("p.error", {}, describeError(err)));
    }
  }
  start();

  return {
    node,
    focus: () => node.focus(),
    handles: (hash) => {
      if (!hash.startsWith(prefix) || !res) return false;
      show(Number(hash.slice(prefix.length)) || 1);
      return true;
    },
    close: () => {
      if (imageAbort) imageAbort.abort();
      if (objectUrl) URL.revokeObjectURL(objectUrl);
      forgetImageUrls();
    },
  };
}

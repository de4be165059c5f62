// The service's API from the browser: the key (this tab's session only), fetch with the
// Bearer header, uploads with progress, and Server-Sent Events read through fetch (an
// EventSource cannot send an Authorization header, and a key in a URL ends up in logs).

const KEY = "pdfrelay.key";

export class ApiError extends Error {
  constructor(status, code, message, retryAfter) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

export function getKey() {
  return sessionStorage.getItem(KEY) || "";
}

export function setKey(key) {
  if (key) sessionStorage.setItem(KEY, key);
  else sessionStorage.removeItem(KEY);
}

/** Called with an ApiError 401: the page asks for a key (app.js sets it). */
export const hooks = { unauthorized: () => {} };

function headers(extra = {}) {
  const key = getKey();
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

function retryAfter(value) {
  const seconds = Number.parseInt(value || "", 10);
  return Number.isFinite(seconds) && seconds >= 0 ? seconds : null;
}

async function failure(resp) {
  let code = `HTTP_${resp.status}`;
  let message = resp.statusText || "request failed";
  try {
    const body = await resp.json();
    if (body && body.error) {
      code = String(body.error.code || code);
      message = String(body.error.message || message);
    }
  } catch {
    // not our JSON error shape: keep the status line
  }
  const err = new ApiError(resp.status, code, message, retryAfter(resp.headers.get("Retry-After")));
  if (resp.status === 401) hooks.unauthorized(err);
  return err;
}

/** fetch() a path of the API; JSON back (or the Response when `raw`). Throws ApiError. */
export async function api(path, { method = "GET", body, raw = false, signal } = {}) {
  const init = { method, headers: headers(), signal, cache: "no-store" };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  const resp = await fetch(path, init);
  if (!resp.ok) throw await failure(resp);
  return raw ? resp : resp.json();
}

/** An object URL for a binary answer (page preview, artifact download); revoke it after use. */
export async function blobUrl(path, signal) {
  const resp = await api(path, { raw: true, signal });
  return URL.createObjectURL(await resp.blob());
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** POST one form (multipart) with upload progress; 429/503 are retried as Retry-After says. */
export async function submitForm(form, onProgress, onWait, attempts = 5) {
  for (let attempt = 1; ; attempt++) {
    try {
      return await postForm(form, onProgress);
    } catch (err) {
      const retry = err instanceof ApiError && (err.status === 429 || err.status === 503);
      if (!retry || attempt >= attempts) throw err;
      const wait = err.retryAfter ?? 5;
      onWait(err, wait);
      await sleep(wait * 1000);
    }
  }
}

function postForm(form, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/v1/jobs");
    for (const [name, value] of Object.entries(headers())) xhr.setRequestHeader(name, value);
    xhr.upload.addEventListener("progress", (ev) => {
      if (ev.lengthComputable) onProgress(ev.loaded / ev.total);
    });
    xhr.addEventListener("load", () => {
      let body = null;
      try {
        body = JSON.parse(xhr.responseText);
      } catch {
        body = null;
      }
      if (xhr.status >= 200 && xhr.status < 300 && body) {
        resolve(body);
        return;
      }
      const error = (body && body.error) || {};
      const err = new ApiError(
        xhr.status,
        String(error.code || `HTTP_${xhr.status}`),
        String(error.message || xhr.statusText || "upload failed"),
        retryAfter(xhr.getResponseHeader("Retry-After")),
      );
      if (xhr.status === 401) hooks.unauthorized(err);
      reject(err);
    });
    xhr.addEventListener("error", () => reject(new ApiError(0, "NETWORK", "the service is unreachable", 5)));
    xhr.send(form);
  });
}

/**
 * One Server-Sent Events stream (GET /v1/events) for every job this page follows: a browser
 * allows about six HTTP/1.1 connections per host, so a stream per card would stall the rest of
 * the page. It opens with the first job watched and closes with the last; it reconnects after
 * the server's `retry:`, and then the server sends the followed jobs' states again.
 */
class JobStream {
  constructor() {
    this.watchers = new Map(); // job id -> Set of onEvent(type, data)
    this.abort = null;
    this.ready = null; // resolves once the current connection is subscribed
  }

  /**
   * `onEvent(type, data)` for each event of `jobId`; resolves, with the function that stops
   * it, once the stream is subscribed (a state read after that misses no change), or after
   * 5 s without a stream.
   */
  async watch(jobId, onEvent) {
    let set = this.watchers.get(jobId);
    if (!set) this.watchers.set(jobId, (set = new Set()));
    set.add(onEvent);
    if (!this.abort) this.run();
    // Not forever while the service is away: the reconnect sends the job's state anyway.
    await Promise.race([this.ready, sleep(5000)]);
    return () => {
      set.delete(onEvent);
      if (!set.size) this.watchers.delete(jobId);
      if (!this.watchers.size) this.stop();
    };
  }

  stop() {
    if (this.abort) this.abort.abort();
    this.abort = null;
  }

  run() {
    const abort = (this.abort = new AbortController());
    let opened;
    this.ready = new Promise((resolve) => (opened = resolve));
    (async () => {
      let delay = 3000;
      while (!abort.signal.aborted) {
        try {
          const ids = [...this.watchers.keys()].slice(-200).join(",");
          const resp = await api(`/v1/events?jobs=${encodeURIComponent(ids)}`, { raw: true, signal: abort.signal });
          opened(); // the server subscribes before it answers
          await readEvents(resp, (event) => {
            if (event.retry) delay = event.retry;
            if (!event.type || !event.data || typeof event.data.job_id !== "string") return;
            for (const onEvent of [...(this.watchers.get(event.data.job_id) || [])]) onEvent(event.type, event.data);
          });
        } catch {
          // ended or refused: try again after `delay`, as an EventSource would
        }
        if (abort.signal.aborted) return; // a new run() owns `ready` now
        this.ready = new Promise((resolve) => (opened = resolve));
        await sleep(delay);
      }
    })();
  }
}

export const jobStream = new JobStream();

async function readEvents(resp, onEvent) {
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      onEvent(parseEvent(block));
    }
  }
}

function parseEvent(block) {
  const event = {};
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "event") event.type = value;
    else if (field === "data") data.push(value);
    else if (field === "retry" && /^\d+$/.test(value)) event.retry = Number(value);
  }
  if (data.length) {
    try {
      event.data = JSON.parse(data.join("\n"));
    } catch {
      event.data = undefined;
    }
  }
  return event;
}

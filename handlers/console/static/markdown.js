// Markdown (as pdfrelay writes it: headings, paragraphs, lists, tables, code, links) to DOM
// nodes. It never parses HTML: every piece of text becomes a text node, so markup inside a PDF
// stays text. Links are kept only for http: and https: targets; images are not loaded.

const SAFE_SCHEMES = new Set(["http:", "https:"]);

export function safeHref(target) {
  try {
    const url = new URL(target, "https://invalid.example/");
    if (!SAFE_SCHEMES.has(url.protocol) || url.host === "invalid.example") return null;
    return url.href;
  } catch {
    return null;
  }
}

function el(tag, ...children) {
  const node = document.createElement(tag);
  for (const child of children) node.append(child);
  return node;
}

const INLINE = /\\([!-/:-@[-`{-~])|(`+)([^`]|[^`][\s\S]*?[^`])\2|!\[([^\]]*)\]\(([^)\s]*)[^)]*\)|\[((?:\\.|[^\]\\])+)\]\(([^)\s]*)[^)]*\)|\*\*([^*]+)\*\*|__([^_]+)__|\*([^*\s][^*]*)\*|_([^_\s][^_]*)_/g;

/** The inline content of one block, as nodes. */
export function inline(text) {
  const out = [];
  let last = 0;
  for (const m of text.matchAll(INLINE)) {
    if (m.index > last) out.push(document.createTextNode(text.slice(last, m.index)));
    last = m.index + m[0].length;
    if (m[1]) out.push(document.createTextNode(m[1])); // a backslash escape: the character
    else if (m[2]) out.push(el("code", m[3]));
    else if (m[4] !== undefined || m[5] !== undefined) out.push(el("span", `[image: ${m[4] || m[5]}]`));
    else if (m[6] !== undefined) {
      const href = safeHref(m[7]);
      if (href) {
        const a = el("a", ...inline(m[6]));
        a.href = href;
        a.rel = "noopener noreferrer nofollow";
        a.target = "_blank";
        out.push(a);
      } else out.push(...inline(m[6]));
    } else if (m[8] || m[9]) out.push(el("strong", ...inline(m[8] || m[9])));
    else out.push(el("em", ...inline(m[10] || m[11])));
  }
  if (last < text.length) out.push(document.createTextNode(text.slice(last)));
  return out;
}

function cells(line) {
  let row = line.trim();
  if (row.startsWith("|")) row = row.slice(1);
  if (row.endsWith("|") && !row.endsWith("\\|")) row = row.slice(0, -1);
  return row.split(/(?<!\\)\|/).map((c) => c.trim().replace(/\\\|/g, "|"));
}

const TABLE_RULE = /^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$/;

/** Split Markdown into top-level blocks (each a list of lines and a kind). */
export function blocks(source) {
  const lines = source.replace(/\r\n?/g, "\n").split("\n");
  const out = [];
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (!line.trim()) {
      i++;
      continue;
    }
    const fence = line.match(/^\s*(```|~~~)/);
    if (fence) {
      const body = [];
      i++;
      while (i < lines.length && !lines[i].trim().startsWith(fence[1])) body.push(lines[i++]);
      i++;
      out.push({ kind: "code", lines: body });
      continue;
    }
    if (/^#{1,6}\s/.test(line)) {
      out.push({ kind: "heading", lines: [line] });
      i++;
      continue;
    }
    if (/^\s*([-*_])(\s*\1){2,}\s*$/.test(line)) {
      out.push({ kind: "hr", lines: [] });
      i++;
      continue;
    }
    if (line.includes("|") && i + 1 < lines.length && TABLE_RULE.test(lines[i + 1])) {
      const rows = [line];
      i += 2;
      while (i < lines.length && lines[i].includes("|") && lines[i].trim()) rows.push(lines[i++]);
      out.push({ kind: "table", lines: rows });
      continue;
    }
    const kind = /^\s*[-*+]\s/.test(line) ? "ul" : /^\s*\d+[.)]\s/.test(line) ? "ol" : /^\s*>/.test(line) ? "quote" : "p";
    const body = [line];
    i++;
    while (i < lines.length && lines[i].trim() && !/^(#{1,6}\s|\s*```|\s*~~~)/.test(lines[i])) {
      if (kind === "p" && /^\s*([-*+]|\d+[.)])\s/.test(lines[i])) break;
      body.push(lines[i++]);
    }
    out.push({ kind, lines: body });
  }
  return out;
}

/** One block as a DOM node. */
export function renderBlock(block) {
  switch (block.kind) {
    case "code":
      return el("pre", el("code", block.lines.join("\n")));
    case "heading": {
      const m = block.lines[0].match(/^(#{1,6})\s+(.*?)\s*#*\s*$/);
      return el(`h${Math.min(6, m[1].length + 1)}`, ...inline(m[2]));
    }
    case "hr":
      return el("hr");
    case "table": {
      const [head, ...rows] = block.lines;
      const table = el("table", el("thead", el("tr", ...cells(head).map((c) => el("th", ...inline(c))))));
      table.append(el("tbody", ...rows.map((r) => el("tr", ...cells(r).map((c) => el("td", ...inline(c)))))));
      return table;
    }
    case "ul":
    case "ol": {
      const list = el(block.kind);
      for (const line of block.lines) {
        const m = line.match(/^\s*(?:[-*+]|\d+[.)])\s+(.*)$/);
        if (m) list.append(el("li", ...inline(m[1])));
        else if (list.lastChild) list.lastChild.append(" ", ...inline(line.trim()));
      }
      return list;
    }
    case "quote":
      return el("blockquote", ...inline(block.lines.map((l) => l.replace(/^\s*>\s?/, "")).join(" ")));
    default:
      return el("p", ...inline(block.lines.join(" ")));
  }
}

/** Render `source` into `target`, `limit` blocks at a time (a "more" button for the rest). */
export function renderMarkdown(target, source, limit = 400) {
  const all = blocks(source);
  let shown = 0;
  const more = el("button", "Show more");
  more.type = "button";
  more.className = "more";
  const step = () => {
    const frag = document.createDocumentFragment();
    for (const block of all.slice(shown, shown + limit)) frag.append(renderBlock(block));
    shown += limit;
    more.before(frag);
    if (shown >= all.length) more.remove();
  };
  more.addEventListener("click", step);
  target.replaceChildren(more);
  step();
}

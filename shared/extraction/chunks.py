"""The `chunks` output (`chunks.jsonl`): heading-aware pieces of `document.md` for retrieval.

Made from the `blocks` of `document.json` (shared/extraction/document.py), whose `md` spans say
where each block's Markdown is. Rules, in order:

* a chunk is one contiguous span of `document.md`, and its `text` is exactly that span;
* a heading starts a new chunk: chunks stay inside one section, except that a section too small
  to stand alone (under an eighth of the budget) is joined to the subsection that follows it;
* blocks are packed whole while they fit the budget; a block larger than the budget is cut at
  sentence ends, else at spaces, only as a last resort inside a word;
* a table is a chunk of its own (with the heading alone before it, and a caption after it), and
  so is a table going on over a page break (the next page's table right after it, with as many
  columns; cut there, the continuation carries the first part's header rows); a table larger
  than the budget is cut between rows, and the pieces after the first carry the table's header
  rows in `table_header`;
* `overlap` repeats the end of the previous chunk of the same section (from a word start);
* a figure, which has no Markdown, rides with the chunk of its caption (before it), else with
  that of the block before it in its section (after it), else with the block after it: its id
  and box are among that chunk's parts.

Token budgets use `approx_tokens`, a counter that needs no network and no vocabulary file:
every run of up to four letters or digits is one token, every CJK character and every other
symbol one token. On English prose it gives a little more than the cl100k/o200k BPE tokenizers
(about 1.1 to 1.3 times their count), so a chunk within `max_tokens` by this count is within it
for those tokenizers as well; a model's own tokenizer would need its vocabulary, which a worker
cannot download and the image does not ship.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.models import ChunkOptions

_TOKEN = re.compile(
    r"[\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff\u3000-\u303f]"
    r"|[^\W\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff]+"
    r"|[^\w\s]"
)
_SENTENCE = re.compile(r"(?<=[.!?;:\u3002\uff01\uff1f\u061f\u06d4])[\"')\]\u201d\u2019]*\s+")
_SPACE = re.compile(r"\s+")
_TABLE_RULE = re.compile(r"^\|?\s*:?-{3,}")

TINY_SHARE = 8
"""A section under budget / TINY_SHARE is joined to the subsection after it."""


def approx_tokens(text: str) -> int:
    """Approximate tokens of `text` (see the module docstring)."""
    count = 0
    for match in _TOKEN.finditer(text):
        n = match.end() - match.start()
        count += 1 if n <= 4 else (n + 3) >> 2
    return count


@dataclass(slots=True)
class _Atom:
    start: int
    end: int
    block: dict[str, Any]
    size: int
    table: bool = False
    header: str | None = None
    """Header rows of the table this row group belongs to (when not its first piece)."""
    continues: bool = False
    """The first piece of a table that goes on from the previous page's table."""


@dataclass(slots=True)
class _Chunk:
    start: int
    end: int
    size: int
    atoms: list[_Atom] = field(default_factory=list)
    table: bool = False
    heading_only: bool = False


def _path(block: dict[str, Any]) -> list[str]:
    section: list[str] = block["section"]
    return [*section, block["text"]] if block["kind"] == "heading" else section


class _Chunker:
    def __init__(self, markdown: str, options: ChunkOptions) -> None:
        self.md = markdown
        self.tokens = options.max_tokens is not None
        self.budget = options.budget
        self.overlap = options.overlap
        self.out: list[dict[str, Any]] = []
        self.continued: dict[str, str] = {}
        """Tables going on from the previous page's (block id: that table's header rows)."""
        self.riders: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {}
        """Figures going with a block's chunk (block id: figures before it, after it)."""

    def size(self, start: int, end: int) -> int:
        return approx_tokens(self.md[start:end]) if self.tokens else end - start

    # --- cutting what is larger than the budget

    def _char_limit(self, start: int, end: int, size: int) -> int:
        if not self.tokens:
            return self.budget
        return max(1, int(self.budget * (end - start) / max(size, 1) * 0.9))

    def _cut(self, start: int, end: int, size: int) -> list[tuple[int, int]]:
        """Spans of at most the budget, cut at sentence ends, else spaces, else anywhere."""
        md = self.md
        limit = self._char_limit(start, end, size)
        pieces: list[tuple[int, int]] = []
        pos = start
        while pos < end:
            stop = min(end, pos + limit)
            while True:
                if stop < end:
                    window = md[pos:stop]
                    cut = 0
                    for m in _SENTENCE.finditer(window):
                        cut = m.end()
                    if cut < len(window) // 4:
                        cut = 0
                        for m in _SPACE.finditer(window):
                            cut = m.end()
                    stop = pos + cut if cut > 0 else stop
                if not self.tokens or stop - pos <= 1 or self.size(pos, stop) <= self.budget:
                    break
                stop = pos + max(1, (stop - pos) * 3 // 4)
            piece_end = stop
            while piece_end > pos and md[piece_end - 1].isspace():
                piece_end -= 1
            pieces.append((pos, max(piece_end, pos + 1)))
            pos = stop
            while pos < end and md[pos].isspace():
                pos += 1
        return pieces

    def atoms(self, block: dict[str, Any], continues: str | None = None) -> list[_Atom]:
        """`continues`: the header rows of the previous page's table this one goes on from."""
        start, end = block["md"]
        size = approx_tokens(self.md[start:end]) if self.tokens else end - start
        table = block["kind"] == "table"
        if size <= self.budget:
            atoms = [_Atom(start, end, block, size, table)]
        elif not table:
            return [_Atom(s, e, block, self.size(s, e)) for s, e in self._cut(start, end, size)]
        else:
            atoms = self._table_atoms(block, start, end)
        if continues is not None:
            atoms[0].header = continues
            atoms[0].continues = True
        return atoms

    def _table_atoms(self, block: dict[str, Any], start: int, end: int) -> list[_Atom]:
        """A large table in row groups within the budget (its header rows counted)."""
        md = self.md
        rows: list[tuple[int, int]] = []
        pos = start
        for line in md[start:end].split("\n"):
            rows.append((pos, pos + len(line)))
            pos += len(line) + 1
        head = 2 if len(rows) > 2 and _TABLE_RULE.match(md[rows[1][0] : rows[1][1]]) else 0
        header = md[rows[0][0] : rows[head - 1][1]] if head else None
        head_size = self.size(rows[0][0], rows[head - 1][1]) if head else 0
        atoms: list[_Atom] = []

        def emit(first: int, end: int) -> None:
            atoms.append(
                _Atom(first, end, block, self.size(first, end), True, header if atoms else None)
            )

        group_start = start
        group_end = rows[head - 1][1] if head else start
        for row_start, row_end in rows[head:]:
            with_header = head_size if atoms else 0
            if group_end > group_start and (
                self.size(group_start, row_end) + with_header > self.budget
            ):
                emit(group_start, group_end)
                group_start = row_start
            group_end = row_end
        if group_end > group_start:
            emit(group_start, group_end)
        for atom in atoms:
            if atom.size > self.budget:  # one row larger than the budget: cut it like text
                pieces = self._cut(atom.start, atom.end, atom.size)
                return [
                    _Atom(s, e, block, self.size(s, e), True, header if i else None)
                    for i, (s, e) in enumerate(pieces)
                ]
        return atoms

    # --- packing

    def pack(self, groups: Sequence[tuple[int, list[dict[str, Any]]]]) -> None:
        carry: _Chunk | None = None
        for n, (level, blocks) in enumerate(groups):
            chunks: list[_Chunk] = []
            cur = carry
            carry = None
            continued = self.continued
            for block in blocks:
                goes_on = continued.get(block["id"]) if continued else None
                for atom in self.atoms(block, goes_on):
                    cur = self._add(chunks, cur, atom)
            if cur is not None:
                chunks.append(cur)
            nxt_level = groups[n + 1][0] if n + 1 < len(groups) else 0
            if (
                len(chunks) == 1
                and not chunks[0].table
                and chunks[0].size * TINY_SHARE < self.budget
                and nxt_level > level
            ):
                carry = chunks.pop()
            self._emit(chunks)
        if carry is not None:
            self._emit([carry])

    def _add(self, chunks: list[_Chunk], cur: _Chunk | None, atom: _Atom) -> _Chunk:
        if cur is not None:
            # the chunk's size with the atom: tokens add up, characters run from its start
            joined = cur.size + atom.size if self.tokens else atom.end - cur.start
            fits = joined <= self.budget
            if atom.table:
                same_table = cur.table and cur.atoms[-1].block is atom.block
                goes_on = cur.table and atom.continues and cur.atoms[-1].block["kind"] == "table"
                # a table's first piece may take the heading alone before it
                if (cur.heading_only and fits) or (
                    fits and ((same_table and atom.header is None) or goes_on)
                ):
                    cur.end = atom.end
                    cur.size = joined
                    cur.atoms.append(atom)
                    cur.table = True
                    cur.heading_only = False
                    return cur
            elif cur.table and fits and atom.block["kind"] == "caption":
                cur.end = atom.end  # a table's caption goes with it
                cur.size = joined
                cur.atoms.append(atom)
                return cur
            elif not cur.table and fits:
                cur.end = atom.end
                cur.size = joined
                cur.atoms.append(atom)
                cur.heading_only = False
                return cur
            chunks.append(cur)
        return _Chunk(
            atom.start,
            atom.end,
            atom.size,
            [atom],
            atom.table,
            atom.block["kind"] == "heading",
        )

    def _overlap_start(self, prev: _Chunk, chunk: _Chunk) -> int:
        if not self.overlap or prev.table or chunk.table:
            return chunk.start
        chars = self.overlap * 4 if self.tokens else self.overlap
        start = max(prev.start, chunk.start - chars)
        md = self.md
        # from the start of a word, and not from the gap between the two
        while start < chunk.start and not (start == prev.start or md[start - 1].isspace()):
            start += 1
        while start < chunk.start and md[start].isspace():
            start += 1
        if self.tokens:
            while start < chunk.start and self.size(start, chunk.start) > self.overlap:
                nxt = md.find(" ", start + 1, chunk.start)
                start = chunk.start if nxt < 0 else nxt + 1
        return start

    def _emit(self, chunks: Sequence[_Chunk]) -> None:
        md = self.md
        prev: _Chunk | None = None
        for chunk in chunks:
            start = chunk.start if prev is None else self._overlap_start(prev, chunk)
            prev = chunk
            parts: list[dict[str, Any]] = []
            ids: list[str] = []
            pages: list[int] = []
            riders = self.riders
            for atom in chunk.atoms:
                block = atom.block
                if ids and (ids[-1] == block["id"] or block["id"] in ids):
                    continue
                ride = riders.get(block["id"]) if riders else None
                for part in (*ride[0], block, *ride[1]) if ride else (block,):
                    ids.append(part["id"])
                    parts.append({"block": part["id"], "page": part["page"], "bbox": part["bbox"]})
                    if part["page"] not in pages:
                        pages.append(part["page"])
            first = chunk.atoms[0]
            header = first.header if chunk.table else None
            text = md[start : chunk.end]
            self.out.append(
                {
                    "id": f"c{len(self.out)}",
                    "kind": "table" if chunk.table else "text",
                    "text": text,
                    "heading_path": _path(first.block),
                    "pages": sorted(pages),
                    "parts": parts,
                    "block_ids": ids,
                    "span": [start, chunk.end],
                    "overlap": chunk.start - start,
                    "chars": len(text),
                    "tokens": approx_tokens(text) if self.tokens else None,
                    "table_header": header,
                }
            )


def build_chunks(
    markdown: str, blocks: Sequence[dict[str, Any]], options: ChunkOptions
) -> list[dict[str, Any]]:
    """The chunks of a document: `blocks` as `document.json` has them, `markdown` its
    `document.md`."""
    groups: list[tuple[int, list[dict[str, Any]]]] = [(0, [])]
    riders: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {}
    waiting: list[dict[str, Any]] = []
    """Figures that go with the next block (none before them in their section)."""
    for block in blocks:
        span = block["md"]
        if block["kind"] == "figure":
            if block.get("caption"):
                riders.setdefault(block["caption"], ([], []))[0].append(block)
            elif groups[-1][1] and not waiting:
                riders.setdefault(groups[-1][1][-1]["id"], ([], []))[1].append(block)
            else:
                waiting.append(block)
            continue
        if span is None or span[1] <= span[0]:
            continue
        if waiting:
            riders.setdefault(block["id"], ([], []))[0].extend(waiting)
            waiting = []
        if block["kind"] == "heading":
            groups.append((block["level"], [block]))
        else:
            groups[-1][1].append(block)
    if waiting:
        last = next((b for g in reversed(groups) for b in reversed(g[1])), None)
        if last is not None:
            riders.setdefault(last["id"], ([], []))[1].extend(waiting)
    chunker = _Chunker(markdown, options)
    chunker.continued = _continued_tables(blocks)
    chunker.riders = riders
    chunker.pack([g for g in groups if g[1]])
    return chunker.out


def _continued_tables(blocks: Sequence[dict[str, Any]]) -> dict[str, str]:
    """Tables that go on from a table at the end of the previous page: nothing but page
    furniture between them, and as many columns."""
    found: dict[str, str] = {}
    prev: dict[str, Any] | None = None
    for block in blocks:
        if block["md"] is None:
            continue  # page headers and footers
        if (
            prev is not None
            and block["kind"] == "table"
            and prev["kind"] == "table"
            and block["page"] == prev["page"] + 1
        ):
            head = prev["text"].split("\n", 2)
            first = block["text"].split("\n", 1)[0]
            if head[0].count("|") == first.count("|"):
                rule = len(head) > 1 and _TABLE_RULE.match(head[1])
                own = "\n".join(head[:2]) if rule else head[0]
                found[block["id"]] = found.get(prev["id"], own)  # the first part's header
        prev = block
    return found

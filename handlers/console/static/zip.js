// Just enough of ZIP to show a job's embedded images (images.zip stores them uncompressed;
// its manifest is deflated): the entries by name, as bytes. No ZIP64 (a larger archive is
// downloaded instead).

const EOCD = 0x06054b50;
const CENTRAL = 0x02014b50;
const LOCAL = 0x04034b50;

/** Map of entry name -> { method, offset, size } of the archive in `buffer` (an ArrayBuffer). */
export function entries(buffer) {
  const view = new DataView(buffer);
  let end = -1;
  for (let i = buffer.byteLength - 22; i >= Math.max(0, buffer.byteLength - 65557); i--) {
    if (view.getUint32(i, true) === EOCD) {
      end = i;
      break;
    }
  }
  if (end < 0) throw new Error("not a ZIP archive");
  const count = view.getUint16(end + 10, true);
  let at = view.getUint32(end + 16, true);
  if (at === 0xffffffff || count === 0xffff) throw new Error("a ZIP64 archive: download it instead");
  const names = new TextDecoder();
  const found = new Map();
  for (let n = 0; n < count; n++) {
    if (view.getUint32(at, true) !== CENTRAL) throw new Error("a damaged ZIP directory");
    const method = view.getUint16(at + 10, true);
    const size = view.getUint32(at + 20, true);
    const nameLength = view.getUint16(at + 28, true);
    const extra = view.getUint16(at + 30, true);
    const comment = view.getUint16(at + 32, true);
    const local = view.getUint32(at + 42, true);
    const name = names.decode(new Uint8Array(buffer, at + 46, nameLength));
    found.set(name, { method, local, size });
    at += 46 + nameLength + extra + comment;
  }
  return found;
}

/** The bytes of one entry (stored or deflated). */
export async function read(buffer, entry) {
  const view = new DataView(buffer);
  if (view.getUint32(entry.local, true) !== LOCAL) throw new Error("a damaged ZIP entry");
  const start = entry.local + 30 + view.getUint16(entry.local + 26, true) + view.getUint16(entry.local + 28, true);
  const data = new Uint8Array(buffer, start, entry.size);
  if (entry.method === 0) return data;
  if (entry.method !== 8) throw new Error("an unsupported ZIP compression");
  const stream = new Blob([data]).stream().pipeThrough(new DecompressionStream("deflate-raw"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

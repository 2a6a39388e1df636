// OPFS content-addressed shard store (worker side). Layout under the origin's OPFS root:
//
//   doppler/shards/<sha256>.bin    verified shards only: a file appears here by a rename,
//                                  after its whole-content SHA-256 matched its name
//   doppler/partial/<sha256>.bin   a download in progress: its first `verified` blocks and
//   doppler/partial/<sha256>.json  the blocks listed in `extra` are verified ({size,
//                                  blockSize, verified, extra}); the rest is junk
//   doppler/models/<modelId>.json  which shards a model uses, its size and last use (LRU)
//
// Writes go through sync access handles (the fast path in a worker). A handle is exclusive:
// a dying worker (page reload) can hold one for a moment, so opening retries before giving
// up, and a shard whose partial file stays locked is downloaded into RAM instead.

const ROOT = 'doppler';
const HANDLE_RETRIES = [50, 100, 200, 400, 800, 1600];  // ms; about 3 s in all

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const encoder = new TextEncoder();
const decoder = new TextDecoder();

async function openSyncHandle(fileHandle) {
  for (const wait of [...HANDLE_RETRIES, null]) {
    try {
      return await fileHandle.createSyncAccessHandle();
    } catch (err) {
      if (err?.name !== 'NoModificationAllowedError' || wait === null) throw err;
      await sleep(wait);
    }
  }
  return null;  // unreachable: the last attempt throws
}

async function fileOrNull(dir, name) {
  try {
    return await dir.getFileHandle(name);
  } catch (err) {
    if (err?.name === 'NotFoundError' || err?.name === 'TypeMismatchError') return null;
    throw err;
  }
}

async function removeIfPresent(dir, name) {
  try {
    await dir.removeEntry(name);
    return true;
  } catch (err) {
    if (err?.name === 'NotFoundError') return false;
    throw err;
  }
}

function writeJson(handle, value) {
  const bytes = encoder.encode(JSON.stringify(value));
  handle.truncate(0);
  handle.write(bytes, { at: 0 });
  handle.flush();
}

function readJson(handle) {
  const bytes = new Uint8Array(handle.getSize());
  handle.read(bytes, { at: 0 });
  return JSON.parse(decoder.decode(bytes));
}

// What a sidecar says is verified: a prefix of `verified` blocks, plus `extra`, half-open
// runs [from, to) of blocks beyond it (written by range fetches, absent in older sidecars).
// Nothing is claimed if the sidecar is absent, unreadable or of another geometry.
function claimedBlocks(sidecar, size, blockSize) {
  const none = { verified: 0, extra: new Set() };
  try {
    const note = sidecar.getSize() ? readJson(sidecar) : null;
    if (!note || note.size !== size || note.blockSize !== blockSize) return none;
    const count = Math.ceil(size / blockSize);
    const verified = Number.isInteger(note.verified) ? Math.min(Math.max(note.verified, 0), count) : 0;
    const extra = new Set();
    for (const [from, to] of Array.isArray(note.extra) ? note.extra : []) {
      for (let block = Math.max(from, verified); block < Math.min(to, count); block++) extra.add(block);
    }
    return { verified, extra };
  } catch {
    return none;
  }
}

// Sorted block numbers as half-open runs: [3, 4, 5, 9] -> [[3, 6], [9, 10]].
function runs(blocks) {
  const out = [];
  for (const block of [...blocks].sort((a, b) => a - b)) {
    const last = out[out.length - 1];
    if (last && last[1] === block) last[1] += 1;
    else out.push([block, block + 1]);
  }
  return out;
}

// A download in progress: the partial file plus its sidecar, both open exclusively. A full
// download grows the verified prefix; a range fetch may verify any block (the `extra` set),
// and a block that joins the prefix leaves the set.
export class Partial {
  constructor(store, name, size, blockSize, data, sidecar, verified, extra = new Set()) {
    Object.assign(this, { store, name, size, blockSize, data, sidecar, verified, extra });
    this.count = Math.ceil(size / blockSize);
  }

  has(block) { return block < this.verified || this.extra.has(block); }

  get complete() { return this.verified >= this.count; }

  // Verified blocks, prefix and set together.
  get verifiedBlocks() { return this.verified + this.extra.size; }

  note() {
    const note = { size: this.size, blockSize: this.blockSize, verified: this.verified };
    if (this.extra.size) note.extra = runs(this.extra);
    return note;
  }

  save() { writeJson(this.sidecar, this.note()); }

  // Copy the prefix the sidecar says is verified into `buffer`; returns its block count.
  // The caller re-hashes them (a torn write must not survive a crash).
  readVerified(buffer) {
    const bytes = Math.min(this.verified * this.blockSize, this.size);
    if (bytes > 0) this.data.read(buffer.subarray(0, bytes), { at: 0 });
    return this.verified;
  }

  // Copy block `block`'s stored bytes into `into` (the caller re-hashes them).
  readBlock(block, into) {
    this.data.read(into, { at: block * this.blockSize });
  }

  // Persist block `block` (already verified by the caller) and record it in the sidecar.
  writeBlock(block, bytes) {
    this.data.write(bytes, { at: block * this.blockSize });
    this.data.flush();
    if (block === this.verified) {
      this.verified += 1;
      while (this.extra.delete(this.verified)) this.verified += 1;
    } else if (block > this.verified) {
      this.extra.add(block);
    }
    this.save();
  }

  // Forget one block (it failed a re-check); blocks after it in the prefix join the set.
  forget(block) {
    if (block < this.verified) {
      for (let b = block + 1; b < this.verified; b++) this.extra.add(b);
      this.verified = block;
    }
    this.extra.delete(block);
    this.save();
  }

  // Forget the prefix from `block` on (it failed a re-check). Without set blocks the file is
  // cut there, as before; set blocks keep their bytes, so the file is not cut under them.
  rewind(block) {
    this.verified = Math.min(this.verified, block);
    if (this.extra.size === 0) this.data.truncate(this.verified * this.blockSize);
    this.save();
  }

  close() {
    if (this.store.held.get(this.name) === this) this.store.held.delete(this.name);
    for (const handle of [this.data, this.sidecar]) {
      try { handle.close(); } catch { /* already closed */ }
    }
  }

  // The whole shard is verified: make it visible under shards/ (a rename, not a copy).
  async commit() {
    this.data.flush();
    this.close();
    const file = await this.store.partial.getFileHandle(`${this.name}.bin`);
    await file.move(this.store.shards, `${this.name}.bin`);
    await removeIfPresent(this.store.partial, `${this.name}.json`);
  }

  async discard() {
    this.close();
    await this.store.removePartial(this.name);
  }
}

export class ShardStore {
  constructor(root, shards, partial, models) {
    Object.assign(this, { root, shards, partial, models });
    this.held = new Map();  // name -> Partial kept open between range fetches (see range.js)
  }

  // The store, or {store: null, reason} when this context has no usable OPFS.
  static async open() {
    try {
      if (!globalThis.navigator?.storage?.getDirectory) throw new Error('no navigator.storage.getDirectory');
      const top = await navigator.storage.getDirectory();
      const root = await top.getDirectoryHandle(ROOT, { create: true });
      const dirs = await Promise.all(['shards', 'partial', 'models'].map(
        (name) => root.getDirectoryHandle(name, { create: true })));
      const store = new ShardStore(root, ...dirs);
      await store.probe();
      return { store, reason: null };
    } catch (err) {
      return { store: null, reason: `${err?.name ?? 'Error'}: ${err?.message ?? err}` };
    }
  }

  // Sync access handles are what we write with; make sure this context really has them.
  async probe() {
    const file = await this.partial.getFileHandle('.probe', { create: true });
    const handle = await openSyncHandle(file);
    handle.close();
    await this.partial.removeEntry('.probe');
  }

  async size(name) {
    const handle = await fileOrNull(this.shards, `${name}.bin`);
    return handle ? (await handle.getFile()).size : null;
  }

  async has(name, size) {
    return (await this.size(name)) === size;
  }

  // A committed shard's bytes (async read: many readers, no exclusive handle needed).
  async read(name) {
    const handle = await this.shards.getFileHandle(`${name}.bin`);
    return new Uint8Array(await (await handle.getFile()).arrayBuffer());
  }

  // `length` bytes at `offset` of a committed shard (async read, no exclusive handle).
  async readSlice(name, offset, length) {
    const handle = await this.shards.getFileHandle(`${name}.bin`);
    const blob = (await handle.getFile()).slice(offset, offset + length);
    return new Uint8Array(await blob.arrayBuffer());
  }

  // Open (or start) the partial download of `name`; null when another context holds it.
  // A partial this context keeps open (`keep`: range fetches of a model in use) is reused.
  async openPartial(name, size, blockSize, { keep = false } = {}) {
    const open = this.held.get(name);
    if (open && open.size === size && open.blockSize === blockSize) return open;
    open?.close();
    const dataFile = await this.partial.getFileHandle(`${name}.bin`, { create: true });
    const sideFile = await this.partial.getFileHandle(`${name}.json`, { create: true });
    let data = null;
    let sidecar = null;
    try {
      data = await openSyncHandle(dataFile);
      sidecar = await openSyncHandle(sideFile);
    } catch (err) {
      data?.close();
      if (err?.name === 'NoModificationAllowedError') return null;
      throw err;
    }
    const partial = new Partial(this, name, size, blockSize, data, sidecar, 0);
    try {
      // Claims beyond the file's end are void (the file was cut or never grew that far).
      const stored = data.getSize() >= size ? partial.count : Math.floor(data.getSize() / blockSize);
      const claim = claimedBlocks(sidecar, size, blockSize);
      partial.verified = Math.min(claim.verified, stored);
      for (const block of claim.extra) if (block < stored) partial.extra.add(block);
      if (partial.verifiedBlocks === 0) partial.rewind(0);
    } catch (err) {
      partial.close();  // e.g. no space for the sidecar: leave no handle open
      throw err;
    }
    if (keep) this.held.set(name, partial);
    return partial;
  }

  // Remove a partial download; one still open elsewhere (a fetch being aborted, another
  // tab) is left for a later load to resume or clean.
  async removePartial(name) {
    for (const file of [`${name}.bin`, `${name}.json`]) {
      try {
        await removeIfPresent(this.partial, file);
      } catch (err) {
        if (err?.name !== 'NoModificationAllowedError') throw err;
      }
    }
  }

  // Bytes already verified in partial downloads, per shard name.
  async partialBytes() {
    const out = {};
    for await (const [entry, handle] of this.partial.entries()) {
      if (!entry.endsWith('.json')) continue;
      try {
        const note = JSON.parse(await (await handle.getFile()).text());
        const extra = (note.extra ?? []).reduce((sum, [from, to]) => sum + to - from, 0);
        out[entry.slice(0, -5)] = Math.min((note.verified + extra) * note.blockSize, note.size);
      } catch { /* ignore a sidecar being written */ }
    }
    return out;
  }

  // Every committed shard: {name: size}.
  async listShards() {
    const out = {};
    for await (const [entry, handle] of this.shards.entries()) {
      if (entry.endsWith('.bin')) out[entry.slice(0, -4)] = (await handle.getFile()).size;
    }
    return out;
  }

  async deleteShard(name) {
    const removed = await removeIfPresent(this.shards, `${name}.bin`);
    await this.removePartial(name);
    return removed;
  }

  async writeModel(record) {
    const file = await this.models.getFileHandle(`${record.modelId}.json`, { create: true });
    const handle = await openSyncHandle(file);
    try { writeJson(handle, record); } finally { handle.close(); }
  }

  async listModels() {
    const out = [];
    for await (const [entry, handle] of this.models.entries()) {
      if (!entry.endsWith('.json')) continue;
      try {
        out.push(JSON.parse(await (await handle.getFile()).text()));
      } catch { /* a record being rewritten by another tab: skip it this time */ }
    }
    return out;
  }

  async deleteModel(modelId) {
    return removeIfPresent(this.models, `${modelId}.json`);
  }
}

// OPFS content-addressed shard store (worker side). Layout under the origin's OPFS root:
//
//   doppler/shards/<sha256>.bin    verified shards only: a file appears here by a rename,
//                                  after its whole-content SHA-256 matched its name
//   doppler/partial/<sha256>.bin   a download in progress: its first `verified` blocks are
//   doppler/partial/<sha256>.json  verified ({size, blockSize, verified}); the rest is junk
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

// How many leading blocks a sidecar says are verified (0 if it is absent or from
// another geometry; an unreadable sidecar means nothing is known to be verified).
function claimedBlocks(sidecar, size, blockSize) {
  try {
    const note = sidecar.getSize() ? readJson(sidecar) : null;
    return note && note.size === size && note.blockSize === blockSize ? note.verified : 0;
  } catch {
    return 0;
  }
}

// A download in progress: the partial file plus its sidecar, both open exclusively.
export class Partial {
  constructor(store, name, size, blockSize, data, sidecar, verified) {
    Object.assign(this, { store, name, size, blockSize, data, sidecar, verified });
  }

  // Copy the blocks the sidecar says are verified into `buffer`; returns their count.
  // The caller re-hashes them (a torn write must not survive a crash).
  readVerified(buffer) {
    const bytes = Math.min(this.verified * this.blockSize, this.size);
    if (bytes > 0) this.data.read(buffer.subarray(0, bytes), { at: 0 });
    return this.verified;
  }

  // Persist block `block` (already verified by the caller) and advance the sidecar.
  writeBlock(block, bytes) {
    this.data.write(bytes, { at: block * this.blockSize });
    this.data.flush();
    this.verified = block + 1;
    writeJson(this.sidecar, { size: this.size, blockSize: this.blockSize, verified: this.verified });
  }

  // Forget verified blocks from `block` on (they failed a re-check).
  rewind(block) {
    this.verified = Math.min(this.verified, block);
    this.data.truncate(this.verified * this.blockSize);
    writeJson(this.sidecar, { size: this.size, blockSize: this.blockSize, verified: this.verified });
  }

  close() {
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

  // Open (or start) the partial download of `name`; null when another context holds it.
  async openPartial(name, size, blockSize) {
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
      partial.verified = Math.min(claimedBlocks(sidecar, size, blockSize), data.getSize() >= size
        ? Math.ceil(size / blockSize) : Math.floor(data.getSize() / blockSize));
      if (partial.verified === 0) partial.rewind(0);
    } catch (err) {
      partial.close();  // e.g. no space for the sidecar: leave no handle open
      throw err;
    }
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
        out[entry.slice(0, -5)] = Math.min(note.verified * note.blockSize, note.size);
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

// Range tier: one byte range of a shard (an MoE expert) without the rest of the shard.
//
// The block-aligned cover of [offset, offset + length) is read from OPFS where its blocks
// are verified (a committed shard, or blocks of the shard's partial file, re-hashed on first
// read in this context, so a torn write never survives) and the missing blocks come from ONE
// Range request per attempt, for the cover of the missing blocks only. Each block is verified
// against the index's hash as it completes, written at its own offset in partial/<name>.bin
// and recorded in the sidecar's block set. When the blocks of a shard are all verified, the
// whole file is hashed and committed to shards/ like a full download. Nothing unverified is
// returned or stored. Bulk bytes stay in JS; Python sees only the result object.

import {
  BAD_BYTES, Fatal, SourceError, TRANSIENT, abortable, checkResponse, isQuotaError,
  quotaFatal, sha256Hex,
} from './fetch.js';

// Another context holds this shard's partial file: fetch into RAM, and do not wait ~3 s for
// its handle again on every range for this long.
const LOCKED_OUT_MS = 10_000;
const lockedOut = new Map();  // name -> performance.now() until which we do not try
const chains = new Map();     // name -> tail of the queue of operations on that shard
// Blocks of a held partial file that this context wrote or re-hashed since opening it. Its
// handle is exclusive, so nothing else can change them until it closes: a pager reading the
// same expert again skips the re-hash (a torn write can only survive a crash, which closes
// the handle and starts a new set).
const checkedBlocks = new WeakMap();  // partial -> Set of block numbers

// Run `fn` after every earlier operation on shard `name` in this context (range fetches,
// full downloads, closing): they share one exclusive partial file handle.
export function withShard(name, fn) {
  const run = (chains.get(name) ?? Promise.resolve()).then(fn);
  const tail = run.catch(() => {});
  chains.set(name, tail);
  tail.then(() => { if (chains.get(name) === tail) chains.delete(name); });
  return run;
}

// Close every partial file kept open for range fetches (the model is no longer in use).
export async function closeHeld(store) {
  await Promise.all([...store.held.keys()].map(
    (name) => withShard(name, () => store.held.get(name)?.close())));
}

// The shard's partial file, kept open in the store; null: fetch into RAM, uncached.
async function heldPartial(store, name, size, blockSize) {
  if ((lockedOut.get(name) ?? 0) > performance.now()) return null;
  let partial;
  try {
    partial = await store.openPartial(name, size, blockSize, { keep: true });
  } catch (err) {
    if (isQuotaError(err)) throw err;
    return null;  // OPFS failed under us: serve the range from the network, uncached
  }
  if (partial === null) lockedOut.set(name, performance.now() + LOCKED_OUT_MS);
  return partial;
}

// The cover of one range: its buffer and which of its blocks are verified in it.
class RangeJob {
  constructor({ name, size, blockSize, blocks, offset, length, signal }, partial) {
    Object.assign(this, { name, size, blockSize, blocks, offset, length, signal, partial });
    this.first = Math.floor(offset / blockSize);
    this.last = Math.floor((offset + length - 1) / blockSize);
    this.lo = this.first * blockSize;
    this.hi = Math.min((this.last + 1) * blockSize, size);
    this.buffer = new Uint8Array(this.hi - this.lo);
    this.have = new Set();
    this.fetchedBytes = 0;
  }

  blockRange(block) {
    const lo = block * this.blockSize;
    return [lo, Math.min(lo + this.blockSize, this.size)];
  }

  expected(block) { return this.blocks.slice(block * 64, block * 64 + 64); }

  missing() {
    const out = [];
    for (let block = this.first; block <= this.last; block++) {
      if (!this.have.has(block)) out.push(block);
    }
    return out;
  }

  // Take the cover's blocks that OPFS has, re-hashing each; a block that fails is forgotten.
  async restore() {
    if (!this.partial) return;
    for (let block = this.first; block <= this.last; block++) {
      if (!this.partial.has(block)) continue;
      const [lo, hi] = this.blockRange(block);
      const bytes = this.buffer.subarray(lo - this.lo, hi - this.lo);
      this.partial.readBlock(block, bytes);
      const checked = checkedBlocks.get(this.partial);
      if (checked?.has(block) || await sha256Hex(bytes) === this.expected(block)) {
        this.have.add(block);
        this.markChecked(block);
      } else {
        this.partial.forget(block);
      }
    }
  }

  // `bytes` arrived for `block`: keep and persist them if they verify, else blame `url`.
  async accept(block, bytes, url) {
    const got = await sha256Hex(bytes);
    if (got !== this.expected(block)) {
      const [lo, hi] = this.blockRange(block);
      throw new SourceError(BAD_BYTES, `${url}: block ${block} (bytes ${lo}-${hi - 1}) `
        + `hashes to ${got.slice(0, 16)}…, expected ${this.expected(block).slice(0, 16)}…`);
    }
    this.buffer.set(bytes, block * this.blockSize - this.lo);
    this.have.add(block);
    if (!this.partial) return;
    try {
      this.partial.writeBlock(block, bytes);
      this.markChecked(block);
    } catch (err) {
      if (isQuotaError(err)) throw quotaFatal(this.name, err);
      this.partial.close();  // OPFS failed under us: go on in RAM, uncached
      this.partial = null;
    }
  }

  markChecked(block) {
    if (!checkedBlocks.has(this.partial)) checkedBlocks.set(this.partial, new Set());
    checkedBlocks.get(this.partial).add(block);
  }

  get data() {
    const start = this.offset - this.lo;
    return start === 0 && this.length === this.buffer.length
      ? this.buffer : this.buffer.slice(start, start + this.length);
  }
}

// One Range request for the cover of the blocks still missing, verifying blocks as they fill.
async function streamFrom(url, job) {
  const missing = job.missing();
  const start = job.blockRange(missing[0])[0];
  const end = job.blockRange(missing[missing.length - 1])[1];
  let response;
  try {
    response = await fetch(url, {
      cache: 'no-store',
      headers: { Range: `bytes=${start}-${end - 1}` },
      signal: job.signal,
    });
  } catch (err) {
    if (job.signal?.aborted) throw err;
    throw new SourceError(TRANSIENT, `${url}: ${err?.message ?? err}`);
  }
  let skip = checkResponse(response, url, job, start, end);
  const whole = skip > 0 || response.status === 200;
  const window = new Uint8Array(end - start);
  let received = 0;
  let block = Math.floor(start / job.blockSize);  // next block to complete
  const reader = response.body.getReader();
  try {
    while (received < window.length) {
      let chunk;
      try {
        const { done, value } = await reader.read();
        if (done) break;
        chunk = value;
      } catch (err) {
        if (job.signal?.aborted) throw err;
        throw new SourceError(TRANSIENT, `${url}: connection lost after byte ${start + received} `
          + `(${err?.message ?? err})`);
      }
      job.fetchedBytes += chunk.length;
      if (skip > 0) {
        const dropped = Math.min(skip, chunk.length);
        skip -= dropped;
        chunk = chunk.subarray(dropped);
      }
      if (received + chunk.length > window.length) {
        if (!whole) throw new SourceError(BAD_BYTES, `${url}: more than the ${window.length} bytes asked for`);
        chunk = chunk.subarray(0, window.length - received);  // the rest of a 200: not needed
      }
      window.set(chunk, received);
      received += chunk.length;
      for (;;) {
        const [lo, hi] = job.blockRange(block);
        if (hi > start + received || lo >= end) break;
        if (!job.have.has(block)) await job.accept(block, window.subarray(lo - start, hi - start), url);
        block += 1;
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
  if (received < window.length) {
    throw new SourceError(TRANSIENT, `${url}: body ended at byte ${start + received}, `
      + `expected bytes ${start}-${end - 1}`);
  }
}

// Try one source until the cover is complete, it fails for good, or it stops making progress.
async function fromSource(url, job, { attempts, backoffMs }) {
  let failures = 0;
  for (;;) {
    const before = job.have.size;
    try {
      await streamFrom(url, job);
      return null;
    } catch (err) {
      if (!(err instanceof SourceError)) throw err;
      failures = job.have.size > before ? 1 : failures + 1;
      if (err.kind !== TRANSIENT || failures >= attempts) return err;
      await abortable(backoffMs * 2 ** (failures - 1), job.signal);
    }
  }
}

async function fetchInto(job, sources, options) {
  const problems = [];
  for (const base of sources) {
    const problem = await fromSource(`${base}${job.name}.bin`, job, options);
    if (problem === null) return;
    problems.push(problem);
  }
  const bad = problems.length > 0 && problems.every((p) => p.kind === BAD_BYTES);
  throw new Fatal(bad ? 'hash_mismatch' : 'fetch_failed',
    `shard ${job.name} (${job.size} bytes), bytes ${job.offset}-${job.offset + job.length - 1}: `
    + `no good copy from ${sources.length} source(s): ${problems.map((p) => p.message).join('; ')}`);
}

// Every block of the shard is verified in its partial file: check the whole file against its
// name and commit it to shards/ (a corrupt index is the only way this can fail).
async function commitWhole(partial) {
  const whole = new Uint8Array(partial.size);
  partial.data.read(whole, { at: 0 });
  if (await sha256Hex(whole) !== partial.name) {
    await partial.discard();
    throw new Fatal('hash_mismatch', `shard ${partial.name}: every block matched its index hash `
      + 'but the whole file does not hash to its name (a corrupt index?)');
  }
  await partial.commit();
}

function badSpec({ name, size, blockSize, blocks, offset, length }) {
  const whole = (n) => Number.isSafeInteger(n) && n >= 0;
  if (!/^[0-9a-f]{64}$/.test(name ?? '')) return `shard name ${name} is not 64 lowercase hex`;
  if (!whole(size) || !whole(blockSize) || blockSize === 0) return `bad size ${size} or blockSize ${blockSize}`;
  if (typeof blocks !== 'string' || blocks.length !== Math.ceil(size / blockSize) * 64) {
    return `blocks must hold one 64-hex hash per ${blockSize}-byte block of ${size} bytes`;
  }
  if (!whole(offset) || !whole(length) || length === 0 || offset + length > size) {
    return `bytes ${offset}+${length} are not a non-empty range of a ${size}-byte shard`;
  }
  return null;
}

// The protocol for one range. Never rejects: resolves {ok: true, data (exactly `length`
// bytes), source ('cache' | 'network'), fetchedBytes} or {ok: false, code, message}.
// spec: {name, size, blockSize, blocks, offset, length, sources, signal, useCache,
// attempts, backoffMs}; `store` is null when useCache is false or OPFS is unusable.
export async function getRange(store, spec) {
  const { name, signal } = spec;
  const problem = badSpec(spec);
  if (problem) return { ok: false, code: 'bad_request', message: `range of shard ${name}: ${problem}` };
  const options = { attempts: spec.attempts ?? 3, backoffMs: spec.backoffMs ?? 250 };
  let job = null;
  try {
    if (store && await store.has(name, spec.size)) {
      const data = await store.readSlice(name, spec.offset, spec.length);
      return { ok: true, data, source: 'cache', fetchedBytes: 0 };
    }
    const partial = store ? await heldPartial(store, name, spec.size, spec.blockSize) : null;
    job = new RangeJob(spec, partial);
    await job.restore();
    const fetched = job.missing().length > 0;
    if (fetched) await fetchInto(job, spec.sources, options);
    if (job.partial?.complete) await commitWhole(job.partial);
    return { ok: true, data: job.data, source: fetched ? 'network' : 'cache', fetchedBytes: job.fetchedBytes };
  } catch (err) {
    if (signal?.aborted) return { ok: false, code: 'aborted', message: `fetching a range of shard ${name} was aborted` };
    if (isQuotaError(err)) err = quotaFatal(name, err);
    if (err instanceof Fatal) {
      if (err.code === 'quota_exceeded') {
        job?.partial?.close();
        await store?.removePartial(name).catch(() => {});
      }
      return { ok: false, code: err.code, message: err.message };
    }
    return { ok: false, code: 'fetch_failed', message: `range of shard ${name}: ${err?.name ?? 'Error'}: ${err?.message ?? err}` };
  }
}

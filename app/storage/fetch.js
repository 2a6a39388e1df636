// Network tier: stream one content-addressed file into a JS buffer, verifying each block as
// it completes, persisting verified blocks to the OPFS partial file, resuming a dropped
// connection with `Range: bytes=<verified>-`, and falling back to the next source when one
// fails or serves bad bytes. Bulk bytes never leave JS; Python only sees the result object.

export const TRANSIENT = 'transient';  // worth retrying at the same source (drop, 5xx, timeout)
export const PERMANENT = 'permanent';  // this source does not have the file (404, 403, ...)
export const BAD_BYTES = 'bad_bytes';  // this source served wrong bytes (hash, size, HTML, ...)
const PROGRESS_EVERY_MS = 100;

export class SourceError extends Error {
  constructor(kind, message) {
    super(message);
    this.kind = kind;
  }
}

export class Fatal extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

// Chromium's sync access handle reports a full quota as "No space available".
export const isQuotaError = (err) => err?.name === 'QuotaExceededError'
  || /no space|quota/i.test(err?.message ?? '');

export const quotaFatal = (name, err) => new Fatal('quota_exceeded',
  `storage is full while caching shard ${name} (${err.message})`);

const hex = (buffer) => Array.from(new Uint8Array(buffer),
  (b) => b.toString(16).padStart(2, '0')).join('');

export async function sha256Hex(bytes) {
  return hex(await crypto.subtle.digest('SHA-256', bytes));
}

export function abortable(ms, signal) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => { clearTimeout(timer); reject(signal.reason); },
      { once: true });
  });
}

// One file being fetched: its buffer, how many leading blocks are verified, where they go.
class Job {
  constructor({ name, size, blockSize, blocks, signal, onBytes }, partial) {
    Object.assign(this, { name, size, signal, partial });
    // A file without block hashes (index shard, tokenizer) is one block: its own name.
    this.blockSize = blocks ? blockSize : size;
    this.blocks = blocks ?? name;
    this.count = Math.ceil(size / this.blockSize);
    this.buffer = new Uint8Array(size);
    this.verified = 0;
    this.received = 0;
    this.onBytes = onBytes ?? (() => {});
    this.reportedAt = 0;
  }

  get verifiedBytes() { return Math.min(this.verified * this.blockSize, this.size); }

  blockRange(block) {
    const lo = block * this.blockSize;
    return [lo, Math.min(lo + this.blockSize, this.size)];
  }

  expected(block) { return this.blocks.slice(block * 64, block * 64 + 64); }

  report(force = false) {
    const now = performance.now();
    if (!force && now - this.reportedAt < PROGRESS_EVERY_MS) return;
    this.reportedAt = now;
    this.onBytes(this.received);
  }

  // Re-check blocks restored from a partial file; keep the verified prefix only.
  async restore() {
    const claimed = this.partial.readVerified(this.buffer);
    for (let block = 0; block < claimed; block++) {
      const [lo, hi] = this.blockRange(block);
      if (await sha256Hex(this.buffer.subarray(lo, hi)) !== this.expected(block)) {
        this.partial.rewind(block);
        break;
      }
      this.verified = block + 1;
    }
    this.received = this.verifiedBytes;
    return this.received;
  }

  // Verify every block that `received` now covers; a bad block ends this source.
  async verifyBlocks(url) {
    while (this.verified < this.count) {
      const [lo, hi] = this.blockRange(this.verified);
      if (this.received < hi) return;
      const got = await sha256Hex(this.buffer.subarray(lo, hi));
      if (got !== this.expected(this.verified)) {
        this.received = this.verifiedBytes;
        throw new SourceError(BAD_BYTES, `${url}: block ${this.verified} (bytes ${lo}-${hi - 1}) `
          + `hashes to ${got.slice(0, 16)}…, expected ${this.expected(this.verified).slice(0, 16)}…`);
      }
      this.persist(this.verified, lo, hi);
      this.verified += 1;
    }
  }

  persist(block, lo, hi) {
    if (!this.partial) return;
    try {
      this.partial.writeBlock(block, this.buffer.subarray(lo, hi));
    } catch (err) {
      if (isQuotaError(err)) throw quotaFatal(this.name, err);
      this.partial.close();  // OPFS failed under us: finish from RAM, uncached
      this.partial = null;
    }
  }
}

// Check a reply to `Range: bytes=<start>-` (`<start>-<end - 1>` when `end` is given); returns
// how many body bytes to skip.
export function checkResponse(response, url, job, start, end) {
  const { status } = response;
  if ([401, 403, 404, 410].includes(status)) throw new SourceError(PERMANENT, `${url}: HTTP ${status}`);
  if (status === 416) {
    throw new SourceError(BAD_BYTES, `${url}: HTTP 416, the file is shorter than ${job.size} bytes`);
  }
  if (!response.ok) throw new SourceError(TRANSIENT, `${url}: HTTP ${status}`);
  const type = response.headers.get('Content-Type') ?? '';
  if (type.startsWith('text/html')) {
    throw new SourceError(BAD_BYTES, `${url}: served an HTML page (${type}) instead of the file`);
  }
  if (status === 206) {
    const range = response.headers.get('Content-Range') ?? '';
    const match = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(range);
    if (!match) {
      throw new SourceError(BAD_BYTES, `${url}: 206 without a readable Content-Range `
        + '(a cross-origin host must send Access-Control-Expose-Headers: Content-Range)');
    }
    const last = end === undefined ? '' : end - 1;
    if (Number(match[1]) !== start || (end !== undefined && Number(match[2]) !== last)
        || (match[3] !== '*' && Number(match[3]) !== job.size)) {
      throw new SourceError(BAD_BYTES, `${url}: Content-Range ${range} does not match `
        + `bytes ${start}-${last} of a ${job.size}-byte file`);
    }
    return 0;
  }
  const length = response.headers.get('Content-Length');
  if (length !== null && !response.headers.get('Content-Encoding') && Number(length) !== job.size) {
    throw new SourceError(BAD_BYTES, `${url}: ${length} bytes, expected ${job.size}`);
  }
  return start;  // a 200 answer to a Range request: the whole file from 0; skip to our start
}

// Fetch bytes `job.received`.. from `url` into the job's buffer, verifying as blocks fill.
async function streamFrom(url, job) {
  const start = job.received;
  let response;
  try {
    response = await fetch(url, {
      cache: 'no-store',
      headers: start > 0 ? { Range: `bytes=${start}-` } : {},
      signal: job.signal,
    });
  } catch (err) {
    if (job.signal?.aborted) throw err;
    throw new SourceError(TRANSIENT, `${url}: ${err?.message ?? err}`);
  }
  let skip = checkResponse(response, url, job, start);
  const reader = response.body.getReader();
  try {
    for (;;) {
      let chunk;
      try {
        const { done, value } = await reader.read();
        if (done) break;
        chunk = value;
      } catch (err) {
        if (job.signal?.aborted) throw err;
        throw new SourceError(TRANSIENT, `${url}: connection lost after byte ${job.received} `
          + `(${err?.message ?? err})`);
      }
      if (skip > 0) {
        const dropped = Math.min(skip, chunk.length);
        skip -= dropped;
        chunk = chunk.subarray(dropped);
      }
      if (job.received + chunk.length > job.size) {
        job.received = job.verifiedBytes;
        throw new SourceError(BAD_BYTES, `${url}: more than ${job.size} bytes`);
      }
      job.buffer.set(chunk, job.received);
      job.received += chunk.length;
      await job.verifyBlocks(url);
      job.report();
    }
  } finally {
    reader.cancel().catch(() => {});
  }
  if (job.received < job.size) {
    const got = job.received;
    job.received = job.verifiedBytes;
    throw new SourceError(TRANSIENT, `${url}: body ended at byte ${got} of ${job.size}`);
  }
}

// Try one source until the file is complete, it fails for good, or it stops making progress.
async function fromSource(url, job, { attempts, backoffMs }) {
  let failures = 0;
  for (;;) {
    const before = job.verified;
    try {
      await streamFrom(url, job);
      return null;
    } catch (err) {
      if (!(err instanceof SourceError)) throw err;
      job.received = job.verifiedBytes;
      job.report(true);
      failures = job.verified > before ? 1 : failures + 1;
      if (err.kind !== TRANSIENT || failures >= attempts) return err;
      await abortable(backoffMs * 2 ** (failures - 1), job.signal);
    }
  }
}

async function fetchInto(job, sources, options) {
  const problems = [];
  for (const base of sources) {
    const url = `${base}${job.name}.bin`;
    const problem = await fromSource(url, job, options);
    if (problem === null) return { url, problems };
    problems.push(problem);
  }
  const bad = problems.length > 0 && problems.every((p) => p.kind === BAD_BYTES);
  throw new Fatal(bad ? 'hash_mismatch' : 'fetch_failed',
    `shard ${job.name} (${job.size} bytes): no good copy from ${sources.length} source(s): `
    + problems.map((p) => p.message).join('; '));
}

// The whole protocol for one file. Never rejects: resolves {ok: true, data, source, cached,
// url, resumedBytes} or {ok: false, code, message}; Python turns the latter into an error.
export async function getShard(store, spec) {
  const { name, size, sources, signal } = spec;
  const options = { attempts: spec.attempts ?? 3, backoffMs: spec.backoffMs ?? 250 };
  let partial = null;
  try {
    if (store && await store.has(name, size)) {
      const data = await store.read(name);
      return { ok: true, data, source: 'cache', cached: true, url: null, resumedBytes: 0 };
    }
    const blockSize = spec.blocks ? spec.blockSize : size;
    partial = store ? await store.openPartial(name, size, blockSize) : null;
    const job = new Job(spec, partial);
    const resumedBytes = partial ? await job.restore() : 0;
    job.report(true);
    const { url } = job.received < size ? await fetchInto(job, sources, options) : { url: null };
    if (job.count > 1 && await sha256Hex(job.buffer) !== name) {
      await job.partial?.discard();
      throw new Fatal('hash_mismatch', `shard ${name}: every block matched its index hash but `
        + 'the whole file does not hash to its name (a corrupt index?)');
    }
    const cached = job.partial !== null;
    if (cached) await job.partial.commit();
    job.report(true);
    return { ok: true, data: job.buffer, source: 'network', cached, url, resumedBytes };
  } catch (err) {
    partial?.close();
    if (signal?.aborted) return { ok: false, code: 'aborted', message: `loading shard ${name} was aborted` };
    if (isQuotaError(err)) err = quotaFatal(name, err);
    if (err instanceof Fatal) {
      if (err.code === 'quota_exceeded') await store?.removePartial(name).catch(() => {});
      return { ok: false, code: err.code, message: err.message };
    }
    return { ok: false, code: 'fetch_failed', message: `shard ${name}: ${err?.name ?? 'Error'}: ${err?.message ?? err}` };
  }
}

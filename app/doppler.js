// DOPPLER's public JS API (ES module). The page's UI uses it, and so can any other site:
//
//   import { Doppler } from './app/doppler.js';
//   const d = await Doppler.create();
//   d.status();   // {python, pyodide, gpu: {vendor, architecture, features, limits}, gpuError}
//
// All work happens in a module Web Worker running Python (Pyodide) on WebGPU.

import { DopplerError, WorkerClient } from './protocol.js';

export { DopplerError };

// Ask once that the cache survive storage pressure; only a page (not a worker) may ask.
// The browser may say no (headless Chromium always does); the cache works either way.
let persistence = null;
function requestPersistence() {
  persistence ??= (globalThis.navigator?.storage?.persist?.() ?? Promise.resolve(false))
    .catch(() => false);
  return persistence;
}

const GPU_OVERRIDES = ['maxStorageBufferBindingSize', 'maxBufferSize', 'disableFeatures'];

export class Doppler {
  // options: {bootTimeoutMs, pyodideBaseURL, onBoot(stage),
  //           maxStorageBufferBindingSize, maxBufferSize, disableFeatures: ['subgroups', ...]}
  static async create(options = {}) {
    const worker = new Worker(new URL('./worker.js', import.meta.url), { type: 'module' });
    const client = new WorkerClient(worker);
    const gpu = Object.fromEntries(
      GPU_OVERRIDES.filter((k) => options[k] !== undefined).map((k) => [k, options[k]]));
    const status = await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new DopplerError('boot_timeout',
        `the DOPPLER worker did not start within ${options.bootTimeoutMs ?? 180000} ms`)),
      options.bootTimeoutMs ?? 180000);
      const settle = (fn, value) => { clearTimeout(timer); fn(value); };
      worker.onerror = (event) => settle(reject, new DopplerError('worker_failed',
        `the DOPPLER worker failed to start: ${event.message ?? 'script error'}`));
      worker.onmessage = ({ data }) => {
        if (data.type === 'ready') settle(resolve, data.status);
        else if (data.type === 'fatal') settle(reject, new DopplerError(data.error.code, data.error.message));
        else if (data.type === 'boot') options.onBoot?.(data);
      };
      worker.postMessage({ type: 'init', options: { gpu, pyodideBaseURL: options.pyodideBaseURL } });
    }).catch((error) => { worker.terminate(); throw error; });
    return new Doppler(worker, client, status);
  }

  constructor(worker, client, status) {
    this.worker = worker;
    this.client = client;
    this.bootStatus = status;
    worker.onmessage = ({ data }) => client.receive(data);
    worker.onerror = (event) => client.failAll('worker_failed', `worker error: ${event.message}`);
    // The model cache in this origin's storage (OPFS), shared by every tab:
    //   list()   -> {models: [{modelId, name, url, totalBytes, storedBytes, complete,
    //                          lastUsed, inUse, shards}]}
    //   usage()  -> {available, reason, quota, usage, persisted, cachedBytes, partialBytes,
    //                shards, models}
    //   delete(modelIdOrShardHash) -> {deleted, kind, freedBytes}; refuses what a tab uses
    this.cache = {
      list: () => client.request('cache.list', {}),
      usage: () => client.request('cache.usage', {}),
      delete: (target) => client.request('cache.delete', { target }),
    };
  }

  // What the worker found: Python and Pyodide versions, the GPU (or gpu: null + gpuError).
  status() {
    return structuredClone(this.bootStatus);
  }

  // Load an RDRR model from its root manifest URL. options: {onProgress(event),
  // contextLength, signal, gpuBudgetBytes (GPU memory DOPPLER may use; MoE experts that do
  // not fit are paged), ramBudgetBytes (JS memory for recently used experts; 0 = none),
  // pagingPolicy ('cycle-lfu' or 'lru'), prefillTokens (prompt tokens per prefill pass)}.
  // Resolves with what was loaded ({modelId, name, arch, ..., experts}).
  async load(manifestUrl, {
    onProgress, contextLength, signal, gpuBudgetBytes, ramBudgetBytes, pagingPolicy,
    prefillTokens,
  } = {}) {
    const url = new URL(manifestUrl, globalThis.location?.href).href;
    requestPersistence();  // not awaited: Firefox asks the user, and loading need not wait
    const payload = {
      url, contextLength, gpuBudgetBytes, ramBudgetBytes, pagingPolicy, prefillTokens,
    };
    return this.client.request('load', payload, {
      signal, onEvent: (event) => onProgress?.(event),
    });
  }

  // Generate from a prompt (a string, or {tokenIds: [...]}). Returns an async iterator of
  // {type: 'delta', text, tokenIds} events, then one {type: 'done', text, tokenIds,
  // finishReason, stats}. options: maxTokens, temperature (0 = greedy), topK, topP, seed,
  // stop (strings), signal.
  generate(prompt, { signal, ...options } = {}) {
    const input = typeof prompt === 'string' ? { text: prompt } : prompt;
    return this.client.stream('generate', { ...input, options }, { signal });
  }

  // Like generate, for a list of {role, content} messages rendered with the model's template.
  chat(messages, { signal, ...options } = {}) {
    return this.client.stream('generate', { messages, options }, { signal });
  }

  // Per-token log-probabilities and perplexity of a text (or {tokenIds}); {topK} adds the
  // top-k logits per position.
  score(input, { signal, topK = 0 } = {}) {
    const payload = typeof input === 'string' ? { text: input } : input;
    return this.client.request('score', { ...payload, topK }, { signal });
  }

  unload() {
    return this.client.request('unload', {});
  }

  // Test harness: run one WGSL kernel on the given buffers; returns {outputs: [ArrayBuffer]}.
  runKernel(spec, options = {}) {
    return this.client.request('debug.runKernel', spec, options);
  }

  // Low-level access for diagnostics and tests: any request kind, streamed.
  stream(kind, payload, options) {
    return this.client.stream(kind, payload, options);
  }

  request(kind, payload, options) {
    return this.client.request(kind, payload, options);
  }

  terminate() {
    this.client.failAll('terminated', 'DOPPLER was terminated');
    this.worker.terminate();
  }
}

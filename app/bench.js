// The benchmark page (bench.html?model=URL&prompt=512&decode=128): loads a model, runs a
// warm-up, then one generation of `decode` tokens after a `prompt`-token prompt, and POSTs
// the figures as JSON to ./bench-result (build.py bench serves that and prints them).

import { Doppler } from './doppler.js';

const params = new URLSearchParams(location.search);
const promptTokens = Number(params.get('prompt') ?? 512);
const decodeTokens = Number(params.get('decode') ?? 128);

async function generate(doppler, tokenIds, maxTokens) {
  let done = null;
  for await (const event of doppler.generate({ tokenIds }, { maxTokens, temperature: 0 })) {
    if (event.type === 'done') done = event;
  }
  return done;
}

async function bench() {
  const result = { promptTokens, decodeTokens, userAgent: navigator.userAgent };
  const started = performance.now();
  const doppler = await Doppler.create();
  result.bootMs = performance.now() - started;
  const status = doppler.status();
  result.gpu = status.gpu ? { ...status.gpu, limits: undefined } : status.gpuError;
  const loadStarted = performance.now();
  const info = await doppler.load(params.get('model'), {
    contextLength: promptTokens + decodeTokens + 8,
  });
  result.loadMs = performance.now() - loadStarted;
  result.model = info;
  const vocab = Math.min(info.vocabSize ?? 32000, 32000);
  const ids = Array.from({ length: promptTokens }, (_, i) => 3 + ((i * 7919 + 13) % (vocab - 3)));
  const warm = await generate(doppler, ids.slice(0, 9), 4);  // compiles every pipeline
  result.warmupMs = warm.stats.ttftMs;
  const run = await generate(doppler, ids, decodeTokens);
  const stats = run.stats;
  const weightBytes = info.gpuBytes.weights;
  Object.assign(result, {
    ttftMs: stats.ttftMs,
    prefillTokPerS: stats.prefillTokPerS,
    decodeTokPerS: stats.decodeTokPerS,
    msPerToken: 1000 / stats.decodeTokPerS,
    cpuMsPerToken: stats.cpuMsPerToken,
    dispatchesPerToken: stats.dispatchesPerToken,
    weightBytes,
    weightBytesPerSecond: weightBytes * stats.decodeTokPerS,
    generatedTokens: stats.generatedTokens,
  });
  if (status.gpu?.features.includes('timestamp-query')) {
    const profile = await doppler.request('profile', { repeats: 10 });
    result.gpuMsPerToken = profile.gpuMsPerToken;  // dispatches timed one pass each
    result.gpuMsByKernel = profile.byKernel;
  }
  return result;
}

const result = await bench().catch((error) => ({ error: { code: error.code, message: error.message } }));
document.getElementById('bench-state').textContent = result.error ? 'failed' : 'done';
document.getElementById('bench-result').textContent = JSON.stringify(result, null, 1);
await fetch('bench-result', { method: 'POST', body: JSON.stringify(result) });

// The benchmark page (bench.html?model=URL&prompt=512&decode=128): loads a model, runs a
// short warm-up, then two generations of `decode` tokens after a `prompt`-token prompt (the
// figures are the second's), and POSTs them as JSON to ./bench-result (build.py bench
// serves that and prints them).
// MoE models: gpuBudget=BYTES runs only paged with that budget (so the process memory the
// runner samples is the paged run's); with expertFraction=F the model is then loaded again with a GPU budget that
// holds only that share of its experts (ramBudget, policy: the pager's other settings), and
// the same generation runs paged; GPU buffer bytes are counted by the worker's GPU meter.

import { Doppler } from './doppler.js';

const params = new URLSearchParams(location.search);
const promptTokens = Number(params.get('prompt') ?? 512);
const decodeTokens = Number(params.get('decode') ?? 128);
const expertFraction = params.get('expertFraction');
const gpuBudget = params.get('gpuBudget');  // MoE: only a paged run, with this many GPU bytes
const PLAN_RESERVE = 2 << 20;  // py/doppler/model/transformer.py PLAN_RESERVE_BYTES

// Greedy unless the query names temperature, topK and topP (the chat page samples).
const sampling = {
  temperature: Number(params.get('temperature') ?? 0),
  topK: Number(params.get('topK') ?? 0),
  topP: Number(params.get('topP') ?? 1),
};

async function generate(doppler, tokenIds, maxTokens) {
  let done = null;
  for await (const event of doppler.generate({ tokenIds }, { maxTokens, ...sampling })) {
    if (event.type === 'done') done = event;
  }
  return done;
}

// Load with `options`, warm up, generate; the figures of that run.
async function measure(doppler, options) {
  const loadStarted = performance.now();
  const info = await doppler.load(params.get('model'), {
    contextLength: promptTokens + decodeTokens + 8,
    prefillTokens: params.has('prefillTokens') ? Number(params.get('prefillTokens')) : undefined,
    ...options,
  });
  const result = { loadMs: performance.now() - loadStarted, model: info };
  const vocab = Math.min(info.vocabSize ?? 32000, 32000);
  const ids = Array.from({ length: promptTokens }, (_, i) => 3 + ((i * 7919 + 13) % (vocab - 3)));
  const warm = await generate(doppler, ids.slice(0, 9), 4);  // compiles every pipeline
  result.warmupMs = warm.stats.ttftMs;
  // The first full generation finds the GPU at its idle clocks (NVIDIA parts take ~0.1-0.3 s
  // to reach full speed); the figures are the second's, right after it, as llama-bench
  // measures after warm-up runs. The first one's TTFT is kept as coldTtftMs. (Paged MoE
  // runs run once: a repeat would find the experts of the first one already paged in.)
  if (options.gpuBudgetBytes === undefined) {
    result.coldTtftMs = (await generate(doppler, ids, decodeTokens)).stats.ttftMs;
  }
  const run = await generate(doppler, ids, decodeTokens);
  const stats = run.stats;
  const weightBytes = info.gpuBytes.weights;
  Object.assign(result, {
    ttftMs: stats.ttftMs,
    prefillTokPerS: stats.prefillTokPerS,
    decodeTokPerS: stats.decodeTokPerS,
    msPerToken: 1000 / stats.decodeTokPerS,
    cpuMsPerToken: stats.cpuMsPerToken,
    prefillCpuMs: stats.prefillCpuMs,
    dispatchesPerToken: stats.dispatchesPerToken,
    weightBytes,
    weightBytesPerSecond: weightBytes * stats.decodeTokPerS,
    generatedTokens: stats.generatedTokens,
    tokenIds: run.tokenIds,
    tokenIdsPrompt: ids,
    paging: stats.paging,
  });
  return result;
}

// The GPU budget that leaves room for `fraction` of the experts once all else is allocated.
function expertBudget(info, fraction) {
  const used = Object.values(info.gpuBytes).reduce((a, b) => a + b, 0);
  const experts = info.experts.total_experts * info.experts.slot_bytes;
  return used - info.gpuBytes.experts + PLAN_RESERVE + Math.floor(fraction * experts);
}

async function bench() {
  const started = performance.now();
  const doppler = await Doppler.create();
  const result = { promptTokens, decodeTokens, sampling, userAgent: navigator.userAgent };
  result.bootMs = performance.now() - started;
  const status = doppler.status();
  result.gpu = status.gpu ? { ...status.gpu, limits: undefined } : status.gpuError;
  await doppler.request('debug.gpuMeter', { install: true });
  Object.assign(result, await measure(doppler, gpuBudget === null ? {} : {
    gpuBudgetBytes: Number(gpuBudget),
    ramBudgetBytes: Number(params.get('ramBudget') ?? 0),
    pagingPolicy: params.get('policy') ?? 'cycle-lfu',
  }));
  result.gpuMeter = await doppler.request('debug.gpuMeter', {});
  if (status.gpu?.features.includes('timestamp-query')) {
    const profile = await doppler.request('profile', { repeats: 10, tokenIds: result.tokenIdsPrompt });
    result.gpuMsPerToken = profile.gpuMsPerToken;  // dispatches timed one pass each
    result.gpuMsByKernel = profile.byKernel;
    result.gpuDecodePassMs = profile.decodePassMs;  // the step as one pass, as generated
    result.gpuPrefillPassMs = profile.prefillPassMs;  // one pass of prefillTokens tokens
    result.prefillTokens = profile.prefillTokens;
    result.gpuPrefillMsByKernel = profile.prefillByKernel;
    result.promptPasses = profile.prompt;  // the prompt's passes as generation submits them
  }
  if (expertFraction !== null && result.model.experts) {
    const gpuBudgetBytes = expertBudget(result.model, Number(expertFraction));
    await doppler.unload();
    await doppler.request('debug.gpuMeter', { resetPeak: true });
    result.paged = await measure(doppler, {
      gpuBudgetBytes,
      ramBudgetBytes: Number(params.get('ramBudget') ?? 0),
      pagingPolicy: params.get('policy') ?? 'cycle-lfu',
    });
    result.paged.gpuBudgetBytes = gpuBudgetBytes;
    result.paged.gpuMeter = await doppler.request('debug.gpuMeter', {});
    result.paged.sameTokensAsResident =
      JSON.stringify(result.paged.tokenIds) === JSON.stringify(result.tokenIds);
  }
  return result;
}

const result = await bench().catch((error) => ({ error: { code: error.code, message: error.message } }));
document.getElementById('bench-state').textContent = result.error ? 'failed' : 'done';
document.getElementById('bench-result').textContent = JSON.stringify(result, null, 1);
await fetch('bench-result', { method: 'POST', body: JSON.stringify(result) });

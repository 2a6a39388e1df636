// UI logic of index.html: boot DOPPLER, show what it found, explain what went wrong.

import { Doppler } from './doppler.js';

const $ = (id) => document.getElementById(id);

const GPU_HELP = {
  no_webgpu: 'This browser has no WebGPU. Use a recent Chrome, Edge or Safari with WebGPU on.',
  adapter_failed: 'WebGPU is here but no GPU adapter could be had (GPU disabled or blocklisted).',
  device_failed: 'The GPU adapter refused to create a device with the limits DOPPLER needs.',
};

const LIMITS_SHOWN = ['maxStorageBufferBindingSize', 'maxBufferSize',
  'maxComputeWorkgroupStorageSize', 'maxComputeInvocationsPerWorkgroup'];

function formatBytes(n) {
  if (n >= 2 ** 30) return `${(n / 2 ** 30).toFixed(1)} GiB`;
  return n >= 2 ** 20 ? `${(n / 2 ** 20).toFixed(0)} MiB` : `${(n / 2 ** 10).toFixed(0)} KiB`;
}

function showMessage(text, kind = 'error') {
  const box = $('message');
  box.textContent = text;
  box.dataset.kind = kind;
  box.hidden = false;
}

function setState(state, text) {
  $('boot-state').dataset.state = state;
  $('boot-state').textContent = text;
}

function showStatus(status) {
  $('python-version').textContent = `Python ${status.python}`;
  $('pyodide-version').textContent = status.pyodide;
  if (!status.gpu) {
    $('gpu-adapter').textContent = 'none';
    const { code, message } = status.gpuError;
    showMessage(`${GPU_HELP[code] ?? 'No usable GPU.'} (${code}: ${message})`);
    setState('failed', 'Python is running, but there is no usable WebGPU device.');
    return;
  }
  const { vendor, architecture, description } = status.gpu;
  $('gpu-adapter').textContent = [vendor, architecture, description].filter(Boolean).join(' · ');
  $('gpu-features').textContent = status.gpu.features.join(', ') || 'none of the optional ones';
  $('gpu-limits').textContent = LIMITS_SHOWN.map((name) => {
    const value = status.gpu.limits[name];
    return `${name} ${name.endsWith('Size') && value > 65536 ? formatBytes(value) : value}`;
  }).join(' · ');
  setState('ready', `Ready in ${(status.bootMs / 1000).toFixed(1)} s.`);
  $('load-button').disabled = false;
}

// The model to load first: ?model=URL, else the site's embedded default model (if present).
const DEFAULT_MODEL = 'models/smollm2-135m-instruct/manifest.json';

async function defaultModelURL() {
  const asked = new URLSearchParams(location.search).get('model');
  if (asked) return asked;
  const response = await fetch(DEFAULT_MODEL, { method: 'HEAD' }).catch(() => null);
  return response?.ok ? DEFAULT_MODEL : null;
}

function formatRate(bytesPerSecond) {
  return `${(bytesPerSecond / 2 ** 20).toFixed(1)} MiB/s`;
}

async function loadModel(doppler, url) {
  const progress = $('load-progress');
  progress.hidden = false;
  progress.value = 0;
  $('model-state').textContent = `Loading ${url}…`;
  $('load-button').disabled = true;
  const mib = (input) => (input.value ? Math.round(Number(input.value) * 2 ** 20) : undefined);
  try {
    const info = await doppler.load(url, {
      gpuBudgetBytes: mib($('gpu-budget')),
      ramBudgetBytes: mib($('ram-budget')),
      onProgress: (e) => {
        progress.value = e.totalBytes ? e.loadedBytes / e.totalBytes : 0;
        const eta = e.bytesPerSecond ? (e.totalBytes - e.loadedBytes) / e.bytesPerSecond : 0;
        $('model-state').textContent = `Loading: ${formatBytes(e.loadedBytes)} of `
          + `${formatBytes(e.totalBytes)}, shard ${e.shards}/${e.totalShards} from ${e.source}, `
          + `${formatRate(e.bytesPerSecond)}, ${eta.toFixed(0)} s left`
          + (e.caching === false ? ` (${e.cachingNote})` : '');
      },
    });
    showCache(doppler);
    $('model-state').textContent = `${info.name} (${info.arch}, ${(info.params / 1e6).toFixed(0)}M `
      + `parameters, context ${info.contextLength}) is ready.${describeExperts(info.experts)}`;
    $('prompt').disabled = false;
    $('send-button').disabled = !info.hasTokenizer;
    window.dopplerModel = info;
  } catch (error) {
    $('model-state').textContent = 'No model loaded.';
    showMessage(`Could not load ${url}: ${error.message} (${error.code})`);
  } finally {
    progress.hidden = true;
    $('load-button').disabled = false;
  }
}

function describeExperts(experts) {
  if (!experts) return '';
  if (experts.resident) return ` All ${experts.total_experts} experts are on the GPU.`;
  return ` ${experts.gpu_slots} of its ${experts.total_experts} experts fit on the GPU at once;`
    + ' the others are paged in as tokens need them.';
}

// One generation's expert paging, tier by tier.
function describePaging(p) {
  if (!p || p.resident) return '';
  const mb = (bytes) => (bytes / 2 ** 20).toFixed(1);
  return `Experts: GPU ${p.gpu_hits} hits, ${p.gpu_misses} misses, ${p.gpu_evictions} evictions; `
    + `RAM ${p.ram_hits} hits, ${p.ram_misses} misses, ${p.ram_evictions} evictions; `
    + `${p.opfs_reads} read from OPFS, ${p.network_fetches} fetched (${mb(p.bytes_fetched)} MiB); `
    + `${mb(p.bytes_uploaded)} MiB uploaded (${mb(p.bytes_uploaded_per_token)} MiB/token), `
    + `waited ${p.stall_ms.toFixed(0)} ms; ${p.resident_experts} resident (${mb(p.resident_bytes)} MiB).`;
}

// The cache panel: what OPFS holds, with sizes, and a Delete button per model. Calls overlap
// (loads, deletes and generations each refresh it); only the latest one draws, and it
// replaces the rows in one step, so the panel never shows a half-drawn or doubled list.
let cacheDraws = 0;
async function showCache(doppler) {
  const draw = ++cacheDraws;
  const usage = await doppler.cache.usage().catch((error) => ({ error }));
  const available = !usage.error && usage.available;
  const { models } = available ? await doppler.cache.list() : { models: [] };
  if (draw !== cacheDraws) return;
  if (!available) {
    $('cache-usage').textContent = `Caching is off: ${usage.error?.message ?? usage.reason}`;
    $('cache-list').replaceChildren();
    return;
  }
  $('cache-usage').textContent = `${formatBytes(usage.cachedBytes)} cached, `
    + `${formatBytes(usage.usage)} of ${formatBytes(usage.quota)} used by this site`
    + (usage.persisted ? ' (persistent)' : '');
  const rows = models.map((model) => {
    const row = document.createElement('tr');
    row.dataset.modelId = model.modelId;
    const cells = [model.name, formatBytes(model.storedBytes)
      + (model.complete ? '' : ` of ${formatBytes(model.totalBytes)}`),
      new Date(model.lastUsed).toLocaleString()];
    for (const text of cells) row.insertCell().textContent = text;
    const remove = document.createElement('button');
    remove.textContent = model.inUse ? 'In use' : 'Delete';
    remove.disabled = model.inUse;
    remove.addEventListener('click', async () => {
      try { await doppler.cache.delete(model.modelId); } catch (error) { showMessage(error.message); }
      showCache(doppler);
    });
    row.insertCell().append(remove);
    return row;
  });
  $('cache-list').replaceChildren(...rows);
}

function addTurn(role, text) {
  const turn = document.createElement('div');
  turn.className = 'turn';
  turn.dataset.role = role;
  turn.textContent = text;
  $('transcript').append(turn);
  return turn;
}

function setupChat(doppler) {
  const messages = [];
  let controller = null;
  $('chat-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const text = $('prompt').value.trim();
    if (!text || controller) return;
    $('prompt').value = '';
    messages.push({ role: 'user', content: text });
    addTurn('user', text);
    const turn = addTurn('assistant', '');
    controller = new AbortController();
    $('send-button').disabled = true;
    $('stop-button').disabled = false;
    let reply = '';
    try {
      for await (const e of doppler.chat(messages, {
        signal: controller.signal,
        temperature: Number($('temperature').value),
        topK: Number($('top-k').value),
        topP: Number($('top-p').value),
        maxTokens: Number($('max-tokens').value),
      })) {
        if (e.type === 'delta') { reply += e.text; turn.textContent = reply; }
        if (e.type === 'done') {
          const s = e.stats;
          $('reply-stats').textContent = `${s.generatedTokens} tokens, `
            + `${s.decodeTokPerS.toFixed(1)} tok/s decode, ${s.prefillTokPerS.toFixed(1)} tok/s `
            + `prefill, first token after ${s.ttftMs.toFixed(0)} ms (${e.finishReason})`;
          $('paging-stats').textContent = describePaging(s.paging);
        }
      }
    } catch (error) {
      if (error.code !== 'aborted') showMessage(`Generation failed: ${error.message}`);
    } finally {
      messages.push({ role: 'assistant', content: reply });
      controller = null;
      $('send-button').disabled = false;
      $('stop-button').disabled = true;
    }
  });
  $('stop-button').addEventListener('click', () => controller?.abort());
}

async function main() {
  const options = Object.fromEntries(new URLSearchParams(location.search));
  try {
    const doppler = await Doppler.create({
      pyodideBaseURL: options.pyodide,
      onBoot: ({ stage, ms }) => setState('booting', `Loaded ${stage} in ${(ms / 1000).toFixed(1)} s…`),
    });
    window.doppler = doppler;
    showStatus(doppler.status());
    if (!doppler.status().gpu) return;
    setupChat(doppler);
    showCache(doppler);
    $('gpu-budget').value = options.gpuBudget ?? '';  // MiB, e.g. ?gpuBudget=2048
    $('ram-budget').value = options.ramBudget ?? '';
    $('load-form').addEventListener('submit', (event) => {
      event.preventDefault();
      loadModel(doppler, $('manifest-url').value);
    });
    const url = await defaultModelURL();
    if (url) {
      $('manifest-url').value = url;
      loadModel(doppler, url);
    }
  } catch (error) {
    const what = error.code === 'pyodide_failed' ? 'Pyodide (the in-browser Python) failed to load.'
      : 'DOPPLER could not start.';
    showMessage(`${what} ${error.message}`);
    setState('failed', 'Not running.');
    window.dopplerError = { code: error.code ?? 'unknown', message: error.message };
  }
}

main();

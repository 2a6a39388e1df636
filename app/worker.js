// Worker bootstrap: load Pyodide from this site, install our wheels, hand over to Python.
// Everything after boot goes through doppler.worker (Python), which owns the protocol.

import { PlanRunner, TimestampPairs } from './plan.js';
import * as gpuMeter from './gpu_meter.js';
import * as storage from './storage/index.js';

const siteBase = new URL('../', import.meta.url).href;
let worker = null;        // the Python Worker object once booted
const early = [];         // requests that arrived before boot finished

function fatal(code, message) {
  postMessage({ type: 'fatal', error: { code, message } });
}

async function installWheels(pyodide) {
  const response = await fetch(new URL('wheels/index.json', siteBase));
  if (!response.ok) throw new Error(`wheels/index.json: HTTP ${response.status}`);
  const { install } = await response.json();
  await pyodide.loadPackage(install.map((name) => new URL(`wheels/${name}`, siteBase).href));
}

async function boot(options) {
  const t0 = performance.now();
  let pyodide;
  try {
    const indexURL = new URL(options.pyodideBaseURL ?? 'pyodide/', siteBase).href;
    const { loadPyodide } = await import(new URL('pyodide.mjs', indexURL).href);
    pyodide = await loadPyodide({ indexURL });
  } catch (err) {
    fatal('pyodide_failed', `Pyodide failed to load: ${err?.message ?? err}`);
    return;
  }
  postMessage({ type: 'boot', stage: 'pyodide', ms: performance.now() - t0 });
  try {
    await installWheels(pyodide);
    pyodide.registerJsModule('doppler_js', { PlanRunner, TimestampPairs, storage, gpuMeter });
    const main = pyodide.pyimport('doppler.worker.main');
    worker = await main.boot(options.gpu ?? {}, siteBase);
    const status = worker.status().toJs({ dict_converter: Object.fromEntries });
    status.bootMs = performance.now() - t0;
    postMessage({ type: 'ready', status });
  } catch (err) {
    fatal('python_boot_failed', `DOPPLER's Python runtime failed to start: ${err?.message ?? err}`);
    return;
  }
  for (const message of early.splice(0)) worker.on_message(message);
}

self.onmessage = (event) => {
  const message = event.data;
  if (message.type === 'init') boot(message.options ?? {});
  else if (worker) worker.on_message(message);
  else early.push(message);
};

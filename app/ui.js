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
  return n >= 2 ** 30 ? `${(n / 2 ** 30).toFixed(1)} GiB` : `${(n / 2 ** 20).toFixed(0)} MiB`;
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

async function main() {
  const options = Object.fromEntries(new URLSearchParams(location.search));
  try {
    const doppler = await Doppler.create({
      pyodideBaseURL: options.pyodide,
      onBoot: ({ stage, ms }) => setState('booting', `Loaded ${stage} in ${(ms / 1000).toFixed(1)} s…`),
    });
    window.doppler = doppler;
    showStatus(doppler.status());
  } catch (error) {
    const what = error.code === 'pyodide_failed' ? 'Pyodide (the in-browser Python) failed to load.'
      : 'DOPPLER could not start.';
    showMessage(`${what} ${error.message}`);
    setState('failed', 'Not running.');
    window.dopplerError = { code: error.code ?? 'unknown', message: error.message };
  }
}

main();

// The storage tiers as Python sees them (`from doppler_js import storage`): one OPFS store per
// worker, the network fetcher, quota figures, and Web Locks that mark models in use so that
// no tab evicts shards another tab is loading or running.

import { ShardStore } from './opfs.js';
import { getShard as fetchShard } from './fetch.js';
import { closeHeld, getRange as fetchRange, withShard } from './range.js';

export { sha256Hex } from './fetch.js';

const LOCK_PREFIX = 'doppler-model:';
let opened = null;   // Promise of {store, reason}
let held = null;     // {modelId, release} of the model this worker holds

export function openStore() {
  opened ??= ShardStore.open();
  return opened;
}

// spec: {name, size, blockSize, blocks (hex string or null), sources, signal, onBytes,
// attempts, backoffMs, useCache (false: neither read nor write OPFS)}
export async function getShard(spec) {
  const { store } = spec.useCache ? await openStore() : { store: null };
  if (!store) return fetchShard(null, spec);
  // after (and before) any range fetch of the same shard: they share its partial file
  return withShard(spec.name, () => fetchShard(store, spec));
}

// One byte range of a shard (an MoE expert), verified by block and cached by block (range.js).
// spec: {name, size, blockSize, blocks (hex string), offset, length, sources, signal, useCache}
export async function getRange(spec) {
  const { store } = spec.useCache ? await openStore() : { store: null };
  if (!store) return fetchRange(null, spec);
  return withShard(spec.name, () => fetchRange(store, spec));
}

// Quota figures; `persisted` is readable here, but only the page can request persist().
export async function estimate() {
  const { quota = 0, usage = 0 } = (await navigator.storage?.estimate?.()) ?? {};
  const persisted = (await navigator.storage?.persisted?.()) ?? false;
  return { quota, usage, persisted };
}

// Hold a shared Web Lock naming this model until the next call (one model per worker).
// Where storage is blocked, Web Locks refuse too; then there is no cache to protect.
export async function holdModel(modelId) {
  if (held?.modelId === modelId) return;
  releaseModel();
  if (!navigator.locks) return;
  let release;
  const gate = new Promise((resolve) => { release = resolve; });
  try {
    await new Promise((granted, refused) => {
      navigator.locks.request(LOCK_PREFIX + modelId, { mode: 'shared' },
        () => { granted(); return gate; }).catch(refused);
    });
  } catch {
    return;
  }
  held = { modelId, release };
}

// Also closes the partial files kept open for the model's range fetches (sync access
// handles are exclusive: another tab may want them once no model here uses them).
export function releaseModel() {
  held?.release();
  held = null;
  opened?.then(({ store }) => store && closeHeld(store));
}

// Stop marking `modelId` as in use by this worker (the page asked to delete it).
export function releaseIfHeld(modelId) {
  if (held?.modelId === modelId) releaseModel();
}

// Model ids that any tab or worker of this origin holds right now.
export async function modelsInUse() {
  const mine = held ? [held.modelId] : [];
  if (!navigator.locks) return mine;
  const { held: locks = [] } = await navigator.locks.query().catch(() => ({ held: [] }));
  if (mine.length) locks.push({ name: LOCK_PREFIX + mine[0] });
  return [...new Set(locks.map((l) => l.name).filter((n) => n.startsWith(LOCK_PREFIX))
    .map((n) => n.slice(LOCK_PREFIX.length)))];
}

// Encodes a prepared dispatch plan into one compute pass with a single call from Python,
// so a forward pass costs one FFI crossing instead of three per dispatch.

export class PlanRunner {
  // dispatches: [{pipeline, bindGroup, x, y, z, label}] prepared once per model.
  constructor(dispatches) {
    this.dispatches = dispatches.map((d) => ({ ...d }));
  }

  // Dispatches [start, end) (all by default) in one compute pass; `timestampWrites` (a
  // diagnostic) times the pass.
  encode(encoder, start = 0, end = this.dispatches.length, timestampWrites = undefined) {
    const pass = encoder.beginComputePass(timestampWrites ? { timestampWrites } : undefined);
    for (let i = start; i < end; i++) {
      const d = this.dispatches[i];
      pass.setPipeline(d.pipeline);
      pass.setBindGroup(0, d.bindGroup);
      pass.dispatchWorkgroups(d.x, d.y, d.z);
    }
    pass.end();
  }

  // GPU time of dispatches [0, end) in one compute pass, as production encodes them (ms,
  // averaged over `repeats` runs): against the per-dispatch sum it shows what overlap and
  // the gaps between dispatches add.
  async passMs(device, repeats, end = this.dispatches.length) {
    const stamps = new TimestampPairs(device, 1);
    let total = 0;
    for (let r = 0; r < repeats; r++) {
      const encoder = device.createCommandEncoder();
      this.encode(encoder, 0, end, stamps.writes(0));
      stamps.resolve(encoder);
      device.queue.submit([encoder.finish()]);
      total += (await stamps.read())[0];
    }
    stamps.destroy();
    return total / repeats;
  }

  // GPU time of each dispatch (ms, averaged over `repeats` runs of the whole plan), measured
  // with timestamp queries around a pass per dispatch: a profile, not the production path.
  async profile(device, repeats) {
    const n = this.dispatches.length;
    const stamps = new TimestampPairs(device, n);
    const totals = new Float64Array(n);
    for (let r = 0; r < repeats; r++) {
      const encoder = device.createCommandEncoder();
      for (let i = 0; i < n; i++) this.encode(encoder, i, i + 1, stamps.writes(i));
      stamps.resolve(encoder);
      device.queue.submit([encoder.finish()]);
      (await stamps.read()).forEach((ms, i) => { totals[i] += ms; });
    }
    stamps.destroy();
    return this.dispatches.map((d, i) => ({ label: d.label, ms: totals[i] / repeats }));
  }
}

// Timestamp queries for `pairs` spans of GPU time, each from the beginning of one compute
// pass to the end of the same or a later one (diagnostics): passes take writes(i, ...), the
// last encoder resolve(), and once it is submitted read() gives each span in ms.
export class TimestampPairs {
  constructor(device, pairs) {
    this.pairs = pairs;
    this.querySet = device.createQuerySet({ type: 'timestamp', count: 2 * pairs });
    this.resolved = device.createBuffer({
      size: 16 * pairs, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
    this.readback = device.createBuffer({
      size: 16 * pairs, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  }

  // A pass's timestampWrites: it begins span i, ends it, or both.
  writes(i, begins = true, ends = true) {
    const writes = { querySet: this.querySet };
    if (begins) writes.beginningOfPassWriteIndex = 2 * i;
    if (ends) writes.endOfPassWriteIndex = 2 * i + 1;
    return writes;
  }

  resolve(encoder) {
    encoder.resolveQuerySet(this.querySet, 0, 2 * this.pairs, this.resolved, 0);
    encoder.copyBufferToBuffer(this.resolved, 0, this.readback, 0, 16 * this.pairs);
  }

  async read() {
    await this.readback.mapAsync(GPUMapMode.READ);
    const stamps = new BigUint64Array(this.readback.getMappedRange());
    const ms = Array.from({ length: this.pairs },
      (_, i) => Number(stamps[2 * i + 1] - stamps[2 * i]) / 1e6);
    this.readback.unmap();
    return ms;
  }

  destroy() {
    this.querySet.destroy();
    this.resolved.destroy();
    this.readback.destroy();
  }
}

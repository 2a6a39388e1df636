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
    const querySet = device.createQuerySet({ type: 'timestamp', count: 2 });
    const resolved = device.createBuffer({
      size: 16, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
    const readback = device.createBuffer({
      size: 16, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    let total = 0;
    for (let r = 0; r < repeats; r++) {
      const encoder = device.createCommandEncoder();
      const pass = encoder.beginComputePass({ timestampWrites: {
        querySet, beginningOfPassWriteIndex: 0, endOfPassWriteIndex: 1 } });
      for (const d of this.dispatches.slice(0, end)) {
        pass.setPipeline(d.pipeline);
        pass.setBindGroup(0, d.bindGroup);
        pass.dispatchWorkgroups(d.x, d.y, d.z);
      }
      pass.end();
      encoder.resolveQuerySet(querySet, 0, 2, resolved, 0);
      encoder.copyBufferToBuffer(resolved, 0, readback, 0, 16);
      device.queue.submit([encoder.finish()]);
      await readback.mapAsync(GPUMapMode.READ);
      const stamps = new BigUint64Array(readback.getMappedRange());
      total += Number(stamps[1] - stamps[0]) / 1e6;
      readback.unmap();
    }
    querySet.destroy();
    resolved.destroy();
    readback.destroy();
    return total / repeats;
  }

  // GPU time of each dispatch (ms, averaged over `repeats` runs of the whole plan), measured
  // with timestamp queries around a pass per dispatch: a profile, not the production path.
  async profile(device, repeats) {
    const n = this.dispatches.length;
    const querySet = device.createQuerySet({ type: 'timestamp', count: 2 * n });
    const resolved = device.createBuffer({
      size: 16 * n, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
    const readback = device.createBuffer({
      size: 16 * n, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    const totals = new Float64Array(n);
    for (let r = 0; r < repeats; r++) {
      const encoder = device.createCommandEncoder();
      this.dispatches.forEach((d, i) => {
        const pass = encoder.beginComputePass({ timestampWrites: {
          querySet, beginningOfPassWriteIndex: 2 * i, endOfPassWriteIndex: 2 * i + 1 } });
        pass.setPipeline(d.pipeline);
        pass.setBindGroup(0, d.bindGroup);
        pass.dispatchWorkgroups(d.x, d.y, d.z);
        pass.end();
      });
      encoder.resolveQuerySet(querySet, 0, 2 * n, resolved, 0);
      encoder.copyBufferToBuffer(resolved, 0, readback, 0, 16 * n);
      device.queue.submit([encoder.finish()]);
      await readback.mapAsync(GPUMapMode.READ);
      const stamps = new BigUint64Array(readback.getMappedRange());
      for (let i = 0; i < n; i++) totals[i] += Number(stamps[2 * i + 1] - stamps[2 * i]) / 1e6;
      readback.unmap();
    }
    querySet.destroy();
    resolved.destroy();
    readback.destroy();
    return this.dispatches.map((d, i) => ({ label: d.label, ms: totals[i] / repeats }));
  }
}

// Encodes a prepared dispatch plan into one compute pass with a single call from Python,
// so a forward pass costs one FFI crossing instead of three per dispatch.

export class PlanRunner {
  // dispatches: [{pipeline, bindGroup, x, y, z}] prepared once per model.
  constructor(dispatches) {
    this.dispatches = dispatches.map((d) => ({ ...d }));
  }

  encode(encoder, first = 0, end = this.dispatches.length) {
    const pass = encoder.beginComputePass();
    for (let i = first; i < end; i++) {
      const d = this.dispatches[i];
      pass.setPipeline(d.pipeline);
      pass.setBindGroup(0, d.bindGroup);
      pass.dispatchWorkgroups(d.x, d.y, d.z);
    }
    pass.end();
  }
}

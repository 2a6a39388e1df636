// Counts the bytes of the GPU buffers this worker creates and destroys, independently of
// DOPPLER's own books (py/doppler/gpu/budget.py), so a test can check that a budget held.
// Installed on request (debug.gpuMeter) by wrapping the WebGPU prototypes; off otherwise.

const meter = { installed: false, live: 0, peak: 0, created: 0, sizes: new WeakMap() };

export function install() {
  if (meter.installed) return;
  const create = GPUDevice.prototype.createBuffer;
  const destroy = GPUBuffer.prototype.destroy;
  GPUDevice.prototype.createBuffer = function createBuffer(descriptor) {
    const buffer = create.call(this, descriptor);
    meter.sizes.set(buffer, buffer.size);
    meter.live += buffer.size;
    meter.created += buffer.size;
    meter.peak = Math.max(meter.peak, meter.live);
    return buffer;
  };
  GPUBuffer.prototype.destroy = function destroyBuffer() {
    const size = meter.sizes.get(this);
    if (size !== undefined) {
      meter.sizes.delete(this);
      meter.live -= size;
    }
    return destroy.call(this);
  };
  meter.installed = true;
}

// {live, peak, created} bytes since install; `resetPeak` starts a new peak from now.
export function reading(resetPeak = false) {
  const out = { live: meter.live, peak: meter.peak, created: meter.created };
  if (resetPeak) meter.peak = meter.live;
  return out;
}

// Main-thread half of the main-thread <-> worker protocol (the other half is
// py/doppler/worker/protocol.py). Requests carry ids; a request streams zero or more
// events and then ends with exactly one `done` (its result) or one `error` ({code, message}).
// Cancellation: the caller's AbortSignal sends {type: 'cancel', id}.

export class DopplerError extends Error {
  constructor(code, message) {
    super(message);
    this.name = 'DopplerError';
    this.code = code;
  }
}

class EventQueue {
  // An async iterator fed by the worker: events, then a final {type: 'done', ...result}.
  constructor() { this.items = []; this.waiters = []; this.closed = false; }
  push(item) {
    const waiter = this.waiters.shift();
    if (waiter) waiter(item); else this.items.push(item);
  }
  next() {
    if (this.items.length) return Promise.resolve(this.items.shift());
    if (this.closed) return Promise.resolve({ done: true, value: undefined });
    return new Promise((resolve) => this.waiters.push(resolve));
  }
  close() { this.closed = true; for (const w of this.waiters.splice(0)) w({ done: true }); }
}

export class WorkerClient {
  constructor(worker) {
    this.worker = worker;
    this.nextId = 1;
    this.calls = new Map();
  }

  // Route one message from the worker; returns false for messages not about a request.
  receive(message) {
    const call = this.calls.get(message.id);
    if (!call) return false;
    if (message.type === 'event') call.onEvent(message.event);
    else if (message.type === 'done') { this.finish(message.id); call.resolve(message.result); }
    else if (message.type === 'error') {
      this.finish(message.id);
      call.reject(new DopplerError(message.error.code, message.error.message));
    }
    return true;
  }

  finish(id) {
    const call = this.calls.get(id);
    this.calls.delete(id);
    call?.cleanup();
  }

  // Fail every open request (the worker died or was terminated).
  failAll(code, message) {
    for (const [id, call] of [...this.calls]) {
      this.finish(id);
      call.reject(new DopplerError(code, message));
    }
  }

  // Start a request; `onEvent` sees streaming events; resolves with the final result.
  request(kind, payload = {}, { signal, onEvent = () => {}, transfer = [] } = {}) {
    if (signal?.aborted) return Promise.reject(new DopplerError('aborted', 'aborted before start'));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const onAbort = () => this.worker.postMessage({ type: 'cancel', id });
      signal?.addEventListener('abort', onAbort, { once: true });
      this.calls.set(id, {
        resolve, reject, onEvent,
        cleanup: () => signal?.removeEventListener('abort', onAbort),
      });
      this.worker.postMessage({ type: 'request', id, kind, payload }, transfer);
    });
  }

  // Start a request and iterate its events; the last item is {type: 'done', ...result}.
  // Leaving the iteration early (`break`, which calls return()) cancels the request, as the
  // caller's AbortSignal does: nothing goes on running in the worker for nobody.
  stream(kind, payload = {}, options = {}) {
    const queue = new EventQueue();
    const stop = new AbortController();
    const signal = options.signal ? AbortSignal.any([options.signal, stop.signal]) : stop.signal;
    const result = this.request(kind, payload, {
      ...options, signal, onEvent: (event) => queue.push({ done: false, value: event }),
    });
    result.then(
      (value) => { queue.push({ done: false, value: { type: 'done', ...value } }); queue.close(); },
      (error) => { queue.push(Promise.reject(error)); queue.close(); },
    );
    result.catch(() => {});
    const iterator = {
      next: () => queue.next(),
      return: () => {
        stop.abort();
        queue.close();
        return Promise.resolve({ done: true, value: undefined });
      },
    };
    return { [Symbol.asyncIterator]() { return iterator; } };
  }
}

// The weir SDK for JavaScript: stream operators as per-record functions, registered by name.
//
// `weir build --language js -o op.wasm app.js` puts this module before the author's (so `weir`
// is in scope there, without an import) and makes the component with componentize-js (npm:
// @bytecodealliance/componentize-js 0.23.0). The host calls the batched export: a batch of
// records in the record framing crosses the boundary in one call and is decoded here, so per
// record only the author's function runs in the interpreter.
//
//     weir.flatMap("tokenize", (line) => line.toLowerCase().split(/[^\p{L}\p{N}]+/u), { text: true });
//
// An exception in an operator fails the subtask with its name, message and where it was
// thrown; `throw new weir.OperatorError("...")` fails it with the message alone.

import { emit as hostEmit } from "weir:stream/output@0.2.3";
import {
  declare as declareState,
  valueGet,
  valueSet,
  valueClear,
} from "weir:stream/keyed-state@0.2.3";
import {
  register as registerTimer,
  currentWatermark,
  currentProcessingTime,
} from "weir:stream/timers@0.2.3";
import { log as hostLog } from "weir:stream/logging@0.2.3";

const FLAG_TIMESTAMP = 1;
const FLAG_KEY = 2;
const FLAG_BLOCK = 4;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

class OperatorError extends Error {}
class ConfigError extends OperatorError {}

function asBytes(value) {
  if (value instanceof Uint8Array) return value;
  if (typeof value === "string") return encoder.encode(value);
  if (ArrayBuffer.isView(value)) return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  throw new TypeError(
    `records are Uint8Array or string, not ${Object.prototype.toString.call(value)}`,
  );
}

/** A framed batch being written: records back to back, grown by doubling. */
class Writer {
  constructor() {
    this.buf = new Uint8Array(4096);
    this.view = new DataView(this.buf.buffer);
    this.len = 0;
  }
  reserve(n) {
    if (this.buf.length - this.len >= n) return;
    let cap = this.buf.length * 2;
    while (cap - this.len < n) cap *= 2;
    const grown = new Uint8Array(cap);
    grown.set(this.buf.subarray(0, this.len));
    this.buf = grown;
    this.view = new DataView(grown.buffer);
  }
  record(value, key, timestamp) {
    const hasTs = timestamp !== undefined && timestamp !== null;
    const hasKey = key !== undefined && key !== null;
    const body = 1 + (hasTs ? 8 : 0) + (hasKey ? 4 + key.length : 0) + value.length;
    this.reserve(4 + body);
    const v = this.view;
    let p = this.len;
    v.setUint32(p, body, true);
    this.buf[p + 4] = (hasTs ? FLAG_TIMESTAMP : 0) | (hasKey ? FLAG_KEY : 0);
    p += 5;
    if (hasTs) {
      v.setBigInt64(p, BigInt(timestamp), true);
      p += 8;
    }
    if (hasKey) {
      v.setUint32(p, key.length, true);
      p += 4;
      this.buf.set(key, p);
      p += key.length;
    }
    this.buf.set(value, p);
    this.len = p + value.length;
  }
  take() {
    return this.buf.slice(0, this.len);
  }
}

class Malformed extends Error {
  constructor(index, offset, message) {
    super(`the host sent a malformed batch at byte ${offset}: ${message}`);
    this.index = index;
  }
}

/** Calls `each(value, key, timestamp)` for every record of a framed batch, blocks' entries
 * included; values and keys are views into `batch`. */
function readBatch(batch, each) {
  const view = new DataView(batch.buffer, batch.byteOffset, batch.byteLength);
  const end = batch.length;
  let pos = 0;
  let index = 0;
  while (pos < end) {
    if (end - pos < 5) throw new Malformed(index, pos, "a record header runs past the batch");
    const body = view.getUint32(pos, true);
    const flags = batch[pos + 4];
    const stop = pos + 4 + body;
    if (body < 1 || stop > end) throw new Malformed(index, pos, "a record's length runs past the batch");
    if (flags & ~7) throw new Malformed(index, pos, "a record sets an unknown flag");
    let p = pos + 5;
    if (flags & FLAG_BLOCK) {
      let keyLen = 0;
      if (flags & FLAG_KEY) {
        keyLen = view.getUint32(p, true);
        p += 4;
      }
      const valueLen = view.getUint32(p, true);
      p += 4;
      const hasTs = flags & FLAG_TIMESTAMP;
      const entry = (hasTs ? 8 : 0) + keyLen + valueLen;
      if (entry === 0 || (stop - p) % entry !== 0) {
        throw new Malformed(index, pos, "a block's entries do not fill it");
      }
      for (let q = p; q < stop; q += entry) {
        let r = q;
        let timestamp;
        if (hasTs) {
          timestamp = Number(view.getBigInt64(r, true));
          r += 8;
        }
        const key = flags & FLAG_KEY ? batch.subarray(r, r + keyLen) : undefined;
        r += keyLen;
        each(batch.subarray(r, r + valueLen), key, timestamp, index++);
      }
    } else {
      let timestamp;
      let key;
      if (flags & FLAG_TIMESTAMP) {
        timestamp = Number(view.getBigInt64(p, true));
        p += 8;
      }
      if (flags & FLAG_KEY) {
        const keyLen = view.getUint32(p, true);
        p += 4;
        key = batch.subarray(p, p + keyLen);
        p += keyLen;
      }
      if (p > stop) throw new Malformed(index, pos, "a record's flags announce more than its body holds");
      each(batch.subarray(p, stop), key, timestamp, index++);
    }
    pos = stop;
  }
}

/** Keyed value state, held and checkpointed by the host, scoped to the current key. */
class ValueState {
  constructor(id) {
    this.id = id;
  }
  get(ctx) {
    return valueGet(this.id, ctx.stateKey());
  }
  set(ctx, value) {
    valueSet(this.id, ctx.stateKey(), asBytes(value));
  }
  clear(ctx) {
    valueClear(this.id, ctx.stateKey());
  }
}

/** The call in progress: the record's key and time, emitting, state and timers. */
class Context {
  constructor(out) {
    this.out = out;
    this.key = undefined;
    this.timestamp = undefined;
  }
  keyText() {
    return this.key === undefined ? undefined : decoder.decode(this.key);
  }
  emit(value, key, timestamp) {
    const ts = timestamp === undefined ? this.timestamp : timestamp;
    this.out.record(asBytes(value), key === undefined ? undefined : asBytes(key), ts);
  }
  valueState(name) {
    return new ValueState(declareState(name, "value"));
  }
  registerTimer(domain, timestamp) {
    registerTimer(domain, this.stateKey(), BigInt(timestamp));
  }
  currentWatermark() {
    return Number(currentWatermark());
  }
  processingTime() {
    return Number(currentProcessingTime());
  }
  stateKey() {
    if (this.key === undefined) throw new OperatorError("keyed state and timers need a keyed record");
    return this.key;
  }
}

/** Records emitted outside a batch go straight to the host. */
class Direct {
  record(value, key, timestamp) {
    hostEmit(value, key, timestamp === undefined || timestamp === null ? undefined : BigInt(timestamp));
  }
}

const registry = new Map();
let planFn;
const instance = { op: undefined, name: "", text: false, keyed: false, config: new Map() };

function register(name, factory, options) {
  if (registry.has(name)) throw new Error(`operator \`${name}\` is registered twice`);
  registry.set(name, { factory, text: !!(options && options.text), keyed: !!(options && options.keyed) });
}

function fn(kind) {
  return (name, f, options) => register(name, () => ({ kind, f }), options);
}

/** The WIT error of an exception. */
function toWit(e, index, records) {
  if (e && typeof e === "object" && typeof e.tag === "string" && "val" in e) return e;
  const at = records > 1 ? `record ${index}: ` : "";
  if (e instanceof ConfigError) return { tag: "config", val: e.message };
  if (e instanceof OperatorError) return { tag: "failed", val: at + e.message };
  if (e instanceof Malformed) return { tag: "decode", val: { recordIndex: e.index, message: e.message } };
  if (e instanceof Error) {
    const where = (e.stack || "").split("\n").find((l) => l.trim()) || "";
    return { tag: "failed", val: `${at}${e.name}: ${e.message}${where ? ` (at ${where.trim()})` : ""}` };
  }
  return { tag: "failed", val: at + String(e) };
}

function guarded(f) {
  try {
    return f();
  } catch (e) {
    throw toWit(e, 0, 1);
  }
}

function runBatch(records, second, single) {
  const op = instance.op;
  if (op === undefined) throw { tag: "failed", val: "operator called before a successful open" };
  const out = new Writer();
  const ctx = new Context(out);
  const text = instance.text;
  let index = 0;
  try {
    if (op.kind !== undefined && !second) {
      const f = op.f;
      const kind = op.kind;
      readBatch(records, (value, key, timestamp, i) => {
        index = i;
        const v = text ? decoder.decode(value) : value;
        if (kind === "map") out.record(asBytes(f(v)), undefined, timestamp);
        else if (kind === "filter") {
          if (f(v)) out.record(value, key, timestamp);
        } else if (kind === "flatMap") {
          for (const item of f(v)) out.record(asBytes(item), undefined, timestamp);
        } else out.record(value, asBytes(f(v)), timestamp);
      });
    } else {
      const handle = second ? op.processSecond : op.process;
      if (typeof handle !== "function") throw new OperatorError(`operator \`${instance.name}\` takes no such input`);
      readBatch(records, (value, key, timestamp, i) => {
        index = i;
        if (instance.keyed && key === undefined) {
          throw new OperatorError(
            `operator \`${instance.name}\` is keyed, but a record without a key reached it (is the edge into it \`hash\`?)`,
          );
        }
        ctx.key = key;
        ctx.timestamp = timestamp;
        handle.call(op, ctx, text ? decoder.decode(value) : value);
      });
    }
  } catch (e) {
    // A failure in a batch names the record's place in it.
    throw toWit(e, index, single ? 1 : 2);
  }
  return out.take();
}

function direct(f) {
  const ctx = new Context(new Direct());
  guarded(() => f(ctx));
}

const weir = {
  OperatorError,
  ConfigError,
  EVENT_TIME: "event-time",
  PROCESSING_TIME: "processing-time",
  /** Each value becomes `f(value)`; the key is dropped, the time kept. */
  map: fn("map"),
  /** Records whose value `f` passes go on as they are. */
  filter: fn("filter"),
  /** Each value becomes the values `f` returns (any iterable). */
  flatMap: fn("flatMap"),
  /** Each record goes on keyed by `f(value)`. */
  keyBy: fn("keyBy"),
  /** An object with `process(ctx, value)` and optionally `open`, `processSecond`, `onTimer`,
   * `onWatermark`, `close`, `snapshot`, `restore`; `factory` makes one per instance. */
  process: (name, factory, options) => register(name, factory, options),
  /** As `process`, over a keyed stream: records without a key are refused. */
  keyedProcess: (name, factory, options) => register(name, factory, { ...options, keyed: true }),
  /** The component's job: `f(args)` (an object of `--arg`s) returns the manifest (TOML). */
  plan: (f) => {
    planFn = f;
  },
  config: (key) => instance.config.get(key),
  log: (message) => hostLog("info", String(message)),
};

export const operator = {
  open(context) {
    const entry = registry.get(context.operatorName);
    if (entry === undefined) throw { tag: "unknown-operator", val: [...registry.keys()].join(", ") };
    instance.name = context.operatorName;
    instance.text = entry.text;
    instance.keyed = entry.keyed;
    instance.config = new Map(context.config);
    const op = guarded(() => entry.factory());
    if (typeof op.open === "function") direct((ctx) => op.open(ctx));
    instance.op = op;
  },
  processElement(value, key, timestamp) {
    const w = new Writer();
    w.record(value, key, timestamp === undefined ? undefined : Number(timestamp));
    const out = runBatch(w.take(), false, true);
    readBatch(out, (v, k, t) => new Direct().record(v, k, t));
  },
  onWatermark(watermark) {
    const op = instance.op;
    if (typeof op.onWatermark === "function") {
      direct((ctx) => {
        ctx.timestamp = Number(watermark);
        op.onWatermark(ctx, Number(watermark));
      });
    }
  },
  onTimer(domain, key, timestamp) {
    const op = instance.op;
    if (typeof op.onTimer === "function") {
      direct((ctx) => {
        ctx.key = key;
        ctx.timestamp = Number(timestamp);
        op.onTimer(ctx, domain, Number(timestamp));
      });
    }
  },
  snapshotState() {
    const op = instance.op;
    return typeof op.snapshot === "function" ? asBytes(guarded(() => op.snapshot())) : new Uint8Array(0);
  },
  restoreState(state) {
    const op = instance.op;
    if (typeof op.restore === "function") guarded(() => op.restore(state));
  },
  close() {
    const op = instance.op;
    if (typeof op.close === "function") direct((ctx) => op.close(ctx));
  },
};

export const batch = {
  processBatch(records) {
    return runBatch(records, false, false);
  },
};

export const twoInput = {
  processElementSecond(value, key, timestamp) {
    const w = new Writer();
    w.record(value, key, timestamp === undefined ? undefined : Number(timestamp));
    const out = runBatch(w.take(), true, true);
    readBatch(out, (v, k, t) => new Direct().record(v, k, t));
  },
  processBatchSecond(records) {
    return runBatch(records, true, false);
  },
};

export const jobPlan = {
  plan(args) {
    if (planFn === undefined) return undefined;
    try {
      return planFn(Object.fromEntries(args));
    } catch (e) {
      throw String(e && e.message ? e.message : e);
    }
  },
  operators() {
    return [...registry.keys()];
  },
};

// ---- the author's module follows ----

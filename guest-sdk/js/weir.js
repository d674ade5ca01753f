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

import { emit as hostEmit, emitBatch } from "weir:stream/output@0.2.3";

// Past this much output, a batched call hands what it has to the host (`output.emit-batch`), so
// fan-out is bounded by the network's buffers, not by one call's output limit.
const FLUSH_BYTES = 256 << 10;
import {
  declare as declareState,
  valueGet,
  valueSet,
  valueClear,
  valueWriteBatch,
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
// Text that is not UTF-8 is an error (as in Python), not replacement characters.
const decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

const I64_MAX = 9223372036854775807n;
const I64_MIN = -9223372036854775808n;

/** A timestamp (a number of ms, or a BigInt) as the i64 the host takes: the watermark at the
 * end of input, the largest i64, is no exact Number, so it is clamped rather than wrapped. */
function toI64(ts) {
  if (typeof ts === "bigint") return ts;
  if (ts >= 9223372036854775807) return I64_MAX;
  if (ts <= -9223372036854775808) return I64_MIN;
  return BigInt(Math.trunc(ts));
}

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
    if (this.buf.length - this.len < 4 + body) this.reserve(4 + body);
    const v = this.view;
    let p = this.len;
    v.setUint32(p, body, true);
    this.buf[p + 4] = (hasTs ? FLAG_TIMESTAMP : 0) | (hasKey ? FLAG_KEY : 0);
    p += 5;
    if (hasTs) {
      v.setBigInt64(p, toI64(timestamp), true);
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
  /** A record of `value` alone (a Uint8Array): what most emits are, framed without the
   * general case's tests. */
  value(value) {
    const n = value.length;
    const p = this.len;
    if (this.buf.length - p < n + 5) this.reserve(n + 5);
    this.view.setUint32(p, n + 1, true);
    this.buf[p + 4] = 0;
    this.buf.set(value, p + 5);
    this.len = p + 5 + n;
  }
  take() {
    return this.buf.slice(0, this.len);
  }
  /** Hands the records so far to the host once they pass FLUSH_BYTES. */
  flushIfFull() {
    if (this.len < FLUSH_BYTES) return;
    emitBatch(this.buf.subarray(0, this.len));
    this.len = 0;
  }
}

class Malformed extends Error {
  constructor(index, offset, message) {
    super(`the host sent a malformed batch at byte ${offset}: ${message}`);
    this.index = index;
  }
}

/** Calls `each(value, key, timestamp)` for every record of a framed batch, blocks' entries
 * included; values and keys are views into `batch`. A batch that is part of a larger one
 * names its errors' places in that one: it starts at byte `base` and record `first`. */
function readBatch(batch, each, base = 0, first = 0) {
  const view = new DataView(batch.buffer, batch.byteOffset, batch.byteLength);
  const end = batch.length;
  let pos = 0;
  let index = first;
  while (pos < end) {
    if (end - pos < 5) throw new Malformed(index, base + pos, "a record header runs past the batch");
    const body = view.getUint32(pos, true);
    const flags = batch[pos + 4];
    const stop = pos + 4 + body;
    if (body < 1 || stop > end) throw new Malformed(index, base + pos, "a record's length runs past the batch");
    if (flags & ~7) throw new Malformed(index, base + pos, "a record sets an unknown flag");
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
        throw new Malformed(index, base + pos, "a block's entries do not fill it");
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
      if (p > stop) throw new Malformed(index, base + pos, "a record's flags announce more than its body holds");
      each(batch.subarray(p, stop), key, timestamp, index++);
    }
    pos = stop;
  }
}

// A write-back cache of keyed value state: a call into the host costs far more than a Map
// lookup, so reads seen once are served from here, writes stay here, and the dirty entries go to
// the host in one `valueWriteBatch` per state before `snapshotState` returns, at `close`, and
// when the cache outgrows its bound. The host reads keyed state only when it snapshots it.
const CACHE_ENTRIES = 1 << 16;
const MAX_CACHED_KEY = 1024;
const MAX_CACHED_VALUE = 64 << 10;
/** state id -> Map(key as latin1 string -> { key, value (undefined: cleared), dirty }); each
 * ValueState holds its own Map too, so a lookup is one Map get. */
const cache = new Map();
let cached = 0;
// The entry the last `get` of the current record found, and its state: the `set` that mostly
// follows finds it here. Forgotten at every record and whenever the cache is emptied.
let lastState;
let lastEntry;

/** Eight-byte keys below 2^53 (integers, mostly) as a Number: a Map finds a number faster
 * than a string the interpreter must first build. */
const TWO_TO_32 = 4294967296;
const NUMBER_KEY_HIGH = 0x200000;

/** A key's bytes as a Map key: eight bytes below 2^53 as a number, else a string of char
 * codes 0-255 (one call, no loop in JS). One key always maps to the same Map key, and
 * different keys to different ones (a number only ever stands for eight bytes). */
function cacheKey(key) {
  if (key.length === 8) {
    const view = new DataView(key.buffer, key.byteOffset, 8);
    const high = view.getUint32(4, true);
    if (high < NUMBER_KEY_HIGH) return high * TWO_TO_32 + view.getUint32(0, true);
  }
  return String.fromCharCode.apply(null, key);
}

/** A key as the cache may keep it: a view into a larger buffer (a batch) is copied, so the
 * cache does not hold whole batches alive; an array of its own is kept as it is. */
function owned(bytes) {
  return bytes.byteLength === bytes.buffer.byteLength ? bytes : bytes.slice();
}

function flushState() {
  for (const [id, entries] of cache) {
    const sets = new Writer();
    const clears = new Writer();
    let any = false;
    for (const entry of entries.values()) {
      if (!entry.dirty) continue;
      any = true;
      entry.dirty = false;
      if (entry.value === undefined) clears.record(new Uint8Array(0), entry.key, undefined);
      else sets.record(entry.value, entry.key, undefined);
    }
    if (any) valueWriteBatch(id, sets.take(), clears.take());
  }
  if (cached > CACHE_ENTRIES) {
    // Emptied in place: each ValueState holds its Map.
    for (const entries of cache.values()) entries.clear();
    cached = 0;
    lastState = undefined;
  }
}

function entriesOf(id) {
  let entries = cache.get(id);
  if (entries === undefined) {
    entries = new Map();
    cache.set(id, entries);
  }
  return entries;
}

/** The error of keyed state used outside a keyed record. (The key checks around it are written
 * out where they are needed rather than called: the interpreter pays per call.) */
function noKey() {
  return new OperatorError("keyed state and timers need a keyed record");
}

/** Keyed value state, held and checkpointed by the host, scoped to the current key. */
class ValueState {
  constructor(id) {
    this.id = id;
    this.entries = entriesOf(id);
  }
  get(ctx) {
    const key = ctx.key;
    if (key === undefined) throw noKey();
    if (key.length > MAX_CACHED_KEY) return valueGet(this.id, key);
    let k = ctx.keyString;
    if (k === undefined) k = ctx.keyString = cacheKey(key);
    let entry = this.entries.get(k);
    if (entry === undefined) {
      const value = valueGet(this.id, key);
      if (cached >= CACHE_ENTRIES) flushState();
      entry = { key: owned(key), value, dirty: false };
      this.entries.set(k, entry);
      cached++;
    }
    lastState = this;
    lastEntry = entry;
    return entry.value;
  }
  set(ctx, value) {
    const key = ctx.key;
    if (key === undefined) throw noKey();
    const bytes = value instanceof Uint8Array ? value : asBytes(value);
    if (lastState === this && bytes.length <= MAX_CACHED_VALUE) {
      // A copy: the author may reuse the array for the next record.
      lastEntry.value = bytes.slice();
      lastEntry.dirty = true;
      return;
    }
    const entries = this.entries;
    if (key.length > MAX_CACHED_KEY || bytes.length > MAX_CACHED_VALUE) {
      if (key.length <= MAX_CACHED_KEY && entries.delete(cacheKey(key))) cached--;
      // Another handle of this state may hold the deleted entry in the memo.
      lastState = undefined;
      valueSet(this.id, key, bytes);
      return;
    }
    let k = ctx.keyString;
    if (k === undefined) k = ctx.keyString = cacheKey(key);
    const entry = entries.get(k);
    if (entry !== undefined) {
      entry.value = bytes.slice();
      entry.dirty = true;
      return;
    }
    if (cached >= CACHE_ENTRIES) flushState();
    entries.set(k, { key: owned(key), value: bytes.slice(), dirty: true });
    cached++;
  }
  clear(ctx) {
    const key = ctx.key;
    if (key === undefined) throw noKey();
    if (lastState === this) lastState = undefined;
    if (key.length > MAX_CACHED_KEY) {
      valueClear(this.id, key);
      return;
    }
    const k = ctx.cacheKey();
    const entries = this.entries;
    const entry = entries.get(k);
    if (entry !== undefined) {
      entry.value = undefined;
      entry.dirty = true;
      return;
    }
    entries.set(k, { key: owned(key), value: undefined, dirty: true });
    cached++;
  }
}

/** The call in progress: the record's key and time, emitting, state and timers. */
class Context {
  constructor(out) {
    this.out = out;
    this.key = undefined;
    this.timestamp = undefined;
    this.keyString = undefined;
  }
  /** The current key as the state cache's Map key, made once per record. */
  cacheKey() {
    if (this.keyString === undefined) this.keyString = cacheKey(this.key);
    return this.keyString;
  }
  keyText() {
    return this.key === undefined ? undefined : decoder.decode(this.key);
  }
  emit(value, key, timestamp) {
    if (key === undefined && timestamp === undefined && this.timestamp === undefined && value instanceof Uint8Array) {
      this.out.value(value);
      return;
    }
    this.out.record(
      value instanceof Uint8Array ? value : asBytes(value),
      key === undefined ? undefined : asBytes(key),
      timestamp === undefined ? this.timestamp : timestamp,
    );
  }
  valueState(name) {
    return new ValueState(declareState(name, "value"));
  }
  registerTimer(domain, timestamp) {
    registerTimer(domain, this.stateKey(), toI64(timestamp));
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
  value(value) {
    hostEmit(value, undefined, undefined);
  }
  record(value, key, timestamp) {
    hostEmit(value, key, timestamp === undefined || timestamp === null ? undefined : toI64(timestamp));
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

/** The values of a batch whose records all lack key and time (views into it, no object per
 * record), or undefined for any other batch. */
function plainValues(batch) {
  const view = new DataView(batch.buffer, batch.byteOffset, batch.byteLength);
  const end = batch.length;
  const values = [];
  let pos = 0;
  while (pos < end) {
    if (end - pos < 5) return undefined;
    const body = view.getUint32(pos, true);
    const flags = batch[pos + 4];
    const stop = pos + 4 + body;
    if (body < 1 || stop > end || (flags & ~FLAG_BLOCK) !== 0) return undefined;
    if (flags & FLAG_BLOCK) {
      const width = view.getUint32(pos + 5, true);
      if (width === 0 || (stop - pos - 9) % width !== 0) return undefined;
      for (let q = pos + 9; q < stop; q += width) values.push(batch.subarray(q, q + width));
    } else {
      values.push(batch.subarray(pos + 5, stop));
    }
    pos = stop;
  }
  return values;
}

/** Values without key or time: one block when they share a width, records otherwise. */
function writeValues(values) {
  const out = new Writer();
  if (values.length === 0) return out.take();
  const width = values[0].length;
  let uniform = width > 0 && width <= 1 << 16;
  for (let i = 1; uniform && i < values.length; i++) uniform = values[i].length === width;
  if (!uniform) {
    for (let i = 0; i < values.length; i++) out.record(values[i], undefined, undefined);
    return out.take();
  }
  const body = 1 + 4 + width * values.length;
  out.reserve(4 + body);
  out.view.setUint32(0, body, true);
  out.buf[4] = FLAG_BLOCK;
  out.view.setUint32(5, width, true);
  // Indexed loops: the interpreter runs a for-of through the iterator protocol.
  const buf = out.buf;
  let p = 9;
  for (let i = 0; i < values.length; i++) {
    buf.set(values[i], p);
    p += width;
  }
  out.len = p;
  return out.take();
}

/** A map, filter or flat map over values without key or time: one call per value and nothing
 * else per value. */
function plainBatch(op, values) {
  const f = op.f;
  const text = instance.text;
  try {
    const inputs = text ? values.map((v) => decoder.decode(v)) : values;
    if (op.kind === "map") {
      // A call per value is what the interpreter pays most for: only the author's one.
      const results = new Array(inputs.length);
      for (let i = 0; i < inputs.length; i++) {
        const r = f(inputs[i]);
        results[i] = r instanceof Uint8Array ? r : asBytes(r);
      }
      return writeValues(results);
    }
    if (op.kind === "filter") return writeValues(values.filter((_, i) => f(inputs[i])));
    // A flat map's output goes through the general path, which hands it over as it grows.
    const out = new Writer();
    for (const v of inputs) {
      for (const item of f(v)) {
        out.record(asBytes(item), undefined, undefined);
        out.flushIfFull();
      }
    }
    return out.take();
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
          for (const item of f(v)) {
            out.record(asBytes(item), undefined, timestamp);
            out.flushIfFull();
          }
        } else out.record(value, asBytes(f(v)), timestamp);
      });
    } else {
      const handle = second ? op.processSecond : op.process;
      if (typeof handle !== "function") throw new OperatorError(`operator \`${instance.name}\` takes no such input`);
      const keyed = instance.keyed;
      const view = new DataView(records.buffer, records.byteOffset, records.byteLength);
      const end = records.length;
      let pos = 0;
      while (pos < end) {
        if (end - pos < 5) throw new Malformed(index, pos, "a record header runs past the batch");
        const body = view.getUint32(pos, true);
        const flags = records[pos + 4];
        const stop = pos + 4 + body;
        if (body < 1 || stop > end) throw new Malformed(index, pos, "a record's length runs past the batch");
        if (flags === (FLAG_BLOCK | FLAG_KEY) && !text) {
          if (body < 9) throw new Malformed(index, pos, "a block's header runs past its body");
          // Keyed entries without time, the common case: walked here, not through a callback
          // per record (a call costs the interpreter more than the rest of a record).
          const keyLen = view.getUint32(pos + 5, true);
          const valueLen = view.getUint32(pos + 9, true);
          const entry = keyLen + valueLen;
          if (entry === 0 || (stop - pos - 13) % entry !== 0) {
            throw new Malformed(index, pos, "a block's entries do not fill it");
          }
          ctx.timestamp = undefined;
          const numberKeys = keyLen === 8;
          for (let q = pos + 13; q < stop; q += entry) {
            ctx.key = records.subarray(q, q + keyLen);
            // As cacheKey has it, read from the batch's view.
            let k;
            if (numberKeys) {
              const high = view.getUint32(q + 4, true);
              if (high < NUMBER_KEY_HIGH) k = high * TWO_TO_32 + view.getUint32(q, true);
            }
            ctx.keyString = k;
          lastState = undefined;
            if (second) op.processSecond(ctx, records.subarray(q + keyLen, q + entry));
            else op.process(ctx, records.subarray(q + keyLen, q + entry));
            index++;
            if (out.len >= FLUSH_BYTES) out.flushIfFull();
          }
          pos = stop;
          continue;
        }
        const first = index;
        readBatch(records.subarray(pos, stop), (value, key, timestamp) => {
          if (keyed && key === undefined) {
            throw new OperatorError(
              `operator \`${instance.name}\` is keyed, but a record without a key reached it (is the edge into it \`hash\`?)`,
            );
          }
          ctx.key = key;
          ctx.keyString = undefined;
          lastState = undefined;
          ctx.timestamp = timestamp;
          handle.call(op, ctx, text ? decoder.decode(value) : value);
          index++;
          out.flushIfFull();
        }, pos, first);
        pos = stop;
      }
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
    if (op === undefined) throw { tag: "failed", val: "operator called before a successful open" };
    if (typeof op.onWatermark === "function") {
      direct((ctx) => {
        ctx.timestamp = Number(watermark);
        op.onWatermark(ctx, Number(watermark));
      });
    }
  },
  onTimer(domain, key, timestamp) {
    const op = instance.op;
    if (op === undefined) throw { tag: "failed", val: "operator called before a successful open" };
    if (typeof op.onTimer === "function") {
      direct((ctx) => {
        ctx.key = key;
        ctx.keyString = undefined;
        lastState = undefined;
        ctx.timestamp = Number(timestamp);
        op.onTimer(ctx, domain, Number(timestamp));
      });
    }
  },
  snapshotState() {
    const op = instance.op;
    const own = typeof op.snapshot === "function" ? guarded(() => asBytes(op.snapshot())) : new Uint8Array(0);
    // The host snapshots keyed state right after this returns: it must hold every write.
    flushState();
    return own;
  },
  restoreState(state) {
    const op = instance.op;
    if (typeof op.restore === "function") guarded(() => op.restore(state));
  },
  close() {
    const op = instance.op;
    try {
      if (typeof op.close === "function") direct((ctx) => op.close(ctx));
    } finally {
      flushState();
    }
  },
};

export const batch = {
  processBatch(records) {
    const op = instance.op;
    if (op !== undefined && (op.kind === "map" || op.kind === "filter" || op.kind === "flatMap")) {
      const values = plainValues(records);
      if (values !== undefined) return plainBatch(op, values);
    }
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

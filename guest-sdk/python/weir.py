"""The weir SDK for Python: stream operators as per-record functions, registered by name.

    import weir

    @weir.flat_map("tokenize", text=True)
    def tokenize(line):
        return line.lower().split()

    @weir.keyed_process("count", text=True)
    class Count(weir.ProcessFunction):
        def open(self, ctx):
            self.count = ctx.value_state("count")

        def process(self, ctx, word):
            n = int(self.count.get(ctx) or b"0") + 1
            self.count.set(ctx, str(n).encode())
            ctx.emit(f"{ctx.key_text()} {n}")

`weir build --language python -o op.wasm app.py` makes the component (componentize-py from
PyPI). The host calls the batched export: a batch of records in the record framing crosses
the boundary in one call and is decoded here, so Python code runs per record, the boundary
once per batch. A component instance runs one operator, picked by the name the job gives it.

An exception in an operator fails the subtask with its type, message and the line it came from;
`raise weir.OperatorError("...")` fails it with the message alone.
"""

import struct
import traceback

from componentize_py_types import Err
from wit_world.imports import keyed_state, logging, output, timers, types

# `map` names the decorator below; the builtin is needed too.
_builtin_map = map

__all__ = [
    "OperatorError",
    "ConfigError",
    "ProcessFunction",
    "Context",
    "map",
    "filter",
    "flat_map",
    "key_by",
    "process",
    "keyed_process",
    "plan",
    "log",
    "EVENT_TIME",
    "PROCESSING_TIME",
]

EVENT_TIME = types.TimeDomain.EVENT_TIME
PROCESSING_TIME = types.TimeDomain.PROCESSING_TIME

_FLAG_TIMESTAMP = 1
_FLAG_KEY = 2
_FLAG_BLOCK = 4

# Past this much output, a batched call hands what it has to the host (`output.emit-batch`), so
# fan-out is bounded by the network's buffers, not by one call's output limit.
_FLUSH_BYTES = 256 << 10

_u32 = struct.Struct("<I")
_i64 = struct.Struct("<q")
_header = struct.Struct("<IB")


class OperatorError(Exception):
    """Fails the subtask with this message."""


class ConfigError(OperatorError):
    """The operator's configuration cannot be used."""


# A write-back cache of keyed value state: a call into the host costs far more than a dict
# lookup, so reads seen once are served from here, writes stay here, and the dirty entries go to
# the host in one `value-write-batch` per state before `snapshot-state` returns, at `close`, and
# when the cache outgrows its bound. The host reads keyed state only when it snapshots it.
_cache = {}
_dirty = set()
_CACHE_ENTRIES = 1 << 16
_MAX_CACHED_KEY = 1024
_MAX_CACHED_VALUE = 64 << 10


def _flush():
    by_state = {}
    for state_id, key in _dirty:
        by_state.setdefault(state_id, []).append(key)
    for state_id, keys in by_state.items():
        sets = bytearray()
        clears = bytearray()
        for key in keys:
            value = _cache[(state_id, key)]
            if value is None:
                _write(clears, b"", key, None)
            else:
                _write(sets, value, key, None)
        keyed_state.value_write_batch(state_id, bytes(sets), bytes(clears))
    _dirty.clear()
    if len(_cache) > _CACHE_ENTRIES:
        _cache.clear()


class ValueState:
    """Keyed value state, held and checkpointed by the host, scoped to the current key."""

    def __init__(self, state_id):
        self._id = state_id

    def get(self, ctx):
        key = ctx.key
        if key is None:
            raise OperatorError("keyed state and timers need a keyed record")
        entry = (self._id, key)
        try:
            return _cache[entry]
        except KeyError:
            value = keyed_state.value_get(self._id, key)
            if len(key) <= _MAX_CACHED_KEY:
                if len(_cache) >= _CACHE_ENTRIES:
                    _flush()
                    _cache.clear()
                _cache[entry] = value
            return value

    def set(self, ctx, value):
        key = ctx.key
        if key is None:
            raise OperatorError("keyed state and timers need a keyed record")
        if type(value) is not bytes:
            value = _as_bytes(value)
        if len(key) > _MAX_CACHED_KEY or len(value) > _MAX_CACHED_VALUE:
            _cache.pop((self._id, key), None)
            _dirty.discard((self._id, key))
            keyed_state.value_set(self._id, key, value)
            return
        if len(_cache) >= _CACHE_ENTRIES:
            _flush()
            _cache.clear()
        entry = (self._id, key)
        _cache[entry] = value
        _dirty.add(entry)

    def clear(self, ctx):
        key = ctx._state_key()
        if len(key) > _MAX_CACHED_KEY:
            keyed_state.value_clear(self._id, key)
            return
        if len(_cache) >= _CACHE_ENTRIES:
            _flush()
            _cache.clear()
        entry = (self._id, key)
        _cache[entry] = None
        _dirty.add(entry)


class Context:
    """The call in progress: the record's key and time, emitting, state and timers."""

    __slots__ = ("key", "timestamp", "_out", "_text")

    def __init__(self, out, text):
        self.key = None
        self.timestamp = None
        self._out = out
        self._text = text

    def key_text(self):
        """The current key as text."""
        return self.key.decode() if self.key is not None else None

    def emit(self, value, key=None, timestamp=None):
        """Emits `value` (bytes, or text), with `key`, and the current record's time unless
        `timestamp` is given."""
        if timestamp is None:
            timestamp = self.timestamp
        if type(value) is not bytes:
            value = _as_bytes(value)
        out = self._out
        if key is None and timestamp is None and type(out) is bytearray:
            out += _header.pack(1 + len(value), 0)
            out += value
            return
        _write(self._out, value, None if key is None else _as_bytes(key), timestamp)

    def value_state(self, name):
        """Declares (in `open`) the value state called `name`."""
        return ValueState(keyed_state.declare(name, keyed_state.StateKind.VALUE))

    def register_timer(self, domain, timestamp):
        timers.register(domain, self._state_key(), timestamp)

    def delete_timer(self, domain, timestamp):
        timers.delete(domain, self._state_key(), timestamp)

    def current_watermark(self):
        return timers.current_watermark()

    def processing_time(self):
        return timers.current_processing_time()

    def _state_key(self):
        if self.key is None:
            raise OperatorError("keyed state and timers need a keyed record")
        return self.key


class _Emitted:
    """Where records emitted outside a batch go: straight to the host."""

    def extend(self, framed):
        for value, key, timestamp in _read(bytes(framed)):
            output.emit(value, key, timestamp)


def _as_bytes(value):
    if type(value) is bytes:
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode()
    raise TypeError(f"records are bytes or str, not {type(value).__name__}")


def _write(out, value, key, timestamp):
    flags = (_FLAG_TIMESTAMP if timestamp is not None else 0) | (_FLAG_KEY if key is not None else 0)
    body = 1 + len(value)
    parts = []
    if timestamp is not None:
        body += 8
        parts.append(_i64.pack(timestamp))
    if key is not None:
        body += 4 + len(key)
        parts.append(_u32.pack(len(key)))
        parts.append(key)
    out.extend(_header.pack(body, flags))
    for part in parts:
        out.extend(part)
    out.extend(value)


def _write_values(out, values):
    """Values (bytes) without key or time: one block when they share a width, records
    otherwise. The width check runs as a C loop (`map(len)`), not as Python code per value."""
    if not values:
        return
    width = len(values[0])
    if 0 < width <= 1 << 16 and len(set(_builtin_map(len, values))) == 1:
        entries = b"".join(values)
        out.extend(_header.pack(1 + 4 + len(entries), _FLAG_BLOCK))
        out.extend(_u32.pack(width))
        out.extend(entries)
        return
    for v in values:
        _write(out, v, None, None)


def _plain_values(batch):
    """The values of a batch whose records all lack key and time, sliced straight from the bytes
    (no tuple per record); None for any other batch."""
    values = []
    pos = 0
    end = len(batch)
    while pos < end:
        if end - pos < 5:
            return None
        body, flags = _header.unpack_from(batch, pos)
        stop = pos + 4 + body
        if body < 1 or stop > end or flags & ~_FLAG_BLOCK:
            return None
        if flags & _FLAG_BLOCK:
            (width,) = _u32.unpack_from(batch, pos + 5)
            p = pos + 9
            if width == 0 or (stop - p) % width:
                return None
            values.extend([batch[q : q + width] for q in range(p, stop, width)])
        else:
            values.append(batch[pos + 5 : stop])
        pos = stop
    return values


def _read(batch):
    """The records of a framed batch as (value, key, timestamp), blocks' entries included."""
    if type(batch) is not bytes:
        batch = bytes(batch)
    records = []
    append = records.append
    pos = 0
    end = len(batch)
    while pos < end:
        if end - pos < 5:
            raise _Malformed(len(records), pos, "a record header runs past the batch")
        body, flags = _header.unpack_from(batch, pos)
        start = pos + 5
        stop = pos + 4 + body
        if body < 1 or stop > end:
            raise _Malformed(len(records), pos, "a record's length runs past the batch")
        if flags & ~7:
            raise _Malformed(len(records), pos, "a record sets an unknown flag")
        pos = stop
        if flags & _FLAG_BLOCK:
            p = start
            key_len = 0
            if flags & _FLAG_KEY:
                (key_len,) = _u32.unpack_from(batch, p)
                p += 4
            (value_len,) = _u32.unpack_from(batch, p)
            p += 4
            has_ts = flags & _FLAG_TIMESTAMP
            entry = (8 if has_ts else 0) + key_len + value_len
            if entry == 0 or (stop - p) % entry:
                raise _Malformed(len(records), pos, "a block's entries do not fill it")
            if not has_ts and not flags & _FLAG_KEY:
                # The common blocks (fixed-width values, keyed or not): sliced in one
                # comprehension.
                records.extend(
                    (batch[q : q + value_len], None, None) for q in range(p, stop, entry)
                )
                continue
            if not has_ts:
                records.extend(
                    (batch[q + key_len : q + entry], batch[q : q + key_len], None)
                    for q in range(p, stop, entry)
                )
                continue
            for q in range(p, stop, entry):
                timestamp = None
                if has_ts:
                    (timestamp,) = _i64.unpack_from(batch, q)
                    q += 8
                key = batch[q : q + key_len] if flags & _FLAG_KEY else None
                q += key_len
                append((batch[q : q + value_len], key, timestamp))
            continue
        p = start
        timestamp = None
        key = None
        if flags & _FLAG_TIMESTAMP:
            (timestamp,) = _i64.unpack_from(batch, p)
            p += 8
        if flags & _FLAG_KEY:
            (key_len,) = _u32.unpack_from(batch, p)
            p += 4
            key = batch[p : p + key_len]
            p += key_len
        if p > stop:
            raise _Malformed(len(records), pos, "a record's flags announce more than its body holds")
        append((batch[p:stop], key, timestamp))
    return records


class _Malformed(Exception):
    def __init__(self, index, offset, message):
        super().__init__(f"the host sent a malformed batch at byte {offset}: {message}")
        self.index = index


class ProcessFunction:
    """An operator with the whole lifecycle; override what it needs."""

    def open(self, ctx):
        pass

    def process(self, ctx, value):
        raise NotImplementedError

    def process_second(self, ctx, value):
        raise OperatorError("this operator takes one input")

    def on_timer(self, ctx, domain, timestamp):
        pass

    def on_watermark(self, ctx, watermark):
        pass

    def close(self, ctx):
        pass

    def snapshot(self):
        """The operator's own state (not keyed state, which the host keeps), as bytes."""
        return b""

    def restore(self, state):
        pass


class _Function(ProcessFunction):
    """A per-record function made an operator (map, filter, flat_map, key_by)."""

    def __init__(self, kind, fn):
        self.kind = kind
        self.fn = fn


_registry = {}
_plan = None


def _register(name, factory, text, keyed):
    if name in _registry:
        raise ValueError(f"operator `{name}` is registered twice")
    _registry[name] = (factory, text, keyed)


def _function_decorator(kind):
    def decorator(name, text=False):
        def register(fn):
            _register(name, lambda: _Function(kind, fn), text, False)
            return fn

        return register

    return decorator


map = _function_decorator("map")
map.__doc__ = "Each value becomes `fn(value)`; the key is dropped, the time kept."
filter = _function_decorator("filter")
filter.__doc__ = "Records whose value `fn` passes go on as they are."
flat_map = _function_decorator("flat_map")
flat_map.__doc__ = "Each value becomes the values `fn` returns (any iterable)."
key_by = _function_decorator("key_by")
key_by.__doc__ = "Each record goes on keyed by `fn(value)`."


def process(name, text=False):
    """A class of `ProcessFunction`, one instance per operator instance."""

    def register(cls):
        _register(name, cls, text, False)
        return cls

    return register


def keyed_process(name, text=False):
    """A `ProcessFunction` over a keyed stream: records without a key are refused."""

    def register(cls):
        _register(name, cls, text, True)
        return cls

    return register


def plan(fn):
    """The component's job: `fn(args)` (a dict of `--arg`s) returns the manifest (TOML) whose
    operators are this component's, its paths `${name}` arguments."""
    global _plan
    _plan = fn
    return fn


def log(message, level=logging.Level.INFO):
    logging.log(level, str(message))


class _Instance:
    operator = None
    name = ""
    text = False
    keyed = False
    config = {}


def config(key, default=None):
    """The value of the operator's configuration entry `key`."""
    return _Instance.config.get(key, default)


def _failed(message):
    return Err(types.OperatorError_Failed(message))


def _error_of(e):
    if isinstance(e, Err):
        return e
    if isinstance(e, ConfigError):
        return Err(types.OperatorError_Config(str(e)))
    if isinstance(e, OperatorError):
        return _failed(str(e))
    where = traceback.extract_tb(e.__traceback__)
    at = f" (at {where[-1].filename}:{where[-1].lineno})" if where else ""
    return _failed(f"{type(e).__name__}: {e}{at}")


def _run(records, out, second=False):
    """Runs records (value, key, timestamp) through the operator into `out`."""
    op = _Instance.operator
    if op is None:
        raise _failed("operator called before a successful open")
    ctx = Context(out, _Instance.text)
    text = _Instance.text
    keyed = _Instance.keyed
    index = 0
    try:
        if isinstance(op, _Function) and not second:
            fn = op.fn
            kind = op.kind
            if kind == "map" and all(t is None for _, _, t in records):
                # One call per record and nothing else per record: the results go out in one
                # block when they share a width, as records otherwise.
                index = None
                if text:
                    results = [_as_bytes(fn(v.decode())) for v, _, _ in records]
                else:
                    results = [_as_bytes(fn(v)) for v, _, _ in records]
                _write_values(out, results)
                return
            for value, key, timestamp in records:
                v = value.decode() if text else value
                if kind == "map":
                    _write(out, _as_bytes(fn(v)), None, timestamp)
                elif kind == "filter":
                    if fn(v):
                        _write(out, value, key, timestamp)
                elif kind == "flat_map":
                    for item in fn(v):
                        _write(out, _as_bytes(item), None, timestamp)
                        if len(out) >= _FLUSH_BYTES:
                            output.emit_batch(bytes(out))
                            out.clear()
                else:
                    _write(out, value, _as_bytes(fn(v)), timestamp)
                index += 1
            return
        handle = op.process_second if second else op.process
        for value, key, timestamp in records:
            if keyed and key is None:
                raise OperatorError(
                    f"operator `{_Instance.name}` is keyed, but a record without a key reached "
                    "it (is the edge into it `hash`?)"
                )
            ctx.key = key
            ctx.timestamp = timestamp
            handle(ctx, value.decode() if text else value)
            if len(out) >= _FLUSH_BYTES:
                output.emit_batch(bytes(out))
                out.clear()
            index += 1
    except Exception as e:
        err = _error_of(e)
        if (
            isinstance(err.value, types.OperatorError_Failed)
            and len(records) > 1
            and index is not None
        ):
            err = _failed(f"record {index}: {err.value.value}")
        raise err


def _plain_batch(op, values):
    """A map, filter or flat map over values without key or time: one call per value and
    nothing else per value."""
    fn = op.fn
    out = bytearray()
    try:
        if _Instance.text:
            inputs = [v.decode() for v in values]
        else:
            inputs = values
        if op.kind == "map":
            # Each result made bytes as it comes (a reused bytearray must not repeat), with no
            # call per value for results that are bytes already.
            results = [r if type(r) is bytes else _as_bytes(r) for r in _builtin_map(fn, inputs)]
            _write_values(out, results)
        elif op.kind == "filter":
            _write_values(out, [v for v, i in zip(values, inputs) if fn(i)])
        else:
            results = []
            size = 0
            for v in inputs:
                for item in fn(v):
                    item = _as_bytes(item)
                    results.append(item)
                    size += len(item)
                    if size >= _FLUSH_BYTES:
                        _write_values(out, results)
                        output.emit_batch(bytes(out))
                        out.clear()
                        results = []
                        size = 0
            _write_values(out, results)
    except Exception as e:
        raise _error_of(e)
    return bytes(out)


def _call(fn):
    try:
        return fn()
    except Exception as e:
        raise _error_of(e)


class Operator:
    def open(self, context):
        entry = _registry.get(context.operator_name)
        if entry is None:
            raise Err(types.OperatorError_UnknownOperator(", ".join(_registry)))
        factory, text, keyed = entry
        _Instance.name = context.operator_name
        _Instance.text = text
        _Instance.keyed = keyed
        _Instance.config = dict(context.config)
        op = _call(factory)
        out = bytearray()
        ctx = Context(out, text)
        _call(lambda: op.open(ctx))
        _Instance.operator = op
        _Emitted().extend(out)

    def process_element(self, value, key, timestamp):
        out = bytearray()
        _run([(value, key, timestamp)], out)
        _Emitted().extend(out)

    def on_watermark(self, watermark):
        if _Instance.operator is None:
            raise _failed("operator called before a successful open")
        out = bytearray()
        ctx = Context(out, _Instance.text)
        ctx.timestamp = watermark
        _call(lambda: _Instance.operator.on_watermark(ctx, watermark))
        _Emitted().extend(out)

    def on_timer(self, domain, key, timestamp):
        if _Instance.operator is None:
            raise _failed("operator called before a successful open")
        out = bytearray()
        ctx = Context(out, _Instance.text)
        ctx.key = key
        ctx.timestamp = timestamp
        _call(lambda: _Instance.operator.on_timer(ctx, domain, timestamp))
        _Emitted().extend(out)

    def snapshot_state(self):
        own = _call(lambda: _as_bytes(_Instance.operator.snapshot()))
        # The host snapshots keyed state right after this returns: it must hold every write.
        _flush()
        return own

    def restore_state(self, state):
        _call(lambda: _Instance.operator.restore(state))

    def close(self):
        out = bytearray()
        ctx = Context(out, _Instance.text)
        try:
            _call(lambda: _Instance.operator.close(ctx))
        finally:
            _flush()
        _Emitted().extend(out)


def _batch(records, second):
    op = _Instance.operator
    if not second and isinstance(op, _Function) and op.kind in ("map", "filter", "flat_map"):
        try:
            values = _plain_values(records)
        except struct.error:
            values = None
        if values is not None:
            return _plain_batch(op, values)
    try:
        decoded = _read(records)
    except _Malformed as e:
        raise Err(types.OperatorError_Decode(types.DecodeFailure(e.index, str(e))))
    except struct.error as e:
        raise Err(types.OperatorError_Decode(types.DecodeFailure(0, f"malformed batch: {e}")))
    out = bytearray()
    _run(decoded, out, second)
    return bytes(out)


class Batch:
    def process_batch(self, records):
        return _batch(records, False)


class TwoInput:
    def process_element_second(self, value, key, timestamp):
        out = bytearray()
        _run([(value, key, timestamp)], out, second=True)
        _Emitted().extend(out)

    def process_batch_second(self, records):
        return _batch(records, True)


class JobPlan:
    def plan(self, args):
        if _plan is None:
            return None
        try:
            return _plan(dict(args))
        except Exception as e:
            raise Err(str(e))

    def operators(self):
        return list(_registry)

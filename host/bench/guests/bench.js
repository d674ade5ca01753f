// The operators of `weir-bench languages` in JavaScript: `map` (x*3+1 of an 8-byte integer)
// and `keyed-sum` (a running sum per key in value state).

function u64(bytes) {
  return new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true);
}

function bytesOf(n) {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, BigInt.asUintN(64, n), true);
  return out;
}

weir.map("map", (value) => bytesOf(u64(value) * 3n + 1n));

weir.keyedProcess("keyed-sum", () => ({
  open(ctx) {
    this.sum = ctx.valueState("sum");
  },
  process(ctx, value) {
    const stored = this.sum.get(ctx);
    const out = bytesOf((stored ? u64(stored) : 0n) + u64(value));
    this.sum.set(ctx, out);
    ctx.emit(out);
  },
}));

// The benchmark's native JavaScript loops (NATIVE_JS in languages.rs), run by the interpreter
// inside the component: the first record (n as 8 bytes) builds the inputs, the second runs the
// map loop, the third the keyed-sum loop; each emits one record, and the host times the calls.
// What `map` and `keyed-sum` cost beyond these is the boundary and the SDK.
weir.process("interpreter-loops", () => ({
  step: 0,
  process(ctx, value) {
    const n = Number(u64(value));
    if (this.step === 0) {
      this.values = [];
      for (let x = 0; x < n; x++) this.values.push(bytesOf(BigInt(x)));
    } else if (this.step === 1) {
      this.out = this.values.map((v) => bytesOf(u64(v) * 3n + 1n));
    } else {
      const sums = new Map();
      const out = [];
      for (let x = 0; x < n; x++) {
        const key = String(x % 10000);
        const stored = sums.get(key);
        const b = bytesOf((stored ? u64(stored) : 0n) + u64(this.values[x]));
        sums.set(key, b);
        out.push(b);
      }
      this.out = out;
    }
    this.step++;
    ctx.emit(value);
  },
}));

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

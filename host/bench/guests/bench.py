"""The operators of `weir-bench languages` in Python: `map` (x*3+1 of an 8-byte integer) and
`keyed-sum` (a running sum per key in value state)."""

import weir

MASK = (1 << 64) - 1


@weir.map("map")
def times_three_plus_one(value):
    return ((int.from_bytes(value, "little") * 3 + 1) & MASK).to_bytes(8, "little")


@weir.keyed_process("keyed-sum")
class KeyedSum(weir.ProcessFunction):
    def open(self, ctx):
        self.sum = ctx.value_state("sum")

    def process(self, ctx, value):
        stored = self.sum.get(ctx)
        total = ((int.from_bytes(stored, "little") if stored else 0) + int.from_bytes(value, "little")) & MASK
        out = total.to_bytes(8, "little")
        self.sum.set(ctx, out)
        ctx.emit(out)

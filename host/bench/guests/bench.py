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


@weir.process("interpreter-loops")
class InterpreterLoops(weir.ProcessFunction):
    """The benchmark's native Python loops (NATIVE_PY in languages.rs), run by the interpreter
    inside the component: the first record (n as 8 bytes) builds the inputs, the second runs
    the map loop, the third the keyed-sum loop; each emits one record, and the host times the
    calls. What `map` and `keyed-sum` cost beyond these is the boundary and the SDK."""

    def open(self, ctx):
        self.step = 0

    def process(self, ctx, value):
        n = int.from_bytes(value, "little")
        if self.step == 0:
            self.values = [x.to_bytes(8, "little") for x in range(n)]
        elif self.step == 1:
            self.out = [((int.from_bytes(v, "little") * 3 + 1) & MASK).to_bytes(8, "little") for v in self.values]
        else:
            sums = {}
            out = []
            for x, v in enumerate(self.values):
                key = (x % 10000).to_bytes(8, "little")
                stored = sums.get(key)
                total = ((int.from_bytes(stored, "little") if stored else 0) + int.from_bytes(v, "little")) & MASK
                b = total.to_bytes(8, "little")
                sums[key] = b
                out.append(b)
            self.out = out
        self.step += 1
        ctx.emit(value)

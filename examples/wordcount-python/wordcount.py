"""Word count in Python: the same three operators as the Rust example, with the weir Python SDK.

    weir build --language python -o target/wordcount-python.wasm examples/wordcount-python/wordcount.py
    weir run target/wordcount-python.wasm --arg input=TEXT --arg output=COUNTS

Words are the runs of letters and digits of the lowercased line, as the Rust example's.
"""

import re

import weir

WORD = re.compile(r"[^\W_]+")


@weir.flat_map("tokenize", text=True)
def tokenize(line):
    return WORD.findall(line.lower())


@weir.key_by("key-by-word")
def key_by_word(word):
    return word


@weir.keyed_process("count", text=True)
class Count(weir.ProcessFunction):
    def open(self, ctx):
        self.count = ctx.value_state("count")

    def process(self, ctx, word):
        stored = self.count.get(ctx)
        n = (int.from_bytes(stored, "little") if stored else 0) + 1
        self.count.set(ctx, n.to_bytes(8, "little"))
        ctx.emit(f"{ctx.key_text()} {n}")


@weir.plan
def plan(args):
    return """
name = "wordcount-python"
parallelism = 2

[[source]]
id = "lines"
kind = "file"
path = "${input}"

[[operator]]
id = "tokenize"
input = "lines"

[[operator]]
id = "key-by-word"
input = "tokenize"

[[operator]]
id = "count"
input = "key-by-word"
edge = "hash"

[[sink]]
id = "counts"
kind = "file"
path = "${output}"
input = "count"
edge = "rebalance"
parallelism = 1
"""

// Word count in JavaScript: the same three operators as the Rust example, with the weir
// JavaScript SDK (`weir` is in scope: `weir build` puts the SDK before this module).
//
//     weir build --language js -o target/wordcount-js.wasm examples/wordcount-js/wordcount.js
//     weir run target/wordcount-js.wasm --arg input=TEXT --arg output=COUNTS
//
// Words are the runs of letters and digits of the lowercased line, as the Rust example's. The
// engine inside the component has no Unicode property escapes (`\p{L}`): a letter here is a
// character with case (lower and upper differ), a digit 0-9; uncased scripts would need more.

function isWordChar(c) {
  return (c >= "0" && c <= "9") || c.toLowerCase() !== c.toUpperCase();
}

weir.flatMap(
  "tokenize",
  (line) => {
    const words = [];
    let word = "";
    for (const c of line.toLowerCase()) {
      if (isWordChar(c)) {
        word += c;
      } else if (word) {
        words.push(word);
        word = "";
      }
    }
    if (word) words.push(word);
    return words;
  },
  { text: true },
);

weir.keyBy("key-by-word", (word) => word);

weir.keyedProcess(
  "count",
  () => ({
    open(ctx) {
      this.count = ctx.valueState("count");
    },
    process(ctx, word) {
      const stored = this.count.get(ctx);
      const n = (stored ? new DataView(stored.buffer, stored.byteOffset, 8).getBigUint64(0, true) : 0n) + 1n;
      const bytes = new Uint8Array(8);
      new DataView(bytes.buffer).setBigUint64(0, n, true);
      this.count.set(ctx, bytes);
      ctx.emit(`${ctx.keyText()} ${n}`);
    },
  }),
  { text: true },
);

weir.plan(
  () => `
name = "wordcount-js"
parallelism = 2

[[source]]
id = "lines"
kind = "file"
path = "\${input}"

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
path = "\${output}"
input = "count"
edge = "rebalance"
parallelism = 1
`,
);

// The operators of {name}: `upper` upper-cases each line. The component also carries the job
// (`weir.plan`), so `weir run {name}.wasm` takes it alone; `job.toml` is the same job as a
// manifest. Build: weir build --language js -o {name}.wasm app.js (`weir` is in scope).

weir.map("upper", (line) => line.toUpperCase(), { text: true });

weir.plan(() => `
name = "{name}"
[[source]]
id = "lines"
kind = "file"
path = "\${input}"
[[operator]]
id = "upper"
input = "lines"
[[sink]]
id = "out"
kind = "file"
path = "\${output}"
input = "upper"
`);

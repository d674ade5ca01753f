"""The operators of {name}: `upper` upper-cases each line. The component also carries the job
(`plan`), so `weir run {name}.wasm` takes it alone; `job.toml` is the same job as a manifest.
Build: weir build --language python -o {name}.wasm app.py"""

import weir


@weir.map("upper", text=True)
def upper(line):
    return line.upper()


@weir.plan
def plan(args):
    return """
name = "{name}"
[[source]]
id = "lines"
kind = "file"
path = "${input}"
[[operator]]
id = "upper"
input = "lines"
[[sink]]
id = "out"
kind = "file"
path = "${output}"
input = "upper"
"""

//! Operators in other languages than Rust, built from source as their authors build them: the
//! C word count (`weir build --language c`) counts exactly at parallelism 2; C operators read
//! the record framing's blocks, and their failures and panics fail the job with their message.

mod support;

use std::path::{Path, PathBuf};

use support::*;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `weir build --language LANGUAGE` of `sources` into `dir/name`.
fn build(language: &str, dir: &Path, name: &str, sources: &[PathBuf]) -> PathBuf {
    let out = dir.join(name);
    let mut args = vec![
        "build".to_string(),
        "--language".into(),
        language.into(),
        "-o".into(),
        out.display().to_string(),
    ];
    args.extend(sources.iter().map(|s| s.display().to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, stdout, stderr) = weir(&args);
    assert!(ok, "{stdout}{stderr}");
    out
}

/// Runs operator `fan-out` of `component` on one record: its 280 MiB of output must reach the
/// sink, which it can only if the SDK hands it over as it grows.
fn fans_out(dir: &Path, component: &Path) {
    let manifest = dir.join("fan-out.toml");
    std::fs::write(
        &manifest,
        format!(
            "name = \"fan-out\"\n[[source]]\nid = \"in\"\nkind = \"sequence\"\ncount = 1\n\
             [[operator]]\nid = \"fan-out\"\ncomponent = {:?}\ninput = \"in\"\n\
             [[sink]]\nid = \"out\"\nkind = \"discard\"\ninput = \"fan-out\"\n",
            component.display().to_string()
        ),
    )
    .expect("manifest");
    let (ok, out, err) = weir(&["run", manifest.to_str().unwrap(), "--restart-attempts", "0"]);
    assert!(ok, "{out}{err}");
    assert!(
        err.contains("in -> fan-out -> out: records in 1, out 70000"),
        "{err}"
    );
}

/// Runs operator `op` of `component` on the lines `fine`, `boom`, `fine`: the job must fail
/// with the operator's message, containing `expected`.
fn fails_on_boom(dir: &Path, component: &Path, op: &str, expected: &str) {
    let words = dir.join("words.txt");
    std::fs::write(&words, "fine\nboom\nfine\n").expect("words");
    let source = format!(
        "[[source]]\nid = \"in\"\nkind = \"file\"\npath = {:?}\n",
        words.display().to_string()
    );
    let job = manifest(dir, component, &source, &[op]);
    let (ok, out, err) = weir(&[
        "run",
        job.to_str().unwrap(),
        "--restart-attempts",
        "0",
        "--arg",
        &format!("output={}", dir.join("out.txt").display()),
    ]);
    assert!(!ok, "{op}: {out}{err}");
    let component = component.file_name().unwrap().to_string_lossy();
    assert!(
        err.contains(&format!(
            "operator `{op}` (subtask 0) of component `{component}` "
        )),
        "{op}: {err}"
    );
    assert!(err.contains(expected), "{op}: {err}");
}

#[test]
fn the_c_word_count_built_from_source_counts_every_word_at_parallelism_two() {
    let dir = tempfile::tempdir().expect("tempdir");
    let component = build(
        "c",
        dir.path(),
        "wordcount-c.wasm",
        &[root().join("examples/wordcount-c/wordcount.c")],
    );
    // The component's own plan: parallelism 2, the words by key to two counting subtasks.
    let err = runs_word_count_exactly(&component, dir.path(), 4);
    assert!(err.contains("count: records in"), "{err}");
    // The manifest beside it runs the same job.
    let manifest = std::fs::read_to_string(root().join("examples/wordcount-c/job.toml"))
        .expect("manifest")
        .replace(
            "../../target/wordcount-c.wasm",
            component.to_str().expect("utf-8 path"),
        );
    let job = dir.path().join("job.toml");
    std::fs::write(&job, manifest).expect("manifest");
    runs_word_count_exactly(&job, dir.path(), 4);
}

/// C operators of the tests: numbers in and out, and failures on purpose.
const TEST_OPERATORS: &str = r#"
#include <stdio.h>
#include <string.h>
#include "weir.h"

static uint64_t u64_of(weir_bytes v) {
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = n << 8 | v.data[i];
    return n;
}

static bool even(weir_bytes v) { return v.len == 8 && u64_of(v) % 2 == 0; }

static int decimal(weir_ctx *ctx, weir_bytes v, weir_buffer *out) {
    if (v.len != 8) return weir_fail(ctx, "expected 8 bytes, got %zu", v.len);
    char text[24];
    int n = snprintf(text, sizeof text, "%llu", (unsigned long long)u64_of(v));
    return weir_buffer_push(out, text, (size_t)n);
}

/* The number in decimal, every 1000th followed by 5,000 dots: outputs of changing widths, some
 * larger than the output block the map writes into. */
static int sized(weir_ctx *ctx, weir_bytes v, weir_buffer *out) {
    uint64_t n = u64_of(v);
    if (n == 7777) return weir_fail(ctx, "refusing %llu", (unsigned long long)n);
    char text[24];
    int len = snprintf(text, sizeof text, "%llu", (unsigned long long)n);
    if (weir_buffer_push(out, text, (size_t)len)) return -1;
    for (int i = 0; n % 1000 == 0 && i < 5000; i++)
        if (weir_buffer_push_byte(out, '.')) return -1;
    return 0;
}

static int refuse_boom(weir_ctx *ctx, weir_bytes v) {
    if (v.len == 4 && memcmp(v.data, "boom", 4) == 0)
        return weir_fail(ctx, "refusing the word `%.*s`", (int)v.len, (const char *)v.data);
    return weir_emit(ctx, v);
}

static int panic_on_boom(weir_ctx *ctx, weir_bytes v) {
    if (v.len == 4 && memcmp(v.data, "boom", 4) == 0) weir_panic("cannot go on after %s", "boom");
    return weir_emit(ctx, v);
}

/* 70,000 records of 4 KiB per input record: 280 MiB, over what one call may return. */
static int fan_out(weir_ctx *ctx, weir_bytes v) {
    (void)v;
    static uint8_t block[4096];
    weir_bytes out = {block, sizeof block};
    for (int i = 0; i < 70000; i++)
        if (weir_emit(ctx, out)) return -1;
    return 0;
}

static int needs_config(weir_ctx *ctx) {
    if (!weir_config("factor")) return weir_config_error(ctx, "`factor` is not set");
    return 0;
}

WEIR_OPERATORS(
    WEIR_FILTER("even", even),
    WEIR_MAP("decimal", decimal),
    WEIR_MAP("sized", sized),
    WEIR_FLAT_MAP("refuse-boom", refuse_boom),
    WEIR_FLAT_MAP("panic-on-boom", panic_on_boom),
    WEIR_FLAT_MAP("fan-out", fan_out),
    WEIR_PROCESS("needs-config", .open = needs_config, .process = NULL)
)
"#;

fn manifest(dir: &Path, component: &Path, source: &str, operators: &[&str]) -> PathBuf {
    let mut text = format!("name = \"c-test\"\n{source}");
    let mut input = "in".to_string();
    for op in operators {
        text.push_str(&format!(
            "[[operator]]\nid = \"{op}\"\ncomponent = {:?}\ninput = \"{input}\"\n",
            component.display().to_string()
        ));
        input = op.to_string();
    }
    text.push_str(&format!(
        "[[sink]]\nid = \"out\"\nkind = \"file\"\npath = \"${{output}}\"\ninput = \"{input}\"\n"
    ));
    let path = dir.join(format!("{}.toml", operators.join("-")));
    std::fs::write(&path, text).expect("manifest");
    path
}

#[test]
fn c_operators_read_blocks_and_fail_the_job_with_their_own_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let source = dir.path().join("ops.c");
    std::fs::write(&source, TEST_OPERATORS).expect("source");
    let component = build("c", dir.path(), "ops.wasm", &[source]);
    let run = |manifest: &Path, output: &Path| {
        let (ok, out, err) = weir(&[
            "run",
            manifest.to_str().unwrap(),
            "--restart-attempts",
            "0",
            "--arg",
            &format!("output={}", output.display()),
        ]);
        (ok, format!("{out}{err}"))
    };

    // 8-byte numbers travel in blocks: the filter and the map read them entry by entry.
    let numbers = manifest(
        dir.path(),
        &component,
        "[[source]]\nid = \"in\"\nkind = \"sequence\"\ncount = 10000\n",
        &["even", "decimal"],
    );
    let output = dir.path().join("numbers.txt");
    let (ok, said) = run(&numbers, &output);
    assert!(ok, "{said}");
    let got: Vec<u64> = std::fs::read_to_string(&output)
        .expect("output")
        .lines()
        .map(|l| l.parse().expect("a number"))
        .collect();
    assert_eq!(got, (0..10000).filter(|n| n % 2 == 0).collect::<Vec<u64>>());

    // Outputs of changing widths, some past the output block, keep their order and bytes; a
    // failure in the middle of a block names the map's message.
    for (count, fails) in [(7000, false), (9000, true)] {
        let sized = manifest(
            dir.path(),
            &component,
            &format!("[[source]]\nid = \"in\"\nkind = \"sequence\"\ncount = {count}\n"),
            &["sized"],
        );
        let output = dir.path().join(format!("sized-{count}.txt"));
        let (ok, said) = run(&sized, &output);
        if fails {
            assert!(!ok, "{said}");
            assert!(said.contains("refusing 7777"), "{said}");
            continue;
        }
        assert!(ok, "{said}");
        let text = std::fs::read_to_string(&output).expect("output");
        let expected: Vec<String> = (0..count)
            .map(|n| {
                let dots = if n % 1000 == 0 { 5000 } else { 0 };
                format!("{n}{}", ".".repeat(dots))
            })
            .collect();
        assert_eq!(text.lines().collect::<Vec<_>>(), expected);
    }

    // A fan-out past what one call may return reaches the sink.
    fans_out(dir.path(), &component);

    for (op, expected) in [
        ("refuse-boom", "failed: refusing the word `boom`"),
        ("panic-on-boom", "panicked: cannot go on after boom"),
        (
            "needs-config",
            "rejected its configuration: `factor` is not set",
        ),
    ] {
        fails_on_boom(dir.path(), &component, op, expected);
    }
}

#[test]
fn the_python_word_count_built_from_source_counts_every_word_at_parallelism_two() {
    let dir = tempfile::tempdir().expect("tempdir");
    let component = build(
        "python",
        dir.path(),
        "wordcount-python.wasm",
        &[root().join("examples/wordcount-python/wordcount.py")],
    );
    let err = runs_word_count_exactly(&component, dir.path(), 4);
    assert!(err.contains("job `wordcount-python` finished"), "{err}");
}

const PYTHON_OPERATORS: &str = r#"
import weir

@weir.flat_map("explode", text=True)
def explode(line):
    if line == "boom":
        raise ValueError(f"cannot take {line}")
    return [line]

@weir.flat_map("fan-out")
def fan_out(value):
    # 70,000 records of 4 KiB: 280 MiB, over what one call may return.
    return [b"x" * 4096] * 70000

@weir.map("refuse", text=True)
def refuse(line):
    if line == "boom":
        raise weir.OperatorError("refusing the word boom")
    return line.upper()

@weir.map("count-letters", text=True)
def count_letters(line):
    return len(line)

_shared = bytearray()

@weir.map("reuse-buffer", text=True)
def reuse_buffer(line):
    # One buffer rewritten for every record: each output must keep its own bytes.
    _shared[:] = line.upper().encode()
    return _shared
"#;

#[test]
fn a_python_exception_fails_the_job_with_its_type_message_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let module = dir.path().join("ops.py");
    std::fs::write(&module, PYTHON_OPERATORS).expect("module");
    let component = build("python", dir.path(), "ops.wasm", &[module]);
    fans_out(dir.path(), &component);
    // The message names the record's place in its batch (`record 1: `) where it is known.
    for (op, expected) in [
        ("explode", "failed: "),
        ("explode", "ValueError: cannot take boom (at "),
        ("refuse", "refusing the word boom"),
        (
            "count-letters",
            "TypeError: records are bytes or str, not int",
        ),
    ] {
        fails_on_boom(dir.path(), &component, op, expected);
    }

    // A map's results as strings of several widths, and as one reused bytearray.
    for (op, text, expected) in [
        ("refuse", "a\nbb\nccc\nbb\n", "A\nBB\nCCC\nBB\n"),
        ("reuse-buffer", "a\nb\nc\nd\n", "A\nB\nC\nD\n"),
    ] {
        let words = dir.path().join(format!("{op}-words.txt"));
        std::fs::write(&words, text).expect("words");
        let job = manifest(
            dir.path(),
            &component,
            &format!(
                "[[source]]\nid = \"in\"\nkind = \"file\"\npath = {:?}\n",
                words.display().to_string()
            ),
            &[op],
        );
        let output = dir.path().join(format!("{op}-out.txt"));
        let (ok, out, err) = weir(&[
            "run",
            job.to_str().unwrap(),
            "--arg",
            &format!("output={}", output.display()),
        ]);
        assert!(ok, "{out}{err}");
        assert_eq!(
            std::fs::read_to_string(&output).expect("output"),
            expected,
            "{op}"
        );
    }
}

const JS_OPERATORS: &str = r#"
weir.flatMap("explode", (line) => {
  if (line === "boom") throw new RangeError(`cannot take ${line}`);
  return [line];
}, { text: true });

weir.flatMap("fan-out", function* (value) {
  // 70,000 records of 4 KiB: 280 MiB, over what one call may return.
  const block = new Uint8Array(4096);
  for (let i = 0; i < 70000; i++) yield block;
});

// Numbers keyed by their remainder by three (8-byte keys: they cross the hash edge in blocks),
// and a running sum per key in value state, written as `key:sum`.
function u64(bytes) {
  return new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true);
}
// Remainder 2 sets the top bit: eight-byte keys below 2^53 and above are cached differently.
weir.keyBy("mod-three", (value) => {
  const key = new Uint8Array(8);
  const r = u64(value) % 3n;
  new DataView(key.buffer).setBigUint64(0, r === 2n ? r + (1n << 63n) : r, true);
  return key;
});
weir.keyedProcess("running-sum", () => ({
  open(ctx) {
    this.sum = ctx.valueState("sum");
  },
  process(ctx, value) {
    const stored = this.sum.get(ctx);
    const sum = (stored ? u64(stored) : 0n) + u64(value);
    const bytes = new Uint8Array(8);
    new DataView(bytes.buffer).setBigUint64(0, sum, true);
    this.sum.set(ctx, bytes);
    bytes[0] ^= 0xff; // the state keeps its own copy
    ctx.emit(`${u64(ctx.key)}:${sum}`);
  },
}));

weir.map("refuse", (line) => {
  if (line === "boom") throw new weir.OperatorError("refusing the word boom");
  return line.toUpperCase();
}, { text: true });
"#;

#[test]
fn the_javascript_word_count_counts_every_word_and_an_exception_fails_the_job_with_its_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let component = build(
        "js",
        dir.path(),
        "wordcount-js.wasm",
        &[root().join("examples/wordcount-js/wordcount.js")],
    );
    let err = runs_word_count_exactly(&component, dir.path(), 4);
    assert!(err.contains("job `wordcount-js` finished"), "{err}");

    let module = dir.path().join("ops.js");
    std::fs::write(&module, JS_OPERATORS).expect("module");
    let component = build("js", dir.path(), "ops.wasm", &[module]);
    fans_out(dir.path(), &component);

    // Keyed records arrive in blocks, read by the SDK's own loop: every running sum exactly once.
    // One source subtask, so each key's records reach its running sum in order.
    let count = 3000u64;
    let sums = dir.path().join("sums.toml");
    std::fs::write(
        &sums,
        format!(
            "name = \"sums\"\nparallelism = 2\n[[source]]\nid = \"in\"\nkind = \"sequence\"\n\
             count = {count}\nparallelism = 1\n[[operator]]\nid = \"mod-three\"\ncomponent = {c:?}\n\
             input = \"in\"\nparallelism = 1\n\
             [[operator]]\nid = \"running-sum\"\ncomponent = {c:?}\ninput = \"mod-three\"\n\
             edge = \"hash\"\n[[sink]]\nid = \"out\"\nkind = \"file\"\npath = \"${{output}}\"\n\
             input = \"running-sum\"\nedge = \"rebalance\"\nparallelism = 1\n",
            c = component.display().to_string()
        ),
    )
    .expect("manifest");
    let output = dir.path().join("sums.txt");
    let (ok, out, err) = weir(&[
        "run",
        sums.to_str().unwrap(),
        "--restart-attempts",
        "0",
        "--arg",
        &format!("output={}", output.display()),
    ]);
    assert!(ok, "{out}{err}");
    let mut got: Vec<String> = std::fs::read_to_string(&output)
        .expect("output")
        .lines()
        .map(str::to_string)
        .collect();
    got.sort();
    let mut running = [0u64; 3];
    let mut expected: Vec<String> = (0..count)
        .map(|n| {
            let r = n % 3;
            running[r as usize] += n;
            let key = if r == 2 { r + (1 << 63) } else { r };
            format!("{key}:{}", running[r as usize])
        })
        .collect();
    expected.sort();
    assert_eq!(got, expected);

    for (op, expected) in [
        ("explode", "RangeError: cannot take boom (at "),
        ("refuse", "failed: refusing the word boom"),
    ] {
        fails_on_boom(dir.path(), &component, op, expected);
    }

    // Built by hand without `-d http fetch-event`, the component imports wasi:http: refused
    // with the import and the flag named.
    let app = dir.path().join("with-http.js");
    let sdk = std::fs::read_to_string(root().join("guest-sdk/js/weir.js")).expect("sdk");
    std::fs::write(&app, format!("{sdk}\n{JS_OPERATORS}")).expect("app");
    let with_http = dir.path().join("with-http.wasm");
    let built = std::process::Command::new("componentize-js")
        .arg(&app)
        .arg("--wit")
        .arg(root().join("wit"))
        .args(["--world-name", "job", "-o"])
        .arg(&with_http)
        .output()
        .expect("componentize-js");
    assert!(built.status.success(), "{built:?}");
    let (ok, _, err) = weir(&["info", with_http.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        err.contains(
            "`with-http.wasm` imports `wasi:http/types@0.2.10`, which weir does not provide \
             (componentize-js adds it unless built with `-d http fetch-event`"
        ),
        "{err}"
    );
}

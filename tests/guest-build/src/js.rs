//! Builds an operator component from a JavaScript module with the weir JavaScript SDK:
//! componentize-js (npm: `@bytecodealliance/componentize-js@0.23.0`) makes a component of the
//! SDK followed by the author's module (so `weir` is in scope there), in the `job` world. The
//! SDK and the WIT are carried in this crate, so an author needs only componentize-js.

use std::path::Path;
use std::process::Command;

const WEIR_JS: &str = include_str!("../../../guest-sdk/js/weir.js");
const WIT: &str = include_str!("../../../wit/weir.wit");

/// The componentize-js to run: `$WEIR_COMPONENTIZE_JS`, else `componentize-js` on the path.
fn componentize_js() -> String {
    std::env::var("WEIR_COMPONENTIZE_JS").unwrap_or_else(|_| "componentize-js".into())
}

/// Builds the component `output` from the JavaScript module `module`.
pub fn build(module: &Path, output: &Path) -> Result<(), String> {
    let source = std::fs::read_to_string(module)
        .map_err(|e| format!("cannot read `{}`: {e}", module.display()))?;
    let dir = crate::c::temp_dir("weir-js-sdk")?;
    let result = build_in(&dir, module, &source, output);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn build_in(dir: &Path, module: &Path, source: &str, output: &Path) -> Result<(), String> {
    let wit = dir.join("wit");
    std::fs::create_dir_all(&wit).map_err(|e| format!("{}: {e}", wit.display()))?;
    std::fs::write(wit.join("weir.wit"), WIT).map_err(|e| format!("{}: {e}", wit.display()))?;
    let app = dir.join("app.js");
    // The author's lines keep their numbers in messages, counted from the SDK's end.
    let text = format!("{WEIR_JS}\n// ---- {} ----\n{source}", module.display());
    std::fs::write(&app, text).map_err(|e| format!("{}: {e}", app.display()))?;
    let out = Command::new(componentize_js())
        .arg(&app)
        .arg("--wit")
        .arg(&wit)
        .args(["--world-name", "job"])
        // Without these the component imports wasi:http, which the host does not link.
        .args(["-d", "http", "fetch-event"])
        .arg("-o")
        .arg(output)
        .output()
        .map_err(|e| {
            format!(
                "cannot run `{}` ({e}); the JavaScript SDK needs componentize-js (npm install -g \
                 @bytecodealliance/componentize-js@0.23.0)",
                componentize_js()
            )
        })?;
    if !out.status.success() {
        return Err(format!(
            "componentize-js failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

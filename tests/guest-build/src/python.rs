//! Builds an operator component from a Python module with the weir Python SDK: componentize-py
//! (from PyPI, `pip install componentize-py==0.25.1`) bundles CPython, the SDK and the module
//! into a component of the `job` world. The SDK and the WIT are carried in this crate, so an
//! author needs only componentize-py.

use std::path::{Path, PathBuf};
use std::process::Command;

const WEIR_PY: &str = include_str!("../../../guest-sdk/python/weir.py");
const WIT: &str = include_str!("../../../wit/weir.wit");

/// The componentize-py to run: `$WEIR_COMPONENTIZE_PY`, else `componentize-py` on the path.
fn componentize_py() -> String {
    std::env::var("WEIR_COMPONENTIZE_PY").unwrap_or_else(|_| "componentize-py".into())
}

/// Builds the component `output` from the Python module `module` (a `.py` file whose imports
/// register operators with `weir`); modules beside it are importable too.
pub fn build(module: &Path, output: &Path) -> Result<(), String> {
    let stem = module
        .file_stem()
        .and_then(|s| s.to_str())
        .filter(|s| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .ok_or_else(|| {
            format!(
                "`{}` is not a Python module name (letters, digits and `_`)",
                module.display()
            )
        })?;
    if stem == "weir" {
        return Err("the module may not be called `weir`: that is the SDK's name".into());
    }
    let app_dir = module
        .parent()
        .map(Path::to_path_buf)
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("."));
    let dir = crate::c::temp_dir("weir-python-sdk")?;
    let result = build_in(&dir, stem, &app_dir, output);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn build_in(dir: &Path, stem: &str, app_dir: &Path, output: &Path) -> Result<(), String> {
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))
    };
    write("wit/weir.wit", WIT)?;
    write("sdk/weir.py", WEIR_PY)?;
    // The app componentize-py looks for the exports' classes in: the author's module first
    // (its decorators register the operators), then the SDK's classes.
    write(
        "sdk/weir_component.py",
        &format!(
            "import {stem}  # noqa: F401\nfrom weir import Batch, JobPlan, Operator, TwoInput  # noqa: F401\n"
        ),
    )?;
    let out = Command::new(componentize_py())
        .arg("-d")
        .arg(dir.join("wit"))
        .args(["-w", "job", "componentize", "weir_component", "-p"])
        .arg(dir.join("sdk"))
        .arg("-p")
        .arg(app_dir)
        .arg("-o")
        .arg(output)
        .output()
        .map_err(|e| {
            format!(
                "cannot run `{}` ({e}); the Python SDK needs componentize-py (pip install \
                 componentize-py==0.25.1)",
                componentize_py()
            )
        })?;
    if !out.status.success() {
        return Err(format!(
            "componentize-py failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

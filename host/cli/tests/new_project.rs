//! `weir new` makes a project outside the repository that builds as it is and runs: for each
//! language, the project is built with its own command and the component run on its plan, and
//! the Rust project's native test passes.

mod support;

use std::path::Path;
use std::process::Command;

use support::*;

/// Runs the built component on a small text; its output, which must be the text upper-cased.
fn runs_upper_cased(project: &Path, component: &Path) {
    let input = project.join("in.txt");
    std::fs::write(&input, "owl\n").expect("input");
    let output = project.join("out.txt");
    let (ok, out, err) = weir(&[
        "run",
        component.to_str().unwrap(),
        "--arg",
        &format!("input={}", input.display()),
        "--arg",
        &format!("output={}", output.display()),
    ]);
    assert!(ok, "{out}{err}");
    assert_eq!(std::fs::read_to_string(&output).expect("output"), "OWL\n");
}

fn new(dir: &Path, name: &str, language: &str) -> std::path::PathBuf {
    let project = dir.join(name);
    let (ok, out, err) = weir(&["new", project.to_str().unwrap(), "--language", language]);
    assert!(ok, "{out}{err}");
    assert!(project.join("README.md").is_file() && project.join("job.toml").is_file());
    project
}

#[test]
fn a_new_rust_project_builds_tests_and_runs_as_it_is() {
    let dir = tempfile::tempdir().expect("tempdir");
    let project = new(dir.path(), "upper-op", "rust");
    // A target directory shared across runs, so the SDK's dependencies compile once.
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/new-projects");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    for args in [
        &["build", "--release", "--target", "wasm32-wasip2"][..],
        &["test"][..],
    ] {
        let out = Command::new(&cargo)
            .args(args)
            .current_dir(&project)
            .env("CARGO_TARGET_DIR", &target)
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .output()
            .expect("cargo");
        assert!(
            out.status.success(),
            "cargo {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    runs_upper_cased(
        &project,
        &target.join("wasm32-wasip2/release/upper_op.wasm"),
    );
}

#[test]
fn new_c_python_and_javascript_projects_build_with_weir_build_and_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (language, source) in [("c", "op.c"), ("python", "app.py"), ("js", "app.js")] {
        let name = format!("upper-{language}");
        let project = new(dir.path(), &name, language);
        let component = project.join(format!("{name}.wasm"));
        let (ok, out, err) = weir(&[
            "build",
            "--language",
            language,
            "-o",
            component.to_str().unwrap(),
            project.join(source).to_str().unwrap(),
        ]);
        assert!(ok, "{language}: {out}{err}");
        runs_upper_cased(&project, &component);
    }
    let (ok, _, err) = weir(&["new", dir.path().join("upper-c").to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("exists already"), "{err}");
    let (ok, _, err) = weir(&["new", dir.path().join("9lives").to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("starts with a letter"), "{err}");
}

//! `weir new`: an operator project outside this repository that builds as it is, in any of the
//! languages weir has an SDK for: an operator (`upper`), the job as a plan in the component and
//! as a manifest, a README with the commands, and for Rust a test with the native harness.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum NewLanguage {
    Rust,
    C,
    Python,
    Js,
}

#[derive(clap::Args)]
pub struct NewArgs {
    /// The project's directory, created; its last part names the project (letters, digits, `-`,
    /// `_`).
    path: PathBuf,
    #[arg(long, value_enum, default_value = "rust")]
    language: NewLanguage,
    /// The weir SDK for Rust (`guest-sdk` of the weir repository), a path dependency until it is
    /// published; default: the one this `weir` was built from.
    #[arg(long)]
    sdk: Option<PathBuf>,
}

const RUST_LIB: &str = include_str!("templates/rust_lib.rs");
const C_OP: &str = include_str!("templates/op.c");
const PYTHON_APP: &str = include_str!("templates/app.py");
const JS_APP: &str = include_str!("templates/app.js");

/// The SDK this binary was built beside, if it is still there.
fn default_sdk() -> Option<PathBuf> {
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../guest-sdk");
    std::fs::canonicalize(sdk).ok()
}

fn manifest(name: &str, component: &str) -> String {
    format!(
        "# {name}: lines upper-cased. The component carries the same job as its plan:\n\
         #   weir run {component} --arg input=IN --arg output=OUT\n\
         name = \"{name}\"\n\n\
         [[source]]\nid = \"lines\"\nkind = \"file\"\npath = \"${{input}}\"\n\n\
         [[operator]]\nid = \"upper\"\ncomponent = \"{component}\"\ninput = \"lines\"\n\n\
         [[sink]]\nid = \"out\"\nkind = \"file\"\npath = \"${{output}}\"\ninput = \"upper\"\n"
    )
}

pub fn new_project(args: NewArgs) -> Result<()> {
    let name = args
        .path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_string();
    if name.is_empty()
        || !name.starts_with(|c: char| c.is_ascii_alphabetic())
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        bail!(
            "`{}`: a project's name starts with a letter and has letters, digits, `-` and `_`",
            args.path.display()
        );
    }
    if args.path.exists() {
        bail!("`{}` exists already", args.path.display());
    }
    let mut files: Vec<(&str, String)> = Vec::new();
    let readme = match args.language {
        NewLanguage::Rust => {
            let sdk = match args.sdk.clone().or_else(default_sdk) {
                Some(sdk) => std::fs::canonicalize(&sdk)
                    .with_context(|| format!("the Rust SDK `{}`", sdk.display()))?,
                None => bail!("where is the weir SDK for Rust? pass --sdk PATH/TO/weir/guest-sdk"),
            };
            let stem = name.replace('-', "_");
            let component = format!("target/wasm32-wasip2/release/{stem}.wasm");
            files.push((
                "Cargo.toml",
                format!(
                    "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\
                     rust-version = \"1.95\"\npublish = false\n\n\
                     [lib]\n# cdylib: the component; rlib: the native tests.\n\
                     crate-type = [\"cdylib\", \"rlib\"]\n\n\
                     [dependencies]\n# A path dependency until the SDK is published.\n\
                     weir-sdk = {{ path = {:?} }}\n\n\
                     [profile.release]\nlto = true\ncodegen-units = 1\nstrip = \"debuginfo\"\n\n\
                     # A project of its own, not a member of an enclosing workspace.\n[workspace]\n",
                    sdk.display().to_string()
                ),
            ));
            files.push(("src/lib.rs", RUST_LIB.replace("{name}", &name)));
            files.push(("job.toml", manifest(&name, &component)));
            files.push((".gitignore", "/target\n".into()));
            format!(
                "rustup target add wasm32-wasip2   # once\n\
                 cargo test                        # the operator, natively\n\
                 cargo build --release --target wasm32-wasip2\n\
                 weir run {component} --arg input=IN --arg output=OUT\n"
            )
        }
        NewLanguage::C => {
            files.push(("op.c", C_OP.replace("{name}", &name)));
            files.push(("job.toml", manifest(&name, &format!("{name}.wasm"))));
            format!(
                "weir build --language c -o {name}.wasm op.c   # needs clang and wasi-libc\n\
                 weir run {name}.wasm --arg input=IN --arg output=OUT\n"
            )
        }
        NewLanguage::Python => {
            files.push(("app.py", PYTHON_APP.replace("{name}", &name)));
            files.push(("job.toml", manifest(&name, &format!("{name}.wasm"))));
            format!(
                "weir build --language python -o {name}.wasm app.py   # needs componentize-py\n\
                 weir run {name}.wasm --arg input=IN --arg output=OUT\n"
            )
        }
        NewLanguage::Js => {
            files.push(("app.js", JS_APP.replace("{name}", &name)));
            files.push(("job.toml", manifest(&name, &format!("{name}.wasm"))));
            format!(
                "weir build --language js -o {name}.wasm app.js   # needs componentize-js\n\
                 weir run {name}.wasm --arg input=IN --arg output=OUT\n"
            )
        }
    };
    files.push((
        "README.md",
        format!(
            "# {name}\n\nA weir operator project. Build and run:\n\n```sh\n{readme}```\n\n\
             `job.toml` runs the same job from a manifest: `weir run job.toml --arg input=IN \
             --arg output=OUT`.\n"
        ),
    ));
    for (file, text) in &files {
        let path = args.path.join(file);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create `{}`", dir.display()))?;
        }
        std::fs::write(&path, text)
            .with_context(|| format!("cannot write `{}`", path.display()))?;
    }
    eprintln!(
        "Created `{}`; build and run it:\n{readme}",
        args.path.display()
    );
    Ok(())
}

//! `weir build`: an operator component from sources in a language whose toolchain does not make
//! weir components by itself (C, Python, JavaScript), with the weir SDK of that language carried in this binary. Rust
//! operators build with cargo (`cargo build --target wasm32-wasip2`).

use std::path::PathBuf;

use anyhow::{Result, bail};

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Language {
    /// C with clang and wasi-libc (Debian: clang lld wasi-libc libclang-rt-dev-wasm32).
    C,
    /// Python with componentize-py (PyPI: componentize-py==0.25.1); one module.
    Python,
    /// JavaScript with componentize-js (npm: @bytecodealliance/componentize-js@0.23.0); one
    /// module.
    Js,
}

#[derive(clap::Args)]
pub struct BuildArgs {
    /// The sources' language.
    #[arg(long, value_enum)]
    language: Language,
    /// The component to write.
    #[arg(short, long)]
    output: PathBuf,
    /// A directory to search for headers; repeatable.
    #[arg(short = 'I', long = "include")]
    include: Vec<PathBuf>,
    /// The operator sources, written against the SDK (`weir.h` for C, `import weir` for
    /// Python: one module).
    #[arg(required = true)]
    sources: Vec<PathBuf>,
}

pub fn build(args: BuildArgs) -> Result<()> {
    match args.language {
        Language::C => {
            if let Err(e) = weir_guest_build::c::build(&args.sources, &args.include, &args.output) {
                bail!("{e}");
            }
        }
        Language::Js => {
            let [module] = args.sources.as_slice() else {
                bail!("a JavaScript operator is one module");
            };
            if let Err(e) = weir_guest_build::js::build(module, &args.output) {
                bail!("{e}");
            }
        }
        Language::Python => {
            let [module] = args.sources.as_slice() else {
                bail!("a Python operator is one module (others beside it are importable)");
            };
            if let Err(e) = weir_guest_build::python::build(module, &args.output) {
                bail!("{e}");
            }
        }
    }
    eprintln!("Built `{}`", args.output.display());
    Ok(())
}

//! The layering of the runtime, checked against the code: each module may name only the
//! modules below it. The operator contract (`stream`) and the state layer are the floor; the
//! network, the connectors, checkpoint storage, the job model and the wasm layer stand on it
//! and know nothing of each other's callers; the runtime drives them; the cluster deploys
//! into the runtime.

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    /// Module -> the modules of this crate it may name (besides itself).
    const ALLOWED: &[(&str, &[&str])] = &[
        ("codec", &[]),
        ("metrics", &[]),
        ("state", &[]),
        ("stream", &["state"]),
        ("network", &["metrics", "state"]),
        // A connector acts on the job's description of it (`job::connectors`).
        ("connectors", &["job", "metrics", "state", "stream"]),
        ("checkpoint", &["codec", "state"]),
        ("job", &["state"]),
        ("wasm", &["state", "stream"]),
        (
            "runtime",
            &[
                "checkpoint",
                "codec",
                "connectors",
                "job",
                "metrics",
                "network",
                "state",
                "stream",
                "wasm",
            ],
        ),
    ];

    /// The modules of this crate a source text names: `crate::x` anywhere, and every
    /// top-level name of a grouped `use crate::{x, y::z}`. `root` is how the file reaches the
    /// crate root besides `crate::`: `super::` from a module's root file, `super::super::` from
    /// a file one folder down.
    fn named_modules(text: &str, root: &str) -> BTreeSet<String> {
        let mut names = scan(text, "crate::");
        names.extend(scan(text, root));
        names
    }

    fn scan(text: &str, prefix: &str) -> BTreeSet<String> {
        let mut names = BTreeSet::new();
        let mut rest = text;
        while let Some(at) = rest.find(prefix) {
            // `super::super::x` read with the prefix `super::` is not a sibling named `super`.
            if prefix == "super::" && rest[at + prefix.len()..].starts_with("super::") {
                rest = &rest[at + 2 * prefix.len()..];
                continue;
            }
            rest = &rest[at + prefix.len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let mut depth = 1;
                let mut item = String::new();
                for c in group.chars() {
                    match c {
                        '{' => depth += 1,
                        '}' => depth -= 1,
                        _ => {}
                    }
                    if depth == 0 || (depth == 1 && c == ',') {
                        if let Some(first) = item.trim().split("::").next()
                            && !first.is_empty()
                        {
                            names.insert(first.to_string());
                        }
                        item.clear();
                        if depth == 0 {
                            break;
                        }
                    } else if depth >= 1 {
                        item.push(c);
                    }
                }
            } else {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                names.insert(name);
            }
        }
        names
    }

    /// Every `.rs` file of module `module`, with how it reaches the crate root through
    /// `super`: its root file and everything under its folder.
    fn module_files(src: &Path, module: &str) -> Vec<(std::path::PathBuf, String)> {
        let mut files = vec![(src.join(format!("{module}.rs")), "super::".to_string())];
        let mut dirs = vec![(src.join(module), 2)];
        while let Some((dir, depth)) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    dirs.push((path, depth + 1));
                } else if path.extension().is_some_and(|e| e == "rs") {
                    files.push((path, "super::".repeat(depth)));
                }
            }
        }
        files.retain(|(f, _)| f.exists());
        files
    }

    #[test]
    fn every_module_names_only_the_modules_below_it() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut wrong = Vec::new();
        for (module, allowed) in ALLOWED {
            let files = module_files(&src, module);
            assert!(!files.is_empty(), "module `{module}` has no files");
            for (file, root) in files {
                let text = std::fs::read_to_string(&file).expect("source file");
                for named in named_modules(&text, &root) {
                    if named != *module && !allowed.contains(&named.as_str()) {
                        wrong.push(format!("{} names `crate::{named}`", file.display()));
                    }
                }
            }
        }
        assert!(wrong.is_empty(), "layering broken:\n{}", wrong.join("\n"));
    }

    #[test]
    fn every_module_of_the_crate_is_checked_or_on_top() {
        let lib = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs"))
            .expect("lib.rs");
        let declared: BTreeSet<&str> = lib
            .lines()
            .filter_map(|l| {
                l.trim()
                    .trim_start_matches("pub ")
                    .strip_prefix("mod ")?
                    .strip_suffix(';')
            })
            .collect();
        let mut covered: BTreeSet<&str> = ALLOWED.iter().map(|(m, _)| *m).collect();
        // The top floor and this check name what they like.
        covered.extend(["cluster", "layers"]);
        assert_eq!(declared, covered);
    }

    #[test]
    fn grouped_nested_and_super_imports_are_seen() {
        let names = named_modules(
            "use crate::{runtime::{Output, Mail}, wasm::X};\nfn f() { crate::cluster::run(); }\n\
             use super::super::job::Y;",
            "super::super::",
        );
        assert_eq!(
            names.into_iter().collect::<Vec<_>>(),
            ["cluster", "job", "runtime", "wasm"]
        );
        let root = named_modules("use super::state::Z;\nuse super::super::q;", "super::");
        assert_eq!(root.into_iter().collect::<Vec<_>>(), ["state"]);
    }

    #[test]
    fn grouped_and_nested_imports_are_seen() {
        let names = named_modules(
            "use crate::{runtime::{Output, Mail}, wasm::X};\nfn f() { crate::cluster::run(); }",
            "super::",
        );
        assert_eq!(
            names.into_iter().collect::<Vec<_>>(),
            ["cluster", "runtime", "wasm"]
        );
    }
}

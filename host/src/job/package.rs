//! A job as one `.wasm` file (`weir package`): a component with no code of its own whose custom
//! sections carry the job's manifest and every operator component it names, byte for byte (see
//! `docs/job-file.md`). Custom sections, not nested components: a nested component becomes part
//! of the outer one's type and is validated and instantiated with it, while weir loads, caches
//! (by content hash) and instantiates each operator component on its own; carried as bytes, a
//! component keeps its content hash, so packaging changes nothing in the compile cache, and the
//! outer file stays a valid component any wasm tool can read.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The custom section holding the format version.
const VERSION_SECTION: &str = "weir-job/version";
/// The custom section holding the manifest (TOML), its components named by content.
const MANIFEST_SECTION: &str = "weir-job/manifest";
/// The prefix of the custom sections holding components: then `<sha256 hex>.wasm`.
const COMPONENT_SECTION: &str = "weir-job/component/";
const FORMAT_VERSION: &str = "1";

/// A job file that cannot be made or read, naming what and where.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error("cannot read `{path}`: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("job manifest `{path}` is not valid TOML: {message}")]
    Manifest { path: PathBuf, message: String },
    #[error(
        "`{file}` is not a weir job file ({reason}); a job is a manifest (`weir run job.toml`), \
         a file made from one by `weir package job.toml -o job.wasm`, or a component with a plan"
    )]
    NotAJob { file: String, reason: String },
    #[error(
        "`{file}` is a component, not a job file made by `weir package`: it is a job only if \
         it carries a plan"
    )]
    OperatorComponent { file: String },
    #[error("`{file}` is a job file of format {found}; this weir reads format {FORMAT_VERSION}")]
    Version { file: String, found: String },
    #[error(
        "`{file}`: nested component `{name}` was altered: its bytes hash to {actual}, not to the \
         name it was packaged under"
    )]
    Altered {
        file: String,
        name: String,
        actual: String,
    },
    #[error("`{file}`: its manifest names component `{name}`, which the file does not carry")]
    Missing { file: String, name: String },
    #[error("cannot write `{path}`: {error}")]
    Write {
        path: PathBuf,
        error: std::io::Error,
    },
}

fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Appends an unsigned LEB128 number.
fn leb128(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn custom_section(name: &str, payload: &[u8], out: &mut Vec<u8>) {
    let mut body = Vec::with_capacity(name.len() + payload.len() + 5);
    leb128(name.len(), &mut body);
    body.extend_from_slice(name.as_bytes());
    body.extend_from_slice(payload);
    out.push(0);
    leb128(body.len(), out);
    out.extend_from_slice(&body);
}

/// The job file of the manifest at `manifest`: its text with each operator's `component`
/// replaced by the component's content name, and every component it names. `${...}`
/// placeholders stay for `--arg` at run time (a component path may not use one).
pub fn package(manifest: &Path) -> Result<Vec<u8>, PackageError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|error| PackageError::Read {
            path: path.to_path_buf(),
            error,
        })
    };
    let text = String::from_utf8_lossy(&read(manifest)?).into_owned();
    let invalid = |message: String| PackageError::Manifest {
        path: manifest.to_path_buf(),
        message,
    };
    let mut doc: toml::Table = toml::from_str(&text).map_err(|e| invalid(e.to_string()))?;
    let base = manifest.parent().unwrap_or(Path::new("."));
    let mut components: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    if let Some(toml::Value::Array(operators)) = doc.get_mut("operator") {
        for op in operators {
            let Some(toml::Value::String(path)) = op.get("component") else {
                continue;
            };
            if path.contains("${") {
                return Err(invalid(format!(
                    "component path `{path}` uses a placeholder; a job file carries its \
                     components, so their paths must be fixed"
                )));
            }
            let bytes = read(&base.join(path.as_str()))?;
            let name = format!("{}.wasm", hex_sha256(&bytes));
            op.as_table_mut()
                .map(|t| t.insert("component".into(), toml::Value::String(name.clone())));
            components.insert(name, bytes);
        }
    }
    let manifest_text = toml::to_string(&doc).map_err(|e| invalid(e.to_string()))?;
    // A component (layer 1) with only custom sections.
    let mut out = b"\0asm\x0d\x00\x01\x00".to_vec();
    custom_section(VERSION_SECTION, FORMAT_VERSION.as_bytes(), &mut out);
    custom_section(MANIFEST_SECTION, manifest_text.as_bytes(), &mut out);
    for (name, bytes) in &components {
        custom_section(&format!("{COMPONENT_SECTION}{name}"), bytes, &mut out);
    }
    Ok(out)
}

/// What a job file holds.
#[derive(Debug)]
pub struct JobFile {
    pub manifest: String,
    /// Components by content name (`<sha256>.wasm`), their hashes checked.
    pub components: BTreeMap<String, Vec<u8>>,
}

/// Whether `bytes` look like a job file (a component whose first section says so), rather than
/// a manifest: for the CLI to tell `weir run job.wasm` from `weir run job.toml`.
pub fn is_wasm(bytes: &[u8]) -> bool {
    bytes.starts_with(b"\0asm")
}

/// Reads a job file (`file` names it in messages), checking every component against its hash.
pub fn unpack(file: &str, bytes: &[u8]) -> Result<JobFile, PackageError> {
    let not_a_job = |reason: String| PackageError::NotAJob {
        file: file.to_string(),
        reason,
    };
    let mut version = None;
    let mut manifest = None;
    let mut components = BTreeMap::new();
    let mut has_code = false;
    let mut seen_version = false;
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(|e| not_a_job(format!("{e}")))?;
        match payload {
            // The first is the file's own; later ones open the modules nested in a component.
            wasmparser::Payload::Version { encoding, .. } if !seen_version => {
                seen_version = true;
                if encoding != wasmparser::Encoding::Component {
                    return Err(not_a_job("a core module, not a component".into()));
                }
            }
            wasmparser::Payload::CustomSection(section) => {
                let name = section.name();
                let data = section.data();
                if name == VERSION_SECTION {
                    version = Some(String::from_utf8_lossy(data).into_owned());
                } else if name == MANIFEST_SECTION {
                    manifest = Some(
                        String::from_utf8(data.to_vec())
                            .map_err(|_| not_a_job("its manifest is not UTF-8".into()))?,
                    );
                } else if let Some(component) = name.strip_prefix(COMPONENT_SECTION) {
                    let actual = format!("{}.wasm", hex_sha256(data));
                    if actual != component {
                        return Err(PackageError::Altered {
                            file: file.to_string(),
                            name: component.to_string(),
                            actual,
                        });
                    }
                    components.insert(component.to_string(), data.to_vec());
                }
            }
            wasmparser::Payload::End(_) => {}
            _ => has_code = true,
        }
    }
    match (version, manifest) {
        (Some(v), _) if v != FORMAT_VERSION => Err(PackageError::Version {
            file: file.to_string(),
            found: v,
        }),
        (Some(_), Some(manifest)) => Ok(JobFile {
            manifest,
            components,
        }),
        (None, _) if has_code => Err(PackageError::OperatorComponent {
            file: file.to_string(),
        }),
        _ => Err(not_a_job("it carries no job manifest".into())),
    }
}

impl JobFile {
    /// Writes the manifest (`job.toml`) and its components into `dir`, where the manifest
    /// finds them; the path of the manifest.
    pub fn write_to(&self, file: &str, dir: &Path) -> Result<PathBuf, PackageError> {
        let doc: toml::Table =
            toml::from_str(&self.manifest).map_err(|e| PackageError::Manifest {
                path: PathBuf::from(file),
                message: e.to_string(),
            })?;
        if let Some(toml::Value::Array(operators)) = doc.get("operator") {
            for op in operators {
                if let Some(toml::Value::String(name)) = op.get("component")
                    && !self.components.contains_key(name)
                {
                    return Err(PackageError::Missing {
                        file: file.to_string(),
                        name: name.clone(),
                    });
                }
            }
        }
        let write = |path: PathBuf, bytes: &[u8]| {
            std::fs::write(&path, bytes).map_err(|error| PackageError::Write { path, error })
        };
        std::fs::create_dir_all(dir).map_err(|error| PackageError::Write {
            path: dir.to_path_buf(),
            error,
        })?;
        for (name, bytes) in &self.components {
            write(dir.join(name), bytes)?;
        }
        let manifest = dir.join("job.toml");
        write(manifest.clone(), self.manifest.as_bytes())?;
        Ok(manifest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(dir: &Path) -> PathBuf {
        std::fs::write(dir.join("op.wasm"), b"\0asm\x0d\x00\x01\x00 pretend").unwrap();
        let manifest = dir.join("job.toml");
        std::fs::write(
            &manifest,
            "name = \"j\"\n[[source]]\nid = \"in\"\nkind = \"file\"\npath = \"${input}\"\n\
             [[operator]]\nid = \"up\"\ncomponent = \"op.wasm\"\ninput = \"in\"\n\
             [[sink]]\nid = \"out\"\nkind = \"stdout\"\ninput = \"up\"\n",
        )
        .unwrap();
        manifest
    }

    #[test]
    fn a_packaged_job_is_a_valid_component_that_gives_back_its_manifest_and_components() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = package(&job(dir.path())).unwrap();
        wasmparser::Validator::new_with_features(wasmparser::WasmFeatures::all())
            .validate_all(&bytes)
            .expect("a valid component");
        let file = unpack("job.wasm", &bytes).unwrap();
        let name = format!("{}.wasm", hex_sha256(b"\0asm\x0d\x00\x01\x00 pretend"));
        assert_eq!(file.components.keys().collect::<Vec<_>>(), vec![&name]);
        assert!(file.manifest.contains(&format!("component = \"{name}\"")));
        assert!(file.manifest.contains("${input}"), "placeholders stay");
        let out = dir.path().join("unpacked");
        let manifest = file.write_to("job.wasm", &out).unwrap();
        assert_eq!(
            std::fs::read(out.join(&name)).unwrap(),
            b"\0asm\x0d\x00\x01\x00 pretend"
        );
        assert!(manifest.is_file());
    }

    #[test]
    fn an_altered_component_a_module_and_an_operator_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = package(&job(dir.path())).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let err = unpack("job.wasm", &bytes).unwrap_err().to_string();
        assert!(err.contains("was altered"), "{err}");
        let err = unpack("m.wasm", b"\0asm\x01\0\0\0")
            .unwrap_err()
            .to_string();
        assert!(err.contains("a core module"), "{err}");
        let err = unpack("x.wasm", b"not wasm").unwrap_err().to_string();
        assert!(err.contains("not a weir job file"), "{err}");
    }
}

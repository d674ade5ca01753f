//! A tenant's job reaches only the directories granted to the tenant: every path a submission
//! names (file sources and sinks, the checkpoint directory, the savepoint to start from) and
//! every savepoint directory a tenant asks for is resolved (its existing part through the
//! file system, so `..` and symlinks are followed as the OS would follow them; the rest must
//! not climb with `..`) and must then lie under a granted directory. The resolved path is the
//! one used, so a symlink present at submission cannot redirect the job later.

use std::path::{Component, Path, PathBuf};

use super::submission::JobSubmission;
use super::tenants::Tenant;
use crate::job::{SinkSpec, SourceSpec, VertexInput, VertexOutput};

/// A path a tenant may not reach.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "tenant `{tenant}` may not reach `{path}` ({what}): it is outside the directories granted \
     to it{granted}"
)]
pub struct OutsideGranted {
    pub tenant: String,
    pub what: String,
    pub path: PathBuf,
    granted: String,
}

/// `path` with its existing part resolved by the file system and the rest taken as it is;
/// `None` if the rest climbs out with `..` or the path is relative.
fn resolve(path: &Path) -> Option<PathBuf> {
    if !path.is_absolute() {
        return None;
    }
    let mut existing = path.to_path_buf();
    let mut rest = Vec::new();
    let resolved = loop {
        match existing.canonicalize() {
            Ok(resolved) => break resolved,
            // Only a component that is not there at all is taken as it is: a dangling
            // symlink is there, and opening a file through it would follow it.
            Err(_) if std::fs::symlink_metadata(&existing).is_err() => {
                rest.push(existing.file_name()?.to_os_string());
                existing = existing.parent()?.to_path_buf();
            }
            Err(_) => return None,
        }
    };
    let mut out = resolved;
    for part in rest.iter().rev() {
        match Path::new(part).components().next() {
            Some(Component::Normal(_)) => out.push(part),
            _ => return None,
        }
    }
    Some(out)
}

/// `path`, resolved, if it lies under one of `tenant`'s granted directories.
pub fn confine(tenant: &Tenant, what: &str, path: &Path) -> Result<PathBuf, OutsideGranted> {
    let refused = || OutsideGranted {
        tenant: tenant.name.clone(),
        what: what.to_string(),
        path: path.to_path_buf(),
        granted: if tenant.dirs.is_empty() {
            " (none are)".into()
        } else {
            format!(
                ": {}",
                tenant
                    .dirs
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        },
    };
    let resolved = resolve(path).ok_or_else(refused)?;
    let inside = tenant.dirs.iter().any(|dir| {
        dir.canonicalize()
            .is_ok_and(|granted| resolved.starts_with(granted))
    });
    if inside { Ok(resolved) } else { Err(refused()) }
}

/// Confines every path `submission` names to `tenant`'s granted directories, replacing each
/// by its resolved form.
pub fn confine_submission(
    tenant: &Tenant,
    submission: &mut JobSubmission,
) -> Result<(), OutsideGranted> {
    for vertex in &mut submission.graph.vertices {
        if let VertexInput::Source(SourceSpec::File { path }) = &mut vertex.input {
            *path = confine(tenant, "a file source", path)?;
        }
        if let VertexOutput::Sink(SinkSpec::File { path }) = &mut vertex.output {
            *path = confine(tenant, "a file sink", path)?;
        }
    }
    if let Some((dir, _)) = &mut submission.checkpoints {
        *dir = confine(tenant, "the checkpoint directory", dir)?;
    }
    if let Some(path) = &mut submission.restore {
        *path = confine(tenant, "the savepoint to start from", path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(dirs: Vec<PathBuf>) -> Tenant {
        let mut t = super::super::tenants::parse(
            "[[tenant]]\nname = \"alice\"\ntokens = []\n",
            Path::new("t.toml"),
        )
        .unwrap()
        .remove(0);
        t.dirs = dirs;
        t
    }

    #[test]
    fn dot_dot_absolute_paths_and_symlinks_out_of_the_granted_directory_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let (mine, theirs) = (root.path().join("alice"), root.path().join("bob"));
        std::fs::create_dir_all(mine.join("in")).unwrap();
        std::fs::create_dir_all(theirs.join("chk")).unwrap();
        std::os::unix::fs::symlink(&theirs, mine.join("link")).unwrap();
        std::os::unix::fs::symlink(theirs.join("not-yet"), mine.join("dangling")).unwrap();
        let alice = tenant(vec![mine.clone()]);
        let ok = confine(&alice, "x", &mine.join("in/new/deeper")).unwrap();
        assert!(ok.ends_with("alice/in/new/deeper"), "{}", ok.display());
        for path in [
            mine.join("../bob/chk"),
            mine.join("in/../../bob/chk"),
            theirs.join("chk"),
            mine.join("link/chk"),
            mine.join("missing/../../bob"),
            mine.join("dangling"),
            mine.join("dangling/below"),
            PathBuf::from("relative/path"),
        ] {
            let err = confine(&alice, "the checkpoint directory", &path).unwrap_err();
            assert!(
                err.to_string().contains("outside the directories granted"),
                "{}: {err}",
                path.display()
            );
        }
        let nobody = tenant(Vec::new());
        let err = confine(&nobody, "a file sink", &mine.join("out")).unwrap_err();
        assert!(err.to_string().ends_with("(none are)"), "{err}");
    }
}

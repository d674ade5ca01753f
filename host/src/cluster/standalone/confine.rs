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

/// A tenant's job uses connectors to external systems only if the tenant was granted them,
/// and gives their passwords only as files under its granted directories: an environment
/// variable or any other file is the cluster's, which the job would hand to a server of its
/// choosing.
pub fn confine_connectors(
    tenant: &Tenant,
    submission: &mut JobSubmission,
) -> Result<(), super::job_store::SubmitRefused> {
    use super::job_store::SubmitRefused;
    use crate::job::Secret;
    for vertex in &mut submission.graph.vertices {
        let node = vertex.node_ids.last().cloned().unwrap_or_default();
        let secret = match (&mut vertex.input, &mut vertex.output) {
            (VertexInput::Source(SourceSpec::Nats(s)), _) => Some(&mut s.password),
            (VertexInput::Source(SourceSpec::Kafka(_)), _) => None,
            (_, VertexOutput::Sink(SinkSpec::Postgres(s))) => Some(&mut s.password),
            (_, VertexOutput::Sink(SinkSpec::Nats(s))) => Some(&mut s.password),
            (_, VertexOutput::Sink(SinkSpec::Kafka(_))) => None,
            _ => continue,
        };
        if !tenant.connectors {
            return Err(SubmitRefused::NotGranted(format!(
                "tenant `{}` may not use connectors to external systems (`{node}`); the \
                 tenants file grants them with capabilities = [\"connectors\"]",
                tenant.name
            )));
        }
        match secret.and_then(Option::as_mut) {
            Some(Secret::Env(var)) => {
                return Err(SubmitRefused::NotGranted(format!(
                    "tenant `{}` may not read environment variable `{var}` (`{node}`): give the \
                     password with password_file, under a granted directory",
                    tenant.name
                )));
            }
            Some(Secret::File(path)) => *path = confine(tenant, "a password file", path)?,
            None => {}
        }
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

#[cfg(test)]
mod connector_tests {
    use super::*;

    fn submission(password: &str) -> JobSubmission {
        let manifest = format!(
            "name = \"pg\"\n[[source]]\nid = \"in\"\nkind = \"sequence\"\ncount = 1\n\
             [[sink]]\nid = \"rows\"\nkind = \"postgres\"\nurl = \"postgresql://weir@127.0.0.1/db\"\n\
             table = \"t\"\ninput = \"in\"\n{password}\n"
        );
        let graph = crate::job::parse_manifest(&manifest, &Default::default())
            .unwrap()
            .job_graph(None)
            .unwrap();
        JobSubmission::new(graph).unwrap()
    }

    fn tenant(capabilities: &str, dirs: Vec<PathBuf>) -> Tenant {
        let mut t = super::super::tenants::parse(
            &format!(
                "[[tenant]]\nname = \"alice\"\ntokens = []\ncapabilities = [{capabilities}]\n"
            ),
            Path::new("t.toml"),
        )
        .unwrap()
        .remove(0);
        t.dirs = dirs;
        t
    }

    #[test]
    fn connectors_need_the_grant_and_passwords_come_only_from_granted_files() {
        let dir = tempfile::tempdir().unwrap();
        let granted = dir.path().join("alice");
        std::fs::create_dir_all(&granted).unwrap();
        let refused = |t: &Tenant, password: &str| {
            confine_connectors(t, &mut submission(password))
                .unwrap_err()
                .to_string()
        };
        let plain = tenant("", vec![granted.clone()]);
        assert!(
            refused(&plain, "").contains("may not use connectors to external systems (`rows`)")
        );
        let allowed = tenant("\"connectors\"", vec![granted.clone()]);
        assert!(
            refused(&allowed, "password_env = \"HOME\"")
                .contains("may not read environment variable `HOME`")
        );
        assert!(
            refused(&allowed, "password_file = \"/etc/shadow\"")
                .contains("outside the directories granted")
        );
        let inside = granted.join("pw");
        std::fs::write(&inside, "x").unwrap();
        let mut ok = submission(&format!(
            "password_file = {:?}",
            inside.display().to_string()
        ));
        confine_connectors(&allowed, &mut ok).unwrap();
        confine_connectors(&allowed, &mut submission("")).unwrap();
    }
}

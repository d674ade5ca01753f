//! Guests' log lines of one job, in a file of the job's own on the TaskManager: under
//! `<log dir>/tenants/<tenant>/<job id>/guest.log` for a tenant's job, `<log dir>/jobs/<job
//! id>/guest.log` otherwise, so a tenant's logs live in its namespace and one job's output is
//! never mixed into another's or the TaskManager's own log.
//!
//! Each instance's output is already capped in bytes and lines ([`crate::wasm::ECHOED_LINES`]),
//! so the file of a job grows at most by those caps per operator subtask and attempt.

use std::fs::{File, OpenOptions};
use std::io::{LineWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::wasm::LogSink;

/// Whose job a log belongs to, as the job master names it at registration.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RegisteredJob {
    /// Whether the job checkpoints.
    pub checkpointing: bool,
    /// The dispatcher's job id (32 hex digits); `None` for a job run without a dispatcher.
    pub job_id: Option<String>,
    /// The tenant that submitted it.
    pub tenant: Option<String>,
}

/// The directory of a job's logs under `log_dir`; `None` if the id or the tenant's name
/// could name anything but one directory (the job master sends checked names; a TaskManager
/// checks them again rather than trust a path built from them).
pub fn job_log_dir(log_dir: &Path, tenant: Option<&str>, job_id: &str) -> Option<PathBuf> {
    let plain = |s: &str, len: usize| {
        !s.is_empty()
            && s.len() <= len
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
            && !s.starts_with(['-', '_'])
    };
    if !plain(job_id, 64) {
        return None;
    }
    Some(match tenant {
        Some(tenant) if plain(tenant, 63) => log_dir.join("tenants").join(tenant).join(job_id),
        Some(_) => return None,
        None => log_dir.join("jobs").join(job_id),
    })
}

/// A job's `guest.log`, appended to by every attempt of the job on this TaskManager.
pub struct JobLogFile {
    path: PathBuf,
    file: Mutex<LineWriter<File>>,
}

impl JobLogFile {
    /// Opens (creating) the job's log under `log_dir`.
    pub fn open(log_dir: &Path, tenant: Option<&str>, job_id: &str) -> std::io::Result<Self> {
        let dir = job_log_dir(log_dir, tenant, job_id).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("job id `{job_id}` or tenant {tenant:?} cannot name a log directory"),
            )
        })?;
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("guest.log");
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        Ok(JobLogFile {
            path,
            file: Mutex::new(LineWriter::new(file)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl LogSink for JobLogFile {
    fn line(&self, source: &str, stream: &str, line: &str) {
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        // A full disk loses log lines, never the job.
        let _ = writeln!(file, "[{source} {stream}] {line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jobs_lines_go_to_its_own_file_under_its_tenant() {
        let dir = tempfile::tempdir().unwrap();
        let id = "0123456789abcdef0123456789abcdef";
        let log = JobLogFile::open(dir.path(), Some("alice"), id).unwrap();
        log.line("upper#0", "info", "hello");
        log.line("upper#1", "stdout", "world");
        let again = JobLogFile::open(dir.path(), Some("alice"), id).unwrap();
        again.line("upper#0", "warn", "after a restart");
        let path = dir.path().join("tenants/alice").join(id).join("guest.log");
        assert_eq!(log.path(), path);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "[upper#0 info] hello\n[upper#1 stdout] world\n[upper#0 warn] after a restart\n"
        );
        let untenanted = JobLogFile::open(dir.path(), None, id).unwrap();
        assert_eq!(
            untenanted.path(),
            dir.path().join("jobs").join(id).join("guest.log")
        );
    }

    #[test]
    fn names_that_could_climb_or_nest_name_no_directory() {
        let dir = Path::new("/logs");
        for (tenant, id) in [
            (None, "../etc"),
            (None, "a/b"),
            (None, ""),
            (Some("../bob"), "abc"),
            (Some("Bob"), "abc"),
            (Some(""), "abc"),
            (Some("-x"), "abc"),
        ] {
            assert_eq!(job_log_dir(dir, tenant, id), None, "{tenant:?} {id}");
            assert!(JobLogFile::open(dir, tenant, id).is_err());
        }
    }
}

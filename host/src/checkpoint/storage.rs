//! Where checkpoints live and what their files hold.
//!
//! Layout: `<checkpoint dir>/<job>/chk-<n>/` holds one state file per operator subtask and a
//! `_metadata` file, written last and atomically (write, fsync, rename), that lists every
//! handle with its size and checksum. A checkpoint without a valid `_metadata`, or whose files
//! do not match it, is not complete: restore then uses the one before, with a warning.
//!
//! A state file:
//!
//! ```text
//! "WEIRSTAT" version:u32
//! header_len:u32 header            operator, subtask, parallelism, own state, timers
//! key-group blocks, ascending      one per key group with state: every state's entries of it
//! index                            (key group, offset, length) per block
//! index_offset:u64 index_len:u64 crc32:u32 "WEIREND!"
//! ```
//!
//! The index lets a restore at another parallelism decode only the key groups of its range.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::codec;
use crate::state::{KeyedStateSnapshot, OperatorSnapshot, StateData, TimerSnapshot};

const MAGIC: &[u8; 8] = b"WEIRSTAT";
const MAGIC_END: &[u8; 8] = b"WEIREND!";
/// 2: key groups from the word-at-a-time key hash (`state::key_groups::key_hash`); a file of
/// version 1 grouped its keys by the earlier byte-wise hash, and restoring it now would put
/// state where its records no longer go, so it is refused by name.
const VERSION: u32 = 2;
const FOOTER: usize = 8 + 8 + 4 + 8;
/// Name of the file that makes a checkpoint directory complete.
pub const METADATA: &str = "_metadata";

/// A state file as the metadata lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateHandle {
    /// The operator's node id in the job.
    pub operator: String,
    pub subtask: u32,
    pub parallelism: u32,
    /// File name inside the checkpoint directory.
    pub file: String,
    pub bytes: u64,
    pub crc32: u32,
}

/// Where a source subtask was: the ranges (bytes of a file, numbers of a sequence) it had not
/// read yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceState {
    pub source: String,
    pub subtask: u32,
    pub remaining: Vec<(u64, u64)>,
}

/// The `_metadata` of a complete checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointMetadata {
    pub job: String,
    pub checkpoint: u64,
    pub savepoint: bool,
    /// The job's final checkpoint: taken after every source ended, it holds the finished job,
    /// and a restore from it has nothing left to run.
    pub final_checkpoint: bool,
    pub max_parallelism: u32,
    pub operators: Vec<StateHandle>,
    pub sources: Vec<SourceState>,
}

#[derive(Serialize, Deserialize)]
struct Header {
    operator: String,
    subtask: u32,
    parallelism: u32,
    max_parallelism: u32,
    own_state: Vec<u8>,
    timers: TimerSnapshot,
    /// State names and kinds, so empty states survive too.
    states: Vec<(String, bool)>,
}

/// Entries of one state in one key group.
#[derive(Serialize, Deserialize)]
enum GroupEntries {
    Value(Vec<(Vec<u8>, Vec<u8>)>),
    Map(Vec<(Vec<u8>, Vec<(Vec<u8>, Vec<u8>)>)>),
}

/// Why a checkpoint cannot be restored.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("cannot read `{path}`: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("`{path}` is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("no complete checkpoint under `{0}`")]
    NoCheckpoint(PathBuf),
    #[error("{0}")]
    Incompatible(String),
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> RestoreError + '_ {
    move |error| RestoreError::Io {
        path: path.to_path_buf(),
        error,
    }
}

fn corrupt(path: &Path, reason: impl Into<String>) -> RestoreError {
    RestoreError::Corrupt {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Writes `bytes` to `path` durably: a temporary file, fsync, rename.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("inprogress");
    let mut file = fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        // Make the rename itself durable.
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// Encodes an operator subtask's snapshot as a state file.
pub fn encode_state_file(snapshot: &OperatorSnapshot) -> Vec<u8> {
    let mut groups: BTreeMap<u32, Vec<(String, GroupEntries)>> = BTreeMap::new();
    let mut states = Vec::new();
    for (name, data) in &snapshot.keyed.states {
        match data {
            StateData::Value(g) => {
                states.push((name.clone(), false));
                for (kg, entries) in g {
                    groups
                        .entry(*kg)
                        .or_default()
                        .push((name.clone(), GroupEntries::Value(entries.clone())));
                }
            }
            StateData::Map(g) => {
                states.push((name.clone(), true));
                for (kg, entries) in g {
                    groups
                        .entry(*kg)
                        .or_default()
                        .push((name.clone(), GroupEntries::Map(entries.clone())));
                }
            }
        }
    }
    let header = codec::encode(&Header {
        operator: snapshot.operator.clone(),
        subtask: snapshot.subtask,
        parallelism: snapshot.parallelism,
        max_parallelism: snapshot.keyed.max_parallelism,
        own_state: snapshot.guest_state.clone(),
        timers: snapshot.timers.clone(),
        states,
    });
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    out.extend_from_slice(&header);
    let mut index: Vec<(u32, u64, u64)> = Vec::new();
    for (kg, entries) in &groups {
        let block = codec::encode(entries);
        index.push((*kg, out.len() as u64, block.len() as u64));
        out.extend_from_slice(&block);
    }
    let index_bytes = codec::encode(&index);
    let index_offset = out.len() as u64;
    out.extend_from_slice(&index_bytes);
    out.extend_from_slice(&index_offset.to_le_bytes());
    out.extend_from_slice(&(index_bytes.len() as u64).to_le_bytes());
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(MAGIC_END);
    out
}

/// The checksum an encoded state file carries (what its handle records).
pub fn state_file_crc(bytes: &[u8]) -> u32 {
    let at = bytes.len() - 12;
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

/// Checks a state file's frame and checksum; returns the checksum.
fn verify(path: &Path, bytes: &[u8]) -> Result<u32, RestoreError> {
    if bytes.len() < 16 + FOOTER || &bytes[..8] != MAGIC || &bytes[bytes.len() - 8..] != MAGIC_END {
        return Err(corrupt(path, "not a weir state file, or truncated"));
    }
    let body = bytes.len() - 12;
    let stored = u32::from_le_bytes(bytes[body..body + 4].try_into().expect("4 bytes"));
    let actual = crc32fast::hash(&bytes[..body]);
    if stored != actual {
        return Err(corrupt(
            path,
            format!("checksum {actual:08x} does not match the stored {stored:08x}"),
        ));
    }
    Ok(stored)
}

/// Reads a state file, keeping only the key groups in `key_groups`.
pub fn read_state_file(
    path: &Path,
    expected_crc: u32,
    key_groups: Range<u32>,
) -> Result<OperatorSnapshot, RestoreError> {
    let bytes = fs::read(path).map_err(io_error(path))?;
    let crc = verify(path, &bytes)?;
    if crc != expected_crc {
        return Err(corrupt(
            path,
            "the file is not the one the checkpoint's metadata lists",
        ));
    }
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    let version = u32_at(8);
    if version != VERSION {
        return Err(corrupt(
            path,
            format!("state file version {version}; this weir reads {VERSION}"),
        ));
    }
    let header_len = u32_at(12) as usize;
    let footer_at = bytes.len() - FOOTER;
    let slice = |from: usize, len: usize| -> Result<&[u8], RestoreError> {
        bytes
            .get(
                from..from
                    .checked_add(len)
                    .filter(|&e| e <= footer_at)
                    .ok_or_else(|| corrupt(path, "a section runs past the end"))?,
            )
            .ok_or_else(|| corrupt(path, "a section runs past the end"))
    };
    let header: Header =
        codec::decode(slice(16, header_len)?).map_err(|e| corrupt(path, format!("header: {e}")))?;
    let (index_offset, index_len) = (u64_at(footer_at) as usize, u64_at(footer_at + 8) as usize);
    let index: Vec<(u32, u64, u64)> = codec::decode(slice(index_offset, index_len)?)
        .map_err(|e| corrupt(path, format!("index: {e}")))?;
    let mut states: BTreeMap<String, StateData> = header
        .states
        .iter()
        .map(|(name, is_map)| {
            let data = if *is_map {
                StateData::Map(BTreeMap::new())
            } else {
                StateData::Value(BTreeMap::new())
            };
            (name.clone(), data)
        })
        .collect();
    for (kg, offset, len) in index
        .into_iter()
        .filter(|(kg, _, _)| key_groups.contains(kg))
    {
        let entries: Vec<(String, GroupEntries)> =
            codec::decode(slice(offset as usize, len as usize)?)
                .map_err(|e| corrupt(path, format!("key group {kg}: {e}")))?;
        for (name, group) in entries {
            match (states.get_mut(&name), group) {
                (Some(StateData::Value(g)), GroupEntries::Value(e)) => {
                    g.insert(kg, e);
                }
                (Some(StateData::Map(g)), GroupEntries::Map(e)) => {
                    g.insert(kg, e);
                }
                _ => {
                    return Err(corrupt(
                        path,
                        format!("key group {kg} holds state `{name}` the header does not declare"),
                    ));
                }
            }
        }
    }
    Ok(OperatorSnapshot {
        operator: header.operator,
        subtask: header.subtask,
        parallelism: header.parallelism,
        guest_state: header.own_state,
        keyed: KeyedStateSnapshot {
            max_parallelism: header.max_parallelism,
            states,
        },
        timers: header.timers,
    })
}

/// Writes `_metadata`, completing the checkpoint in `dir`.
pub fn write_metadata(dir: &Path, metadata: &CheckpointMetadata) -> std::io::Result<()> {
    let mut bytes = codec::encode(metadata);
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    write_atomically(&dir.join(METADATA), &bytes)
}

/// Reads and checks `_metadata` of `dir` and every state file it lists.
pub fn read_metadata(dir: &Path) -> Result<CheckpointMetadata, RestoreError> {
    let path = dir.join(METADATA);
    let bytes = fs::read(&path).map_err(io_error(&path))?;
    if bytes.len() < 4 {
        return Err(corrupt(&path, "truncated"));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32fast::hash(body).to_le_bytes() != crc {
        return Err(corrupt(&path, "checksum mismatch"));
    }
    let metadata: CheckpointMetadata =
        codec::decode(body).map_err(|e| corrupt(&path, e.to_string()))?;
    for handle in &metadata.operators {
        // A state file is a plain name in the checkpoint's own directory: metadata that
        // names one elsewhere (absolute, or with `..`) is not the writer's.
        let mut parts = Path::new(&handle.file).components();
        if !matches!(
            (parts.next(), parts.next()),
            (Some(std::path::Component::Normal(_)), None)
        ) {
            return Err(corrupt(
                &path,
                format!(
                    "names the state file `{}` outside its directory",
                    handle.file
                ),
            ));
        }
        let file = dir.join(&handle.file);
        let state = fs::read(&file).map_err(io_error(&file))?;
        if state.len() as u64 != handle.bytes || verify(&file, &state)? != handle.crc32 {
            return Err(corrupt(
                &file,
                "does not match the size and checksum in _metadata",
            ));
        }
    }
    Ok(metadata)
}

/// The `chk-<n>` directories under a job's checkpoint directory, newest first.
pub fn checkpoint_dirs(job_dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut dirs: Vec<(u64, PathBuf)> = fs::read_dir(job_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let n = name.strip_prefix("chk-")?.parse().ok()?;
            Some((n, e.path()))
        })
        .collect();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.0));
    dirs
}

/// A checkpoint chosen for restore, and the newer ones passed over.
#[derive(Debug)]
pub struct RestoredState {
    pub dir: PathBuf,
    pub metadata: CheckpointMetadata,
    /// Why newer checkpoints were not used (each a warning to show).
    pub skipped: Vec<String>,
}

/// Resolves `path` for restore: a `chk-<n>` or savepoint directory (a directory with
/// `_metadata`), or a job's checkpoint directory, whose newest complete checkpoint is used.
pub fn resolve(path: &Path) -> Result<RestoredState, RestoreError> {
    if path.join(METADATA).exists() {
        let metadata = read_metadata(path)?;
        return Ok(RestoredState {
            dir: path.to_path_buf(),
            metadata,
            skipped: Vec::new(),
        });
    }
    let mut skipped = Vec::new();
    for (_, dir) in checkpoint_dirs(path) {
        match read_metadata(&dir) {
            Ok(metadata) => {
                return Ok(RestoredState {
                    dir,
                    metadata,
                    skipped,
                });
            }
            Err(e) => skipped.push(format!("skipping checkpoint `{}`: {e}", dir.display())),
        }
    }
    if !path.exists() {
        return Err(RestoreError::Io {
            path: path.to_path_buf(),
            error: std::io::Error::new(std::io::ErrorKind::NotFound, "no such directory"),
        });
    }
    Err(RestoreError::NoCheckpoint(path.to_path_buf()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{KeyedStateBackend, StateKind, TimeDomain, TimerService};

    fn snapshot() -> OperatorSnapshot {
        let mut backend = KeyedStateBackend::new(128, 10);
        let v = backend.declare("count", StateKind::Value).unwrap();
        let m = backend.declare("seen", StateKind::Map).unwrap();
        backend.declare("empty", StateKind::Value).unwrap();
        for i in 0..300u32 {
            backend.value_set(v, &i.to_le_bytes(), &[i as u8]).unwrap();
            backend.map_put(m, &i.to_le_bytes(), b"k", b"v").unwrap();
        }
        let mut timers = TimerService::default();
        timers.register(TimeDomain::EventTime, b"k", 5);
        OperatorSnapshot {
            operator: "count".into(),
            subtask: 1,
            parallelism: 2,
            guest_state: b"own".to_vec(),
            keyed: backend.snapshot(),
            timers: timers.snapshot(),
        }
    }

    #[test]
    fn state_file_round_trips_and_reads_key_group_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        let bytes = encode_state_file(&snapshot());
        fs::write(&path, &bytes).unwrap();
        let crc = verify(&path, &bytes).unwrap();
        assert_eq!(read_state_file(&path, crc, 0..128).unwrap(), snapshot());
        let part = read_state_file(&path, crc, 0..10).unwrap();
        let StateData::Value(groups) = &part.keyed.states["count"] else {
            panic!()
        };
        assert!(groups.keys().all(|kg| *kg < 10) && !groups.is_empty());
        assert!(part.keyed.states.contains_key("empty"));
    }

    #[test]
    fn a_flipped_byte_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        let mut bytes = encode_state_file(&snapshot());
        let crc = crc32fast::hash(&bytes[..bytes.len() - 12]);
        bytes[40] ^= 1;
        fs::write(&path, &bytes).unwrap();
        let err = read_state_file(&path, crc, 0..128).unwrap_err();
        assert!(err.to_string().contains("checksum"), "{err}");
    }

    #[test]
    fn a_state_file_of_the_earlier_version_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        // A whole version-1 file: its own checksum is right.
        let mut bytes = encode_state_file(&snapshot());
        bytes[8..12].copy_from_slice(&1u32.to_le_bytes());
        let body = bytes.len() - 12;
        let crc = crc32fast::hash(&bytes[..body]);
        bytes[body..body + 4].copy_from_slice(&crc.to_le_bytes());
        fs::write(&path, &bytes).unwrap();
        let err = read_state_file(&path, crc, 0..128).unwrap_err();
        assert!(
            err.to_string()
                .contains("state file version 1; this weir reads 2"),
            "{err}"
        );
    }

    #[test]
    fn resolve_falls_back_past_a_corrupt_newest_checkpoint() {
        let job = tempfile::tempdir().unwrap();
        for n in [1u64, 2] {
            let dir = job.path().join(format!("chk-{n}"));
            fs::create_dir_all(&dir).unwrap();
            let bytes = encode_state_file(&snapshot());
            fs::write(dir.join("count-1"), &bytes).unwrap();
            let handle = StateHandle {
                operator: "count".into(),
                subtask: 1,
                parallelism: 2,
                file: "count-1".into(),
                bytes: bytes.len() as u64,
                crc32: crc32fast::hash(&bytes[..bytes.len() - 12]),
            };
            let meta = CheckpointMetadata {
                job: "j".into(),
                checkpoint: n,
                savepoint: false,
                final_checkpoint: false,
                max_parallelism: 128,
                operators: vec![handle],
                sources: vec![],
            };
            write_metadata(&dir, &meta).unwrap();
        }
        assert_eq!(resolve(job.path()).unwrap().metadata.checkpoint, 2);
        let file = job.path().join("chk-2/count-1");
        let mut bytes = fs::read(&file).unwrap();
        bytes[30] ^= 0xff;
        fs::write(&file, bytes).unwrap();
        let restored = resolve(job.path()).unwrap();
        assert_eq!(restored.metadata.checkpoint, 1);
        assert_eq!(restored.skipped.len(), 1);
        assert!(
            restored.skipped[0].contains("chk-2"),
            "{:?}",
            restored.skipped
        );
    }

    #[test]
    fn metadata_naming_a_state_file_outside_its_directory_is_corrupt() {
        let root = tempfile::tempdir().unwrap();
        let (dir, elsewhere) = (root.path().join("chk-1"), root.path().join("other"));
        fs::create_dir_all(&dir).unwrap();
        fs::create_dir_all(&elsewhere).unwrap();
        let bytes = encode_state_file(&snapshot());
        fs::write(elsewhere.join("count-1"), &bytes).unwrap();
        for file in [
            "../other/count-1".to_string(),
            elsewhere.join("count-1").display().to_string(),
        ] {
            let meta = CheckpointMetadata {
                job: "j".into(),
                checkpoint: 1,
                savepoint: false,
                final_checkpoint: false,
                max_parallelism: 128,
                operators: vec![StateHandle {
                    operator: "count".into(),
                    subtask: 1,
                    parallelism: 2,
                    file: file.clone(),
                    bytes: bytes.len() as u64,
                    crc32: crc32fast::hash(&bytes[..bytes.len() - 12]),
                }],
                sources: vec![],
            };
            write_metadata(&dir, &meta).unwrap();
            let err = read_metadata(&dir).unwrap_err().to_string();
            assert!(err.contains("outside its directory"), "{file}: {err}");
        }
    }
}

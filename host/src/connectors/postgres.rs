//! The PostgreSQL sink: each record becomes a table row, exactly once across failures.
//!
//! Exactly-once is a two-phase commit over checkpoints, as the transactional file sink's: a
//! subtask writes the records between barriers n-1 and n in one transaction (COPY, batch by
//! batch), which it prepares at barrier n (`PREPARE TRANSACTION 'weir/<job>/<sink>/<subtask>/<n>'`,
//! durable on the server, holding no connection) and commits when checkpoint n completes
//! (`COMMIT PREPARED`). Before every (re)start the JobMaster settles what a failed attempt
//! left prepared: transactions of checkpoints up to the restored one completed and are
//! committed; later ones are rolled back ([`recover`]). Transactions never prepared die with
//! their connection. Without checkpoints each batch commits on its own (no guarantee after a
//! failure, as for the plain file sink).
//!
//! The record's fields map to columns by position (CSV-like text) or by name (a JSON object);
//! the server converts each field's text to the column's type, so a record that does not fit
//! fails with the server's reason and the record itself.

use std::time::Duration;

use super::external::Secret;

#[cfg(feature = "postgres")]
mod client;
#[cfg(feature = "postgres")]
pub use client::{PostgresSink, recover};

/// A PostgreSQL sink as the job graph carries it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PostgresSinkSpec {
    /// `postgresql://user@host:port/database` (or `host=... user=...`), without a password.
    pub url: String,
    pub password: Option<Secret>,
    /// The table, as SQL names it (`counts`, `analytics.counts`); it must exist.
    pub table: String,
    /// The columns the record's fields go to; empty: every column of the table, in order.
    pub columns: Vec<String>,
    pub format: RowFormat,
    /// How long to keep trying to reach the server.
    pub connect_timeout_ms: u64,
}

impl PostgresSinkSpec {
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// What the manifest can be told about before anything runs: a password written into the
    /// URL (it would be stored and shown with the job), an empty table name.
    pub fn check(&self, sink: &str) -> Result<(), String> {
        if url_has_password(&self.url) {
            return Err(format!(
                "sink `{sink}`: the `url` holds a password; give it with `password_env` (an \
                 environment variable) or `password_file` instead, so it is not stored with \
                 the job"
            ));
        }
        if self.table.trim().is_empty() {
            return Err(format!("sink `{sink}` of kind postgres needs a `table`"));
        }
        Ok(())
    }
}

fn url_has_password(url: &str) -> bool {
    if let Some(rest) = url
        .strip_prefix("postgresql://")
        .or_else(|| url.strip_prefix("postgres://"))
    {
        let authority = rest.split(['/', '?']).next().unwrap_or("");
        let query_has = rest
            .split_once('?')
            .is_some_and(|(_, q)| q.split('&').any(|kv| kv.starts_with("password=")));
        return authority
            .rsplit_once('@')
            .is_some_and(|(user, _)| user.contains(':'))
            || query_has;
    }
    url.split_whitespace().any(|kv| kv.starts_with("password="))
}

/// How a record's bytes become a row's fields.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum RowFormat {
    /// Text fields separated by `delimiter`, in column order; a field may be quoted with `"`
    /// (a `""` inside is one quote), as CSV writes it. Every field is text to the server.
    Delimited { delimiter: u8 },
    /// A JSON object; each column takes the field of its name (missing or null: NULL; a
    /// nested value: its JSON text).
    Json,
}

/// A record that cannot be a row of the table, before the server sees it.
#[derive(Debug, PartialEq, Eq)]
pub enum RowError {
    FieldCount { got: usize, want: usize },
    Json(String),
}

impl std::fmt::Display for RowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RowError::FieldCount { got, want } => {
                write!(f, "it has {got} fields and the sink writes {want} columns")
            }
            RowError::Json(e) => write!(f, "it is not a JSON object: {e}"),
        }
    }
}

/// Appends `record` as one row of COPY's text format (fields separated by tabs, `\N` for
/// NULL) to `out`; on error `out` is unchanged.
pub fn encode_row(
    format: &RowFormat,
    columns: &[String],
    record: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), RowError> {
    let start = out.len();
    let result = match format {
        RowFormat::Delimited { delimiter } => {
            encode_delimited(*delimiter, columns.len(), record, out)
        }
        RowFormat::Json => encode_json(columns, record, out),
    };
    match result {
        Ok(()) => {
            out.push(b'\n');
            Ok(())
        }
        Err(e) => {
            out.truncate(start);
            Err(e)
        }
    }
}

fn encode_delimited(
    delimiter: u8,
    want: usize,
    record: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), RowError> {
    let mut got = 0;
    let mut rest = record;
    loop {
        if got > 0 {
            out.push(b'\t');
        }
        got += 1;
        if let Some(quoted) = rest.strip_prefix(b"\"") {
            // A quoted field runs to the quote not doubled; what follows it is a delimiter or
            // the end (anything else is kept as text, as lenient CSV readers do).
            let mut i = 0;
            while i < quoted.len() {
                if quoted[i] == b'"' {
                    if quoted.get(i + 1) == Some(&b'"') {
                        escape_copy(b"\"", out);
                        i += 2;
                        continue;
                    }
                    break;
                }
                escape_copy(&quoted[i..=i], out);
                i += 1;
            }
            rest = quoted.get(i + 1..).unwrap_or(&[]);
            match rest.iter().position(|&b| b == delimiter) {
                Some(at) => {
                    escape_copy(&rest[..at], out);
                    rest = &rest[at + 1..];
                }
                None => {
                    escape_copy(rest, out);
                    break;
                }
            }
        } else {
            match rest.iter().position(|&b| b == delimiter) {
                Some(at) => {
                    escape_copy(&rest[..at], out);
                    rest = &rest[at + 1..];
                }
                None => {
                    escape_copy(rest, out);
                    break;
                }
            }
        }
    }
    if got != want {
        return Err(RowError::FieldCount { got, want });
    }
    Ok(())
}

fn encode_json(columns: &[String], record: &[u8], out: &mut Vec<u8>) -> Result<(), RowError> {
    let object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(record).map_err(|e| RowError::Json(e.to_string()))?;
    for (i, column) in columns.iter().enumerate() {
        if i > 0 {
            out.push(b'\t');
        }
        match object.get(column) {
            None | Some(serde_json::Value::Null) => out.extend_from_slice(b"\\N"),
            Some(serde_json::Value::String(s)) => escape_copy(s.as_bytes(), out),
            Some(other) => escape_copy(other.to_string().as_bytes(), out),
        }
    }
    Ok(())
}

/// COPY's text format: backslash, tab, newline and carriage return are escaped.
fn escape_copy(text: &[u8], out: &mut Vec<u8>) {
    for &b in text {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => out.push(b),
        }
    }
}

/// The global id of the transaction subtask `subtask` of sink `sink` of job `job` prepares at
/// checkpoint `checkpoint`; [`parse_gid`] reads it back.
pub fn gid(job: &str, sink: &str, subtask: u32, checkpoint: u64) -> String {
    format!("{}{subtask}/{checkpoint}", gid_prefix(job, sink))
}

fn gid_prefix(job: &str, sink: &str) -> String {
    // `/` separates the parts, so no part may hold one.
    let part = |s: &str| s.replace('%', "%25").replace('/', "%2F");
    format!("weir/{}/{}/", part(job), part(sink))
}

/// (subtask, checkpoint) of a transaction of sink `sink` of job `job`; `None` for any other.
pub fn parse_gid(job: &str, sink: &str, gid: &str) -> Option<(u32, u64)> {
    let rest = gid.strip_prefix(&gid_prefix(job, sink))?;
    let (subtask, checkpoint) = rest.split_once('/')?;
    Some((subtask.parse().ok()?, checkpoint.parse().ok()?))
}

/// The server keeps at most 200 bytes of a prepared transaction's id.
pub fn check_gid_length(job: &str, sink: &str) -> Result<(), String> {
    let longest = gid(job, sink, u32::MAX, u64::MAX);
    if longest.len() >= 200 {
        return Err(format!(
            "sink `{sink}`: the job's name and the sink's id are too long to name its \
             transactions ({} bytes with the prefix; PostgreSQL keeps 199)",
            longest.len()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(format: &RowFormat, columns: &[&str], record: &str) -> Result<String, RowError> {
        let columns: Vec<String> = columns.iter().map(|c| c.to_string()).collect();
        let mut out = b"before\n".to_vec();
        let result = encode_row(format, &columns, record.as_bytes(), &mut out);
        let text = String::from_utf8(out).unwrap();
        match result {
            Ok(()) => Ok(text.strip_prefix("before\n").unwrap().to_string()),
            Err(e) => {
                assert_eq!(text, "before\n", "a refused record leaves nothing behind");
                Err(e)
            }
        }
    }

    #[test]
    fn delimited_records_become_escaped_copy_rows() {
        let space = RowFormat::Delimited { delimiter: b' ' };
        assert_eq!(row(&space, &["w", "n"], "fox 3").unwrap(), "fox\t3\n");
        let csv = RowFormat::Delimited { delimiter: b',' };
        assert_eq!(
            row(&csv, &["a", "b", "c"], r#""x, ""y""",a\b,"#).unwrap(),
            "x, \"y\"\ta\\\\b\t\n"
        );
        assert_eq!(
            row(&csv, &["a", "b"], "tab\there,2").unwrap(),
            "tab\\there\t2\n"
        );
        assert_eq!(
            row(&csv, &["a", "b"], "1,2,3"),
            Err(RowError::FieldCount { got: 3, want: 2 })
        );
        assert_eq!(
            row(&csv, &["a", "b"], "1"),
            Err(RowError::FieldCount { got: 1, want: 2 })
        );
    }

    #[test]
    fn json_records_map_fields_to_columns_by_name() {
        let r = row(
            &RowFormat::Json,
            &["word", "n", "tags", "gone"],
            r#"{"n": 2, "word": "a\tb", "tags": [1], "gone": null, "extra": 1}"#,
        );
        assert_eq!(r.unwrap(), "a\\tb\t2\t[1]\t\\N\n");
        assert!(matches!(
            row(&RowFormat::Json, &["a"], "[1]"),
            Err(RowError::Json(_))
        ));
    }

    #[test]
    fn transaction_ids_name_job_sink_subtask_and_checkpoint() {
        let id = gid("wc", "out", 3, 17);
        assert_eq!(id, "weir/wc/out/3/17");
        assert_eq!(parse_gid("wc", "out", &id), Some((3, 17)));
        assert_eq!(parse_gid("wc", "other", &id), None);
        assert_eq!(parse_gid("w", "c/out", &id), None);
        let slashed = gid("a/b", "c", 0, 1);
        assert_eq!(slashed, "weir/a%2Fb/c/0/1");
        assert_eq!(parse_gid("a", "b/c", &slashed), None);
        assert_eq!(parse_gid("a/b", "c", &slashed), Some((0, 1)));
        assert!(check_gid_length(&"j".repeat(150), "s").is_err());
        assert!(check_gid_length("wc", "out").is_ok());
    }

    #[test]
    fn passwords_in_urls_are_found() {
        for url in [
            "postgresql://weir:pw@127.0.0.1/db",
            "postgres://weir:pw@h:5432/db?sslmode=disable",
            "postgresql://weir@h/db?password=pw",
            "host=h user=weir password=pw",
        ] {
            assert!(url_has_password(url), "{url}");
        }
        for url in [
            "postgresql://weir@127.0.0.1:5432/db",
            "postgresql://127.0.0.1/db",
            "host=h user=weir dbname=x",
        ] {
            assert!(!url_has_password(url), "{url}");
        }
    }
}

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

pub use crate::job::connectors::{PostgresSinkSpec, RowFormat, check_gid_length, gid, parse_gid};

#[cfg(feature = "postgres")]
mod client;
#[cfg(feature = "postgres")]
pub use client::{PostgresSink, recover};

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
            // A quoted field runs to the quote not doubled; what follows it up to the next
            // delimiter is kept as text too, as lenient CSV readers do.
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
        }
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
}

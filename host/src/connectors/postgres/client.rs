//! The PostgreSQL sink's client side: connecting (with retries), checking the table, COPYing
//! rows, preparing and committing transactions, and the JobMaster's recovery.

use std::str::FromStr;
use std::sync::Arc;

use futures::SinkExt;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};
use weir_framing::Record;

use super::{PostgresSinkSpec, RowFormat, encode_row, gid, parse_gid};
use crate::connectors::external::{Retry, connector_runtime, on_own_runtime, retry};
use crate::metrics::TaskMetrics;
use crate::stream::{Barrier, Output, StreamError};

/// Rows buffered before they are sent as one COPY.
const COPY_BYTES: usize = 1 << 20;

/// A connected client, the table's canonical name and the columns written.
struct Connection {
    client: Client,
    table: String,
    columns: Vec<String>,
}

/// `host:port` of the configured server, for messages.
fn server_of(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}")
}

/// Whether an error may go away by itself: the server not (yet) listening or starting up.
fn transient(e: &tokio_postgres::Error) -> Retry {
    match e.as_db_error() {
        Some(db) if *db.code() == SqlState::CANNOT_CONNECT_NOW => Retry::Yes,
        Some(_) => Retry::No,
        None => Retry::Yes,
    }
}

/// The server's words for an error: its message and, for a row, where (`COPY t, line 3,
/// column n: "x"`).
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut text = db.message().to_string();
            if let Some(detail) = db.detail() {
                text.push_str(&format!(" ({detail})"));
            }
            if let Some(place) = db.where_() {
                text.push_str(&format!(" [{place}]"));
            }
            text
        }
        None => {
            // The driver's own text is terse ("error connecting to server"); its source says why.
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                text.push_str(&format!(": {s}"));
                source = s.source();
            }
            text
        }
    }
}

/// Connects, with retries while the server cannot be reached, and checks the table.
async fn connect(spec: &PostgresSinkSpec, sink: &str) -> Result<Connection, String> {
    let mut config = tokio_postgres::Config::from_str(&spec.url)
        .map_err(|e| format!("sink `{sink}`: `url` is not a PostgreSQL connection string: {e}"))?;
    if let Some(secret) = &spec.password {
        let password = secret
            .read()
            .map_err(|e| format!("sink `{sink}`: the password: {e}"))?;
        config.password(password);
    }
    config.connect_timeout(
        spec.connect_timeout()
            .min(std::time::Duration::from_secs(10)),
    );
    // A server that vanishes mid-request fails the request rather than hanging the task.
    config.tcp_user_timeout(std::time::Duration::from_secs(30));
    config.keepalives_idle(std::time::Duration::from_secs(30));
    let server = server_of(&config);
    let client = retry(spec.connect_timeout(), async || {
        match config.connect(NoTls).await {
            Ok((client, connection)) => {
                // The connection's I/O runs while the runtime is driven (in `block_on`).
                tokio::spawn(connection);
                Ok(client)
            }
            Err(e) => {
                let again = transient(&e);
                Err((describe(&e), again))
            }
        }
    })
    .await
    .map_err(|e| format!("sink `{sink}`: cannot connect to PostgreSQL at {server}: {e}"))?;
    let row = client
        .query_one(
            "SELECT to_regclass($1)::text, current_database()::text, \
             array(SELECT attname::text FROM pg_attribute \
                   WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped \
                   ORDER BY attnum), \
             array(SELECT attname::text FROM pg_attribute \
                   WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped \
                     AND attgenerated = '' AND attidentity <> 'a' \
                   ORDER BY attnum)",
            &[&spec.table],
        )
        .await
        .map_err(|e| {
            format!(
                "sink `{sink}`: cannot look up table `{}`: {}",
                spec.table,
                describe(&e)
            )
        })?;
    let database: String = row.get(1);
    let Some(table) = row.get::<_, Option<String>>(0) else {
        return Err(format!(
            "sink `{sink}`: table `{}` does not exist in database `{database}` at {server}",
            spec.table
        ));
    };
    let existing: Vec<String> = row.get(2);
    let columns = if spec.columns.is_empty() {
        // Generated columns and `GENERATED ALWAYS` identities take no values.
        row.get(3)
    } else {
        spec.columns.clone()
    };
    if let Some(missing) = columns.iter().find(|c| !existing.contains(c)) {
        return Err(format!(
            "sink `{sink}`: table `{table}` has no column `{missing}`; its columns are {}",
            existing.join(", ")
        ));
    }
    Ok(Connection {
        client,
        table,
        columns,
    })
}

/// `"name"`, with quotes inside doubled: an SQL identifier that is exactly `name`.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `'text'`, with quotes inside doubled.
fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Writes records as rows of one table; see the module's description for the commit protocol.
pub struct PostgresSink {
    runtime: tokio::runtime::Runtime,
    client: Client,
    /// A second session for `COMMIT PREPARED`, which cannot run inside the transaction the
    /// next checkpoint's records are already going into; opened at the first commit.
    committer: Option<Client>,
    spec: Arc<PostgresSinkSpec>,
    columns: Vec<String>,
    job: String,
    sink: String,
    subtask: u32,
    copy_statement: String,
    /// Rows in COPY's text format, not yet sent.
    rows: Vec<u8>,
    /// The records those rows came from, for an error that names one.
    records: Vec<u8>,
    record_ends: Vec<usize>,
    /// With checkpoints: the checkpoint the open transaction belongs to. Without: `None`,
    /// and every COPY commits on its own.
    epoch: Option<u64>,
    in_transaction: bool,
    /// Prepared and not yet committed: (checkpoint, transaction id).
    prepared: Vec<(u64, String)>,
    metrics: Arc<TaskMetrics>,
}

impl PostgresSink {
    /// Connects subtask `subtask` of sink `sink` of job `job`; `epoch` is the first checkpoint
    /// this attempt will take (`None` without checkpoints).
    pub fn open(
        spec: &PostgresSinkSpec,
        job: &str,
        sink: &str,
        subtask: u32,
        epoch: Option<u64>,
        metrics: Arc<TaskMetrics>,
    ) -> Result<Self, StreamError> {
        let runtime = connector_runtime()
            .map_err(|e| StreamError::Output(format!("sink `{sink}`: no runtime: {e}")))?;
        let connection = runtime
            .block_on(connect(spec, sink))
            .map_err(StreamError::Output)?;
        // A row whose key a prepared transaction of this sink also holds waits for that
        // transaction, which only this task's thread can commit: without a lock timeout that
        // wait never ends. With one, the COPY fails and the restart commits what is prepared.
        let locked = runtime.block_on(connection.client.batch_execute("SET lock_timeout = '10s'"));
        locked.map_err(|e| {
            StreamError::Output(format!("sink `{sink}`: cannot set lock_timeout: {e}"))
        })?;
        let copy_statement = format!(
            "COPY {} ({}) FROM STDIN",
            connection.table,
            connection
                .columns
                .iter()
                .map(|c| quote_ident(c))
                .collect::<Vec<_>>()
                .join(", ")
        );
        Ok(PostgresSink {
            runtime,
            client: connection.client,
            committer: None,
            spec: Arc::new(spec.clone()),
            columns: connection.columns,
            job: job.to_string(),
            sink: sink.to_string(),
            subtask,
            copy_statement,
            rows: Vec::new(),
            records: Vec::new(),
            record_ends: Vec::new(),
            epoch,
            in_transaction: false,
            prepared: Vec::new(),
            metrics,
        })
    }

    fn failed(&self, doing: &str, e: &tokio_postgres::Error) -> StreamError {
        StreamError::Output(format!(
            "sink `{}` (subtask {}): {doing}: {}",
            self.sink,
            self.subtask,
            describe(e)
        ))
    }

    fn execute(&mut self, sql: &str, doing: &str) -> Result<(), StreamError> {
        let result = self.runtime.block_on(self.client.batch_execute(sql));
        result.map_err(|e| self.failed(doing, &e))
    }

    /// The record behind row `line` (1-based) of the last COPY, quoted for an error message.
    fn record_at(&self, line: usize) -> Option<String> {
        let end = *self.record_ends.get(line.checked_sub(1)?)?;
        let start = if line == 1 {
            0
        } else {
            self.record_ends[line - 2]
        };
        Some(String::from_utf8_lossy(&self.records[start..end]).into_owned())
    }

    /// Sends the buffered rows as one COPY: into the open transaction with checkpoints, in a
    /// transaction of its own without.
    fn send_rows(&mut self) -> Result<(), StreamError> {
        if self.rows.is_empty() {
            return Ok(());
        }
        if self.epoch.is_some() && !self.in_transaction {
            self.execute("BEGIN", "cannot begin a transaction")?;
            self.in_transaction = true;
        }
        let rows = bytes::Bytes::from(std::mem::take(&mut self.rows));
        let statement = self.copy_statement.clone();
        let client = &self.client;
        let sent = self.runtime.block_on(async move {
            let sink = client
                .copy_in::<_, bytes::Bytes>(statement.as_str())
                .await?;
            futures::pin_mut!(sink);
            sink.send(rows).await?;
            sink.as_mut().finish().await
        });
        if let Err(e) = sent {
            let line = e
                .as_db_error()
                .and_then(|db| db.where_())
                .and_then(|w| w.split(", line ").nth(1))
                .and_then(|l| l.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|l| l.parse().ok());
            let record = line
                .and_then(|l| self.record_at(l))
                .map(|r| format!(" (record `{r}`)"))
                .unwrap_or_default();
            return Err(StreamError::Output(format!(
                "sink `{}` (subtask {}): table `{}` refused a row{record}: {}",
                self.sink,
                self.subtask,
                self.spec.table,
                describe(&e)
            )));
        }
        self.records.clear();
        self.record_ends.clear();
        Ok(())
    }

    /// Pre-commit: the open transaction is prepared under `checkpoint`'s id.
    fn prepare(&mut self, checkpoint: u64) -> Result<(), StreamError> {
        self.send_rows()?;
        if self.in_transaction {
            let id = gid(&self.job, &self.sink, self.subtask, checkpoint);
            self.execute(
                &format!("PREPARE TRANSACTION {}", quote_literal(&id)),
                "cannot prepare the checkpoint's transaction",
            )?;
            self.in_transaction = false;
            self.prepared.push((checkpoint, id));
        }
        Ok(())
    }
}

impl Output for PostgresSink {
    fn collect(&mut self, record: Record<'_>) -> Result<(), StreamError> {
        let format: &RowFormat = &self.spec.format;
        if let Err(e) = encode_row(format, &self.columns, record.value, &mut self.rows) {
            return Err(StreamError::Output(format!(
                "sink `{}`: record `{}` does not fit table `{}` ({}): {e}",
                self.sink,
                String::from_utf8_lossy(record.value),
                self.spec.table,
                self.columns.join(", ")
            )));
        }
        self.records.extend_from_slice(record.value);
        self.record_ends.push(self.records.len());
        self.metrics.add_records_out(1);
        if self.rows.len() >= COPY_BYTES {
            self.send_rows()?;
        }
        Ok(())
    }

    fn emit_watermark(&mut self, _: i64) -> Result<(), StreamError> {
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        self.send_rows()
    }

    fn snapshot(
        &mut self,
        barrier: &Barrier,
        _: &mut Vec<crate::state::OperatorSnapshot>,
    ) -> Result<(), StreamError> {
        if self.epoch.is_some() {
            self.prepare(barrier.id)?;
            self.epoch = Some(barrier.id + 1);
        } else {
            self.send_rows()?;
        }
        Ok(())
    }

    fn notify_checkpoint_complete(&mut self, checkpoint: u64) -> Result<(), StreamError> {
        if !self.prepared.iter().any(|(c, _)| *c <= checkpoint) {
            return Ok(());
        }
        if self.committer.is_none() {
            let connection = self
                .runtime
                .block_on(connect(&self.spec, &self.sink))
                .map_err(StreamError::Output)?;
            self.committer = Some(connection.client);
        }
        let Some(committer) = &self.committer else {
            return Ok(());
        };
        while let Some(at) = self.prepared.iter().position(|(c, _)| *c <= checkpoint) {
            let id = self.prepared[at].1.clone();
            let sql = format!("COMMIT PREPARED {}", quote_literal(&id));
            if let Err(e) = self.runtime.block_on(committer.batch_execute(&sql)) {
                return Err(self.failed("cannot commit a completed checkpoint's transaction", &e));
            }
            self.prepared.remove(at);
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), StreamError> {
        match self.epoch {
            // The rest is the final checkpoint's, which commits it like any other.
            Some(epoch) => self.prepare(epoch),
            None => self.send_rows(),
        }
    }
}

/// What [`recover`] settled.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    pub committed: usize,
    pub rolled_back: usize,
}

/// Before a (re)start from checkpoint `restored` (`None`: a fresh start): commits the
/// transactions sink `sink` of job `job` prepared for checkpoints up to `restored` (they
/// completed, but their commit may not have happened) and rolls back the later ones, which a
/// failed attempt prepared for checkpoints that never completed.
pub fn recover(
    spec: &PostgresSinkSpec,
    job: &str,
    sink: &str,
    restored: Option<u64>,
) -> Result<Recovered, String> {
    on_own_runtime(|| async {
        let connection = connect(spec, sink).await?;
        let client = &connection.client;
        let rows = client
            .query(
                "SELECT gid FROM pg_prepared_xacts WHERE database = current_database()",
                &[],
            )
            .await
            .map_err(|e| {
                format!(
                    "sink `{sink}`: cannot list prepared transactions: {}",
                    describe(&e)
                )
            })?;
        let mut recovered = Recovered::default();
        for row in rows {
            let id: String = row.get(0);
            let Some((_, checkpoint)) = parse_gid(job, sink, &id) else {
                continue;
            };
            let (verb, count) = match restored {
                Some(r) if checkpoint <= r => ("COMMIT", &mut recovered.committed),
                _ => ("ROLLBACK", &mut recovered.rolled_back),
            };
            client
                .batch_execute(&format!("{verb} PREPARED {}", quote_literal(&id)))
                .await
                .map_err(|e| {
                    format!(
                        "sink `{sink}`: cannot {} prepared transaction `{id}`: {}",
                        verb.to_lowercase(),
                        describe(&e)
                    )
                })?;
            *count += 1;
        }
        Ok(recovered)
    })
    .map_err(|e| format!("sink `{sink}`: no runtime: {e}"))?
}

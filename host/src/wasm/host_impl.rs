//! The host side of the `weir:stream` imports. Every size the guest controls is checked against
//! [`Limits`](super::Limits); a guest past a limit, or passing a handle it never got, traps with
//! a recorded violation.

use weir_framing::Record;

use super::bindings::weir::stream::{keyed_state, logging, output, timers, types};
use super::store::OperatorStore;
use crate::state::{StateError, StateKind, TimeDomain, processing_time_now};

type Result<T> = wasmtime::Result<T>;

impl OperatorStore {
    fn check_len(&mut self, what: &str, len: usize, max: usize) -> Result<()> {
        if len > max {
            return Err(self.violate(format!(
                "{what} of {len} bytes exceeds the limit of {max} bytes"
            )));
        }
        Ok(())
    }

    fn check_key(&mut self, key: &[u8]) -> Result<()> {
        self.check_len("state key", key.len(), self.limits.max_state_key_bytes)
    }

    fn check_value(&mut self, value: &[u8]) -> Result<()> {
        self.check_len(
            "state value",
            value.len(),
            self.limits.max_state_value_bytes,
        )
    }

    fn state_result<T>(&mut self, r: std::result::Result<T, StateError>) -> Result<T> {
        r.map_err(|e| match e {
            StateError::LimitExceeded { .. } => {
                let message = e.to_string();
                self.state_limit = Some(message.clone());
                wasmtime::format_err!("{message}")
            }
            other => self.violate(other.to_string()),
        })
    }
}

fn domain(d: types::TimeDomain) -> TimeDomain {
    match d {
        types::TimeDomain::EventTime => TimeDomain::EventTime,
        types::TimeDomain::ProcessingTime => TimeDomain::ProcessingTime,
    }
}

impl types::Host for OperatorStore {}

impl output::Host for OperatorStore {
    fn emit(&mut self, value: Vec<u8>, key: Option<Vec<u8>>, timestamp: Option<i64>) -> Result<()> {
        self.check_open()?;
        let max = self.limits.max_record_bytes;
        self.check_len("emitted value", value.len(), max)?;
        if let Some(k) = &key {
            self.check_len("emitted key", k.len(), max)?;
        }
        let record = Record {
            value: &value,
            key: key.as_deref(),
            timestamp,
        };
        let result = self.ctx.output.collect(record);
        self.pass_on(result)
    }

    fn emit_batch(&mut self, records: Vec<u8>) -> Result<()> {
        self.check_open()?;
        if let Err(problem) = super::function::check_output_batch(&records, &self.limits) {
            return Err(self.violate(format!("emit-batch: {problem}")));
        }
        if records.is_empty() {
            return Ok(());
        }
        let result = self.ctx.output.collect_batch(&records);
        self.pass_on(result)
    }
}

impl OperatorStore {
    fn check_open(&mut self) -> Result<()> {
        if self.ctx.closed {
            return Err(self.violate(
                "emitted a record after `close`: its input has ended and the operators after \
                 it have closed"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Hands checked output to the next operator; a failure there travels back as this
    /// guest's trap and is reported as itself.
    fn pass_on(
        &mut self,
        result: std::result::Result<(), crate::stream::StreamError>,
    ) -> Result<()> {
        match result {
            Ok(()) => Ok(()),
            Err(e) => {
                self.downstream = Some(e);
                wasmtime::bail!("the next operator failed while taking emitted records")
            }
        }
    }
}

impl keyed_state::Host for OperatorStore {
    fn declare(&mut self, name: String, kind: keyed_state::StateKind) -> Result<u32> {
        let kind = match kind {
            keyed_state::StateKind::Value => StateKind::Value,
            keyed_state::StateKind::Map => StateKind::Map,
        };
        let r = self.ctx.state.declare(&name, kind);
        self.state_result(r)
    }

    fn value_get(&mut self, state: u32, key: Vec<u8>) -> Result<Option<Vec<u8>>> {
        let r = self
            .ctx
            .state
            .value_get(state, &key)
            .map(|v| v.map(<[u8]>::to_vec));
        self.state_result(r)
    }

    fn value_set(&mut self, state: u32, key: Vec<u8>, value: Vec<u8>) -> Result<()> {
        self.check_key(&key)?;
        self.check_value(&value)?;
        let r = self.ctx.state.value_set(state, &key, &value);
        self.state_result(r)
    }

    fn value_clear(&mut self, state: u32, key: Vec<u8>) -> Result<()> {
        let r = self.ctx.state.value_clear(state, &key);
        self.state_result(r)
    }

    fn value_write_batch(&mut self, state: u32, sets: Vec<u8>, clears: Vec<u8>) -> Result<()> {
        for (batch, clear) in [(&sets, false), (&clears, true)] {
            for record in weir_framing::records(batch) {
                let record = record.map_err(|e| self.violate(format!("value-write-batch: {e}")))?;
                let Some(key) = record.key else {
                    return Err(self.violate("value-write-batch: a record without a key".into()));
                };
                self.check_key(key)?;
                let r = if clear {
                    self.ctx.state.value_clear(state, key)
                } else {
                    self.check_value(record.value)?;
                    self.ctx.state.value_set(state, key, record.value)
                };
                self.state_result(r)?;
            }
        }
        Ok(())
    }

    fn map_get(&mut self, state: u32, key: Vec<u8>, map_key: Vec<u8>) -> Result<Option<Vec<u8>>> {
        let r = self
            .ctx
            .state
            .map_get(state, &key, &map_key)
            .map(|v| v.map(<[u8]>::to_vec));
        self.state_result(r)
    }

    fn map_put(
        &mut self,
        state: u32,
        key: Vec<u8>,
        map_key: Vec<u8>,
        value: Vec<u8>,
    ) -> Result<()> {
        self.check_key(&key)?;
        self.check_value(&map_key)?;
        self.check_value(&value)?;
        let r = self.ctx.state.map_put(state, &key, &map_key, &value);
        self.state_result(r)
    }

    fn map_remove(&mut self, state: u32, key: Vec<u8>, map_key: Vec<u8>) -> Result<()> {
        let r = self.ctx.state.map_remove(state, &key, &map_key);
        self.state_result(r)
    }

    fn map_entries(&mut self, state: u32, key: Vec<u8>) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let r = self.ctx.state.map_entries(state, &key);
        self.state_result(r)
    }

    fn map_clear(&mut self, state: u32, key: Vec<u8>) -> Result<()> {
        let r = self.ctx.state.map_clear(state, &key);
        self.state_result(r)
    }
}

impl timers::Host for OperatorStore {
    fn register(&mut self, d: types::TimeDomain, key: Vec<u8>, timestamp: i64) -> Result<()> {
        self.check_key(&key)?;
        if self.ctx.timers.len() >= self.limits.max_timers {
            let max = self.limits.max_timers;
            return Err(self.violate(format!("more than {max} pending timers")));
        }
        self.ctx.timers.register(domain(d), &key, timestamp);
        Ok(())
    }

    fn delete(&mut self, d: types::TimeDomain, key: Vec<u8>, timestamp: i64) -> Result<()> {
        self.ctx.timers.delete(domain(d), &key, timestamp);
        Ok(())
    }

    fn current_watermark(&mut self) -> Result<i64> {
        Ok(self.ctx.watermark)
    }

    fn current_processing_time(&mut self) -> Result<i64> {
        Ok(processing_time_now())
    }
}

impl logging::Host for OperatorStore {
    fn log(&mut self, level: logging::Level, message: String) -> Result<()> {
        let level = match level {
            logging::Level::Trace => "trace",
            logging::Level::Debug => "debug",
            logging::Level::Info => "info",
            logging::Level::Warn => "warn",
            logging::Level::Error => "error",
        };
        self.log
            .message(level, &message)
            .map_err(wasmtime::Error::new)
    }

    fn report_panic(&mut self, message: String) -> Result<()> {
        // Keep the first: a panic while panicking would otherwise hide the cause.
        if self.panic_message.is_none() {
            let cap = self.limits.max_record_bytes.min(4096);
            let mut message = message;
            message.truncate(message.floor_char_boundary(cap));
            self.panic_message = Some(message);
        }
        Ok(())
    }
}

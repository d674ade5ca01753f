//! An operator subtask: one component instance in its own store, driven by the chain through
//! [`Output`].
//!
//! In batched mode, records arriving one at a time (from a per-record upstream, or emitted from
//! timers) gather in a pending buffer that goes into the guest in one `process-batch` call when
//! it fills or when the chain flushes; a batch that arrives whole goes in as it is. In
//! per-record mode each record is one `process-element` call, and the guest's `emit` calls the
//! next operator before returning.

use std::sync::Arc;

use wasmtime::component::Instance;
use wasmtime::{Store, Trap};
use weir_framing::Record;

use super::bindings::exports::weir::stream::{batch, operator};
use super::bindings::weir::stream::types;
use super::engine::{Capabilities, LoadedComponent, WasmRuntime};
use super::error::{FailureKind, OperatorFailure, preview};
use super::limits::Limits;
use super::stdio::{GuestLog, LogSink, OutputCapExceeded, StderrLog};
use super::store::{CallClock, Interruption, LimitHit, OperatorStore};
use crate::state::key_groups::{key_group_of, key_group_range};
use crate::state::{OperatorSnapshot, TimeDomain};
use crate::stream::{Output, StreamError};

/// How the host calls a guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExecutionMode {
    /// The batched fast path when the component exports it, per record otherwise.
    #[default]
    Batched,
    /// One call per record, even when the component exports the batched path.
    PerRecord,
}

/// What an operator subtask is and how it runs.
#[derive(Clone)]
pub struct OperatorSpec {
    /// The operator name the component exports.
    pub operator: String,
    /// The operator's node id in the job, which names its state in checkpoints.
    pub id: String,
    pub subtask_index: u32,
    pub parallelism: u32,
    pub max_parallelism: u32,
    pub attempt: u32,
    pub config: Vec<(String, String)>,
    pub limits: Arc<Limits>,
    pub capabilities: Capabilities,
    pub mode: ExecutionMode,
    /// Bytes of records gathered before a batched call when records arrive one at a time.
    pub batch_bytes: usize,
    pub log_sink: Arc<dyn LogSink>,
    /// The job's cancel flag: once set, a call in progress stops within an epoch tick, so a
    /// failed sibling or a cancelled job never waits for this guest's deadline.
    pub cancel: Option<Arc<std::sync::atomic::AtomicBool>>,
}

impl OperatorSpec {
    /// Subtask 0 of 1 with default limits.
    pub fn new(operator: impl Into<String>) -> Self {
        let operator = operator.into();
        OperatorSpec {
            id: operator.clone(),
            operator,
            subtask_index: 0,
            parallelism: 1,
            max_parallelism: crate::state::key_groups::DEFAULT_MAX_PARALLELISM,
            attempt: 0,
            config: Vec::new(),
            limits: Arc::new(Limits::default()),
            capabilities: Capabilities::default(),
            mode: ExecutionMode::Batched,
            batch_bytes: 32 << 10,
            log_sink: Arc::new(StderrLog),
            cancel: None,
        }
    }

    pub fn with_config(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.config.push((key.into(), value.into()));
        self
    }
}

/// One operator subtask. See the module docs.
pub struct WasmOperator {
    store: Store<OperatorStore>,
    guest: operator::Guest,
    batch: Option<batch::Guest>,
    component: Arc<LoadedComponent>,
    /// The operator's node id in the job.
    id: String,
    /// The operator name the component exports.
    operator: String,
    subtask: u32,
    parallelism: u32,
    call_deadline: std::time::Duration,
    pending: Vec<u8>,
    batch_bytes: usize,
    failed: bool,
    timings: OpenTimings,
}

/// Where the time of [`WasmOperator::open`] went.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenTimings {
    /// New store and instantiation from the pre-linked component.
    pub instantiate: std::time::Duration,
    /// The guest's `open` (and `restore-state`): the first call into a fresh instance, which
    /// also pays the guest's own start-up.
    pub open: std::time::Duration,
}

impl WasmOperator {
    /// Instantiates `component` for `spec`, restores `restore` if given, and opens the guest.
    /// Records it emits go to `output`.
    pub fn open(
        runtime: &WasmRuntime,
        component: Arc<LoadedComponent>,
        spec: OperatorSpec,
        output: Box<dyn Output>,
        restore: Option<&[OperatorSnapshot]>,
    ) -> Result<Self, StreamError> {
        let started = std::time::Instant::now();
        let source = format!("{}#{}", spec.operator, spec.subtask_index);
        let log = GuestLog::new(source, spec.limits.max_log_bytes, spec.log_sink.clone());
        let tick = runtime.epoch_tick();
        let deadline_ticks =
            u64::try_from(spec.limits.call_deadline.as_nanos() / tick.as_nanos().max(1) + 1)
                .unwrap_or(u64::MAX);
        let clock = CallClock {
            deadline_ticks,
            ticks_left: deadline_ticks,
            tick,
            cancel: spec.cancel.clone(),
            interrupted: None,
            waits: Default::default(),
        };
        let data = OperatorStore::new(
            spec.limits.clone(),
            spec.capabilities,
            log,
            output,
            spec.max_parallelism,
            clock,
        );
        let mut store = Store::new(runtime.engine(), data);
        store.limiter(|s| &mut s.limiter);
        // Woken every tick while a call runs: spends the call's budget and watches the cancel
        // flag, so both a runaway call and a cancelled job stop within one tick.
        store.epoch_deadline_callback(|mut ctx| {
            let clock = &mut ctx.data_mut().clock;
            let waited = clock.waits.take_waited().as_nanos() / clock.tick.as_nanos().max(1);
            clock.ticks_left = clock
                .ticks_left
                .saturating_sub(u64::try_from(waited).unwrap_or(u64::MAX));
            let why = if clock.cancelled() {
                Interruption::Cancelled
            } else if clock.ticks_left <= 1 {
                Interruption::Deadline
            } else {
                clock.ticks_left -= 1;
                return Ok(wasmtime::UpdateDeadline::Continue(1));
            };
            clock.interrupted = Some(why);
            Err(wasmtime::Error::from(Trap::Interrupt))
        });
        store.set_epoch_deadline(1);

        let fail = |kind| -> StreamError {
            OperatorFailure {
                component: component.name.clone(),
                operator: spec.operator.clone(),
                subtask: spec.subtask_index,
                kind,
            }
            .into()
        };
        let instance: Instance = component
            .pre
            .instantiate(&mut store)
            .map_err(|e| fail(FailureKind::Instantiate(format!("{e:#}"))))?;
        let guest = component
            .operator_indices
            .load(&mut store, &instance)
            .map_err(|e| fail(FailureKind::Instantiate(format!("{e:#}"))))?;
        let batch = match (&component.batch_indices, spec.mode) {
            (Some(indices), ExecutionMode::Batched) => Some(
                indices
                    .load(&mut store, &instance)
                    .map_err(|e| fail(FailureKind::Instantiate(format!("{e:#}"))))?,
            ),
            _ => None,
        };

        let mut op = WasmOperator {
            store,
            guest,
            batch,
            component: component.clone(),
            id: spec.id.clone(),
            operator: spec.operator.clone(),
            subtask: spec.subtask_index,
            parallelism: spec.parallelism,
            call_deadline: spec.limits.call_deadline,
            pending: Vec::new(),
            batch_bytes: spec.batch_bytes,
            failed: false,
            timings: OpenTimings::default(),
        };
        op.timings.instantiate = started.elapsed();

        if let Some(snapshots) = restore {
            let range = key_group_range(spec.subtask_index, spec.max_parallelism, spec.parallelism);
            let data = op.store.data_mut();
            let keyed: Vec<_> = snapshots.iter().map(|s| s.keyed.clone()).collect();
            if let Err(e) = data.state.restore(&keyed, range.clone()) {
                return Err(op.failure(FailureKind::State(e.to_string())));
            }
            let data = op.store.data_mut();
            for snapshot in snapshots {
                data.timers.restore(&snapshot.timers, |key| {
                    range.contains(&key_group_of(key, spec.max_parallelism))
                });
            }
        }

        let context = types::Context {
            operator_name: spec.operator.clone(),
            subtask_index: spec.subtask_index,
            parallelism: spec.parallelism,
            max_parallelism: spec.max_parallelism,
            attempt: spec.attempt,
            config: spec.config.clone(),
        };
        op.call(Input::None, |store, guest, _| {
            guest.call_open(store, &context)
        })?;
        // A guest's own state is restored only into the same subtask at the same parallelism;
        // the job master refuses to rescale an operator that has any.
        if let Some([snapshot]) = restore
            && snapshot.parallelism == spec.parallelism
        {
            let bytes = snapshot.guest_state.clone();
            op.call(Input::None, |store, guest, _| {
                guest.call_restore_state(store, &bytes)
            })?;
        }
        op.timings.open = started.elapsed() - op.timings.instantiate;
        Ok(op)
    }

    /// How long opening took.
    pub fn open_timings(&self) -> OpenTimings {
        self.timings
    }

    /// Whether calls go through the batched path.
    pub fn uses_batches(&self) -> bool {
        self.batch.is_some()
    }

    /// The component this operator runs.
    pub fn component(&self) -> &LoadedComponent {
        &self.component
    }

    /// Number of keys in host-managed keyed state.
    pub fn keyed_state_keys(&self) -> usize {
        self.store.data().state.key_count()
    }

    fn failure(&self, kind: FailureKind) -> StreamError {
        OperatorFailure {
            component: self.component.name.clone(),
            operator: self.id.clone(),
            subtask: self.subtask,
            kind,
        }
        .into()
    }

    /// Makes one call into the guest under the call deadline and turns every way it can fail
    /// into a [`StreamError`]. `input` is what the call processes, to show the record a decode
    /// failure names.
    fn call<R>(
        &mut self,
        input: Input<'_>,
        f: impl FnOnce(
            &mut Store<OperatorStore>,
            &operator::Guest,
            Option<&batch::Guest>,
        ) -> wasmtime::Result<Result<R, types::OperatorError>>,
    ) -> Result<R, StreamError> {
        if self.failed {
            return Err(self.failure(FailureKind::AlreadyFailed));
        }
        self.store.data_mut().clock.start_call();
        self.store.set_epoch_deadline(1);
        let result = f(&mut self.store, &self.guest, self.batch.as_ref());
        match result {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(guest_error)) => {
                self.failed = true;
                Err(self.failure(guest_failure(guest_error, input, &self.operator)))
            }
            Err(trap) => {
                self.failed = true;
                Err(self.classify(trap))
            }
        }
    }

    /// Names a trap by what caused it, most specific cause first.
    fn classify(&mut self, trap: wasmtime::Error) -> StreamError {
        self.store.data().log.flush_partial();
        let data = self.store.data_mut();
        if let Some(downstream) = data.downstream.take() {
            return downstream;
        }
        let kind = if let Some(why) = data.clock.interrupted.take() {
            match why {
                Interruption::Cancelled => FailureKind::Cancelled,
                Interruption::Deadline => match data.clock.waits.take_cut() {
                    Some(wait) => FailureKind::BlockedPastDeadline {
                        deadline: self.call_deadline,
                        wait,
                    },
                    None => FailureKind::DeadlineExceeded(self.call_deadline),
                },
            }
        } else if let Some(hit) = data.limiter.hit.take() {
            match hit {
                LimitHit::Memory { requested, cap } => FailureKind::MemoryCap { requested, cap },
                LimitHit::Table { requested, cap } => FailureKind::TableCap { requested, cap },
            }
        } else if let Some(message) = data.state_limit.take() {
            FailureKind::State(message)
        } else if let Some(violation) = data.violation.take() {
            FailureKind::Violation(violation)
        } else if data.log.overflowed() || trap.downcast_ref::<OutputCapExceeded>().is_some() {
            FailureKind::OutputCap {
                cap: data.log.cap(),
            }
        } else if let Some(message) = data.panic_message.take() {
            FailureKind::Panic(message)
        } else {
            match trap.downcast_ref::<Trap>() {
                Some(Trap::Interrupt) => FailureKind::DeadlineExceeded(self.call_deadline),
                Some(Trap::StackOverflow) => FailureKind::StackOverflow,
                // wasm32 guests keep a shadow stack in linear memory below their data; running
                // off its end is an access below address 0 or into freed pages, which is almost
                // always unbounded recursion.
                Some(Trap::MemoryOutOfBounds) => FailureKind::OutOfBoundsMemory,
                Some(code) => FailureKind::Trap(code.to_string()),
                None => FailureKind::Trap(format!("{trap:#}")),
            }
        };
        self.failure(kind)
    }

    fn process_batch_now(&mut self, records: &[u8]) -> Result<(), StreamError> {
        let out = self.call(Input::Batch(records), |store, _, batch| match batch {
            Some(b) => b.call_process_batch(store, records),
            None => wasmtime::bail!("process-batch called on a per-record operator"),
        })?;
        if let Err(problem) = check_output_batch(&out, &self.store.data().limits) {
            self.failed = true;
            return Err(self.failure(FailureKind::Violation(problem)));
        }
        if out.is_empty() {
            return Ok(());
        }
        self.store.data_mut().output.collect_batch(&out)
    }

    fn process_element_now(&mut self, record: Record<'_>) -> Result<(), StreamError> {
        self.call(Input::Record(record.value), |store, guest, _| {
            guest.call_process_element(store, record.value, record.key, record.timestamp)
        })
    }

    fn flush_pending(&mut self) -> Result<(), StreamError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        let result = self.process_batch_now(&pending);
        self.pending = pending;
        self.pending.clear();
        result
    }

    fn fire_timers(&mut self, domain: TimeDomain, time: i64) -> Result<(), StreamError> {
        let wit_domain = match domain {
            TimeDomain::EventTime => types::TimeDomain::EventTime,
            TimeDomain::ProcessingTime => types::TimeDomain::ProcessingTime,
        };
        while let Some((ts, key)) = self.store.data_mut().timers.pop_due(domain, time) {
            self.call(Input::None, |store, guest, _| {
                guest.call_on_timer(store, wit_domain, &key, ts)
            })?;
        }
        Ok(())
    }
}

/// Checks framed records a guest hands over in one piece: its framing, its size, and every
/// record against the record limit (as the per-record `emit` checks each record).
pub(crate) fn check_output_batch(out: &[u8], limits: &Limits) -> Result<(), String> {
    let max_out = limits.max_batch_output_bytes;
    if out.len() > max_out {
        return Err(format!(
            "one batch produced {} bytes of output, over the limit of {max_out}",
            out.len()
        ));
    }
    weir_framing::count_records(out).map_err(|e| format!("returned a malformed batch: {e}"))?;
    // A record is never longer than the batch that holds it, and block entries are at most
    // 32 bytes: only a large batch needs a look at its lone records.
    let max = limits.max_record_bytes;
    if out.len() > max {
        for (index, item) in weir_framing::items(out).enumerate() {
            if let weir_framing::Item::Record(record, _) = item {
                let longest = record.value.len().max(record.key.map_or(0, <[u8]>::len));
                if longest > max {
                    return Err(format!(
                        "item {index} of an output batch is a record of {longest} bytes, over \
                         the record limit of {max} bytes"
                    ));
                }
            }
        }
    }
    Ok(())
}

/// What a guest call processes.
#[derive(Clone, Copy)]
enum Input<'a> {
    None,
    Record(&'a [u8]),
    Batch(&'a [u8]),
}

fn guest_failure(error: types::OperatorError, input: Input<'_>, operator: &str) -> FailureKind {
    match error {
        types::OperatorError::Decode(d) => FailureKind::Decode {
            preview: match input {
                Input::Record(value) => preview(value),
                Input::Batch(batch) => weir_framing::nth_record(batch, d.record_index as usize)
                    .map_or_else(|| "record not found".into(), |r| preview(r.value)),
                Input::None => "no record".into(),
            },
            index: d.record_index,
            message: d.message,
        },
        types::OperatorError::Config(m) => FailureKind::Config(m),
        types::OperatorError::UnknownOperator(available) => FailureKind::UnknownOperator {
            requested: operator.to_string(),
            available,
        },
        types::OperatorError::State(m) => FailureKind::State(m),
        types::OperatorError::Failed(m) => FailureKind::Failed(m),
    }
}

impl Output for WasmOperator {
    fn collect(&mut self, record: Record<'_>) -> Result<(), StreamError> {
        if self.batch.is_none() {
            return self.process_element_now(record);
        }
        record.write_to(&mut self.pending);
        if self.pending.len() >= self.batch_bytes {
            self.flush_pending()?;
        }
        Ok(())
    }

    fn collect_batch(&mut self, records: &[u8]) -> Result<(), StreamError> {
        if self.batch.is_none() {
            for record in weir_framing::records(records) {
                let record =
                    record.map_err(|e| StreamError::Output(format!("malformed batch: {e}")))?;
                self.collect(record)?;
            }
            return Ok(());
        }
        if self.pending.is_empty() {
            return self.process_batch_now(records);
        }
        self.pending.extend_from_slice(records);
        self.flush_pending()
    }

    fn emit_watermark(&mut self, watermark: i64) -> Result<(), StreamError> {
        self.flush_pending()?;
        let data = self.store.data_mut();
        if watermark <= data.watermark {
            return Ok(());
        }
        data.watermark = watermark;
        self.fire_timers(TimeDomain::EventTime, watermark)?;
        self.call(Input::None, |store, guest, _| {
            guest.call_on_watermark(store, watermark)
        })?;
        self.store.data_mut().output.emit_watermark(watermark)
    }

    fn advance_processing_time(&mut self, now: i64) -> Result<(), StreamError> {
        self.flush_pending()?;
        self.fire_timers(TimeDomain::ProcessingTime, now)?;
        self.store.data_mut().output.advance_processing_time(now)
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        self.flush_pending()?;
        self.store.data_mut().output.flush()
    }

    fn snapshot(
        &mut self,
        checkpoint: u64,
        into: &mut Vec<OperatorSnapshot>,
    ) -> Result<(), StreamError> {
        self.flush_pending()?;
        let guest_state = self.call(Input::None, |store, guest, _| {
            guest.call_snapshot_state(store)
        })?;
        let data = self.store.data_mut();
        into.push(OperatorSnapshot {
            operator: self.id.clone(),
            subtask: self.subtask,
            parallelism: self.parallelism,
            guest_state,
            keyed: data.state.snapshot(),
            timers: data.timers.snapshot(),
        });
        data.output.snapshot(checkpoint, into)
    }

    fn notify_checkpoint_complete(&mut self, checkpoint: u64) -> Result<(), StreamError> {
        self.store
            .data_mut()
            .output
            .notify_checkpoint_complete(checkpoint)
    }

    fn end_input(&mut self) -> Result<(), StreamError> {
        if self.store.data().closed {
            return Ok(());
        }
        self.flush_pending()?;
        self.call(Input::None, |store, guest, _| guest.call_close(store))?;
        self.store.data_mut().closed = true;
        self.store.data().log.flush_partial();
        let output = &mut self.store.data_mut().output;
        output.flush()?;
        output.end_input()
    }

    fn finish(&mut self) -> Result<(), StreamError> {
        self.end_input()?;
        self.store.data_mut().output.finish()
    }
}

//! A wasm operator's user function: one component instance in its own store, called by the
//! runtime's stream operator through [`UserFunction`]. For each call the operator's
//! [`FunctionContext`] (keyed state, timers, watermark, output) moves into the store, where the
//! host imports reach it, and back out when the call returns.
//!
//! In per-record mode each record is one `process-element` call, and the guest's `emit`
//! passes records to the next operator before returning; in batched mode a batch is one
//! `process-batch` call whose result is checked and passed on whole.

use std::sync::Arc;

use wasmtime::component::Instance;
use wasmtime::{Store, Trap};
use weir_framing::Record;

use super::bindings::exports::weir::stream::{batch, operator, two_input};
use super::bindings::weir::stream::types;
use super::engine::{LoadedComponent, WasmRuntime};
use super::error::{FailureKind, OperatorFailure, preview};
use super::limits::Limits;
use super::spec::{ExecutionMode, OperatorSpec};
use super::stdio::{GuestLog, OutputCapExceeded};
use super::store::{CallClock, Interruption, LimitHit, OperatorStore};
use crate::state::TimeDomain;
use crate::stream::{FunctionContext, StreamError, UserFunction};

/// One operator subtask's component instance. See the module docs.
pub struct WasmFunction {
    store: Store<OperatorStore>,
    guest: operator::Guest,
    batch: Option<batch::Guest>,
    /// The second input's exports, if the component has them.
    two_input: Option<two_input::Guest>,
    component: Arc<LoadedComponent>,
    /// The operator's node id in the job.
    id: String,
    /// The operator name the component exports.
    operator: String,
    subtask: u32,
    call_deadline: std::time::Duration,
    failed: bool,
    timings: OpenTimings,
}

/// Where the time of [`WasmFunction::open`] went.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenTimings {
    /// New store and instantiation from the pre-linked component.
    pub instantiate: std::time::Duration,
    /// The guest's `open` (and `restore-state`): the first call into a fresh instance, which
    /// also pays the guest's own start-up.
    pub open: std::time::Duration,
}

impl WasmFunction {
    /// Instantiates `component` for `spec` and opens the guest with `ctx` (whose keyed state
    /// and timers are already restored, so the guest finds them as it declares its states),
    /// then gives it back `guest_state`, the bytes of an earlier `snapshot-state`.
    pub fn open(
        runtime: &WasmRuntime,
        component: Arc<LoadedComponent>,
        spec: &OperatorSpec,
        ctx: &mut FunctionContext,
        guest_state: Option<&[u8]>,
    ) -> Result<Self, StreamError> {
        let started = std::time::Instant::now();
        let source = format!("{}#{}", spec.operator, spec.subtask_index);
        let log = GuestLog::new(source, spec.limits.max_log_bytes, spec.log_sink.clone());
        let mut store = sandbox_store(
            runtime,
            spec.limits.clone(),
            spec.capabilities,
            log,
            spec.cancel.clone(),
            spec.memory_gauge.clone(),
            spec.random_seed,
        );

        let fail = |kind| -> StreamError {
            OperatorFailure {
                component: component.name.clone(),
                operator: spec.id.clone(),
                subtask: spec.subtask_index,
                kind,
            }
            .into()
        };
        let instance: Instance = instantiate(&component, &mut store)
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
        let two_input = match &component.two_input_indices {
            Some(indices) => Some(
                indices
                    .load(&mut store, &instance)
                    .map_err(|e| fail(FailureKind::Instantiate(format!("{e:#}"))))?,
            ),
            None => None,
        };

        let mut function = WasmFunction {
            store,
            guest,
            batch,
            two_input,
            component: component.clone(),
            id: spec.id.clone(),
            operator: spec.operator.clone(),
            subtask: spec.subtask_index,
            call_deadline: spec.limits.call_deadline,
            failed: false,
            timings: OpenTimings::default(),
        };
        function.timings.instantiate = started.elapsed();
        let context = types::Context {
            operator_name: spec.operator.clone(),
            subtask_index: spec.subtask_index,
            parallelism: spec.parallelism,
            max_parallelism: spec.max_parallelism,
            attempt: spec.attempt,
            config: spec.config.clone(),
        };
        function.call(ctx, Input::None, |store, guest, _| {
            guest.call_open(store, &context)
        })?;
        if let Some(bytes) = guest_state {
            function.call(ctx, Input::None, |store, guest, _| {
                guest.call_restore_state(store, bytes)
            })?;
        }
        function.timings.open = started.elapsed() - function.timings.instantiate;
        Ok(function)
    }

    /// How long opening took.
    pub fn open_timings(&self) -> OpenTimings {
        self.timings
    }

    /// The component this function runs.
    pub fn component(&self) -> &LoadedComponent {
        &self.component
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

    /// Makes one call into the guest under the call deadline, with `ctx` lent to the store,
    /// and turns every way it can fail into a [`StreamError`]. `input` is what the call
    /// processes, to show the record a decode failure names.
    fn call<R>(
        &mut self,
        ctx: &mut FunctionContext,
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
        let data = self.store.data_mut();
        data.clock.start_call();
        std::mem::swap(&mut data.ctx, ctx);
        self.store.set_epoch_deadline(1);
        let result = f(&mut self.store, &self.guest, self.batch.as_ref());
        std::mem::swap(&mut self.store.data_mut().ctx, ctx);
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
        let kind = trap_kind(data, &trap, self.call_deadline);
        self.failure(kind)
    }
}

impl UserFunction for WasmFunction {
    fn takes_batches(&self) -> bool {
        self.batch.is_some()
    }

    fn process_batch(
        &mut self,
        ctx: &mut FunctionContext,
        records: &[u8],
    ) -> Result<(), StreamError> {
        let out = self.call(ctx, Input::Batch(records), |store, _, batch| match batch {
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
        ctx.output.collect_batch(&out)
    }

    fn process_record(
        &mut self,
        ctx: &mut FunctionContext,
        record: Record<'_>,
    ) -> Result<(), StreamError> {
        self.call(ctx, Input::Record(record.value), |store, guest, _| {
            guest.call_process_element(store, record.value, record.key, record.timestamp)
        })
    }

    fn process_second_batch(
        &mut self,
        ctx: &mut FunctionContext,
        records: &[u8],
    ) -> Result<(), StreamError> {
        let Some(two) = self.two_input.take() else {
            return Err(self.failure(FailureKind::Violation(format!(
                "the job gives operator `{}` a second input, but its component does not export \
                 `weir:stream/two-input` (a one-input operator, or built before WIT 0.2.2)",
                self.operator
            ))));
        };
        let result = if self.batch.is_some() {
            self.call(ctx, Input::Batch(records), |store, _, _| {
                two.call_process_batch_second(store, records)
            })
            .map(Some)
        } else {
            let mut result = Ok(None);
            for record in weir_framing::records(records) {
                let record = match record {
                    Ok(r) => r,
                    Err(e) => {
                        result = Err(StreamError::Output(format!("malformed batch: {e}")));
                        break;
                    }
                };
                if let Err(e) = self.call(ctx, Input::Record(record.value), |store, _, _| {
                    two.call_process_element_second(
                        store,
                        record.value,
                        record.key,
                        record.timestamp,
                    )
                }) {
                    result = Err(e);
                    break;
                }
            }
            result
        };
        self.two_input = Some(two);
        let Some(out) = result? else {
            return Ok(());
        };
        if let Err(problem) = check_output_batch(&out, &self.store.data().limits) {
            self.failed = true;
            return Err(self.failure(FailureKind::Violation(problem)));
        }
        if out.is_empty() {
            return Ok(());
        }
        ctx.output.collect_batch(&out)
    }

    fn on_timer(
        &mut self,
        ctx: &mut FunctionContext,
        domain: TimeDomain,
        key: &[u8],
        timestamp: i64,
    ) -> Result<(), StreamError> {
        let domain = match domain {
            TimeDomain::EventTime => types::TimeDomain::EventTime,
            TimeDomain::ProcessingTime => types::TimeDomain::ProcessingTime,
        };
        self.call(ctx, Input::None, |store, guest, _| {
            guest.call_on_timer(store, domain, key, timestamp)
        })
    }

    fn on_watermark(
        &mut self,
        ctx: &mut FunctionContext,
        watermark: i64,
    ) -> Result<(), StreamError> {
        self.call(ctx, Input::None, |store, guest, _| {
            guest.call_on_watermark(store, watermark)
        })
    }

    fn snapshot_state(&mut self, ctx: &mut FunctionContext) -> Result<Vec<u8>, StreamError> {
        self.call(ctx, Input::None, |store, guest, _| {
            guest.call_snapshot_state(store)
        })
    }

    fn close(&mut self, ctx: &mut FunctionContext) -> Result<(), StreamError> {
        let result = self.call(ctx, Input::None, |store, guest, _| guest.call_close(store));
        self.store.data().log.flush_partial();
        result
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
    // A record is never longer than the batch that holds it: only a large batch needs a look
    // at its records, and a block's entries all have the widths its header gives.
    let max = limits.max_record_bytes;
    if out.len() > max {
        for (index, item) in weir_framing::items(out).enumerate() {
            let longest = match item {
                weir_framing::Item::Record(record, _) => {
                    record.value.len().max(record.key.map_or(0, <[u8]>::len))
                }
                weir_framing::Item::Block(block) => {
                    let key = block.key_len().unwrap_or(0);
                    let value = block.stride() - key - if block.has_timestamp() { 8 } else { 0 };
                    key.max(value)
                }
            };
            if longest > max {
                return Err(format!(
                    "item {index} of an output batch holds a record of {longest} bytes, over \
                     the record limit of {max} bytes"
                ));
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

/// Makes the store an instance lives in: the sandbox (WASI with nothing granted but what
/// `capabilities` says, memory and table caps) and the epoch callback that enforces the call
/// deadline and the job's cancellation.
pub(crate) fn sandbox_store(
    runtime: &WasmRuntime,
    limits: Arc<Limits>,
    capabilities: super::engine::Capabilities,
    log: Arc<GuestLog>,
    cancel: Option<Arc<std::sync::atomic::AtomicBool>>,
    memory_gauge: Option<Arc<std::sync::atomic::AtomicU64>>,
    random_seed: u64,
) -> Store<OperatorStore> {
    let tick = runtime.epoch_tick();
    let deadline_ticks =
        u64::try_from(limits.call_deadline.as_nanos() / tick.as_nanos().max(1) + 1)
            .unwrap_or(u64::MAX);
    let clock = CallClock {
        deadline_ticks,
        ticks_left: deadline_ticks,
        tick,
        cancel,
        interrupted: None,
        waits: Default::default(),
    };
    let data = OperatorStore::new(limits, capabilities, log, clock, memory_gauge, random_seed);
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
    store
}

/// Names a trap by what caused it, most specific cause first, from what the store recorded
/// on the way to it.
pub(crate) fn trap_kind(
    data: &mut OperatorStore,
    trap: &wasmtime::Error,
    call_deadline: std::time::Duration,
) -> FailureKind {
    if let Some(why) = data.clock.interrupted.take() {
        match why {
            Interruption::Cancelled => FailureKind::Cancelled,
            Interruption::Deadline => match data.clock.waits.take_cut() {
                Some(wait) => FailureKind::BlockedPastDeadline {
                    deadline: call_deadline,
                    wait,
                },
                None => FailureKind::DeadlineExceeded(call_deadline),
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
            Some(Trap::Interrupt) => FailureKind::DeadlineExceeded(call_deadline),
            Some(Trap::StackOverflow) => FailureKind::StackOverflow,
            // wasm32 guests keep a shadow stack in linear memory below their data; running
            // off its end is an access below address 0 or into freed pages, which is almost
            // always unbounded recursion.
            Some(Trap::MemoryOutOfBounds) => FailureKind::OutOfBoundsMemory,
            Some(code) => FailureKind::Trap(code.to_string()),
            None => FailureKind::Trap(format!("{trap:#}")),
        }
    }
}

/// Instantiates `component` in `store`, trying again when the kernel refused to seal the memfd
/// of the module's initial memory image. Wasmtime makes that image (a sealed memfd) at the first
/// instantiation of a module; sealing it for writes fails with EBUSY while any page of it still
/// carries an extra reference, which pages freshly written into a memfd do for a moment under
/// load (they wait in the kernel's per-CPU LRU batches). It was seen once in ~50 runs of 128
/// SpiderMonkey instances starting at once on two cores. Wasmtime does not keep the failure, so
/// the next attempt makes the image again.
pub(crate) fn instantiate(
    component: &LoadedComponent,
    store: &mut Store<OperatorStore>,
) -> wasmtime::Result<Instance> {
    const ATTEMPTS: u32 = 4;
    let mut attempt = 1;
    loop {
        match component.pre.instantiate(&mut *store) {
            Err(e) if attempt < ATTEMPTS && is_memfd_seal_race(&e) => {
                std::thread::sleep(std::time::Duration::from_millis(5 << attempt));
                attempt += 1;
            }
            result => return result,
        }
    }
}

fn is_memfd_seal_race(e: &wasmtime::Error) -> bool {
    e.chain()
        .any(|cause| cause.to_string().contains("cannot add seals to the memfd"))
}

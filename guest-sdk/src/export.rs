//! The glue between the component's exports and an [`Operator`]: one operator instance per
//! component instance, picked by name in `open`.
//!
//! Both export paths run the same per-record code. `process-element` emits through the
//! `output.emit` import after the operator returns; `process-batch` loops over the batch inside
//! the guest and hands back everything emitted as one framed buffer, which is what makes the
//! batched path ~30x cheaper than a call per record.

use std::cell::RefCell;
use std::marker::PhantomData;

use weir_framing::{BatchWriter, Record};

use crate::bindings::exports::weir::stream::{batch, job_plan, operator, two_input};
use crate::bindings::weir::stream::{logging, output, types};
use crate::cache::CachedHost;
use crate::host::{WasmHost, from_wit_domain};
use crate::operator::{
    BatchHost, Context, HostRef, OpenContext, Operator, OperatorError, OperatorInfo,
};

/// The operators one component exports, by name. Implemented by
/// [`export_operators!`](crate::export_operators).
pub trait Registry {
    /// Every operator name, in declaration order.
    const NAMES: &'static [&'static str];
    /// A fresh operator for `name`, or `None` if the component has no such operator.
    fn create(name: &str) -> Option<Box<dyn Operator>>;
    /// The component's job plan for `args`; `None` for a component without one (it runs from
    /// a manifest).
    fn plan(args: &crate::plan::Args) -> Option<Result<crate::plan::Job, crate::plan::PlanError>> {
        let _ = args;
        None
    }
}

/// Implements the WIT exports for the operators of `R`.
pub struct Component<R>(PhantomData<R>);

struct Instance {
    operator: Box<dyn Operator>,
    /// Framed output of the current call, reused across calls.
    out: BatchWriter,
    /// The host, with value state cached; flushed before snapshots, at close, and when it
    /// outgrows its bound (see [`crate::cache`]).
    host: CachedHost,
}

thread_local! {
    static INSTANCE: RefCell<Option<Instance>> = const { RefCell::new(None) };
}

fn to_wit(err: OperatorError, record_index: u32) -> types::OperatorError {
    match err {
        OperatorError::Decode(message) => types::OperatorError::Decode(types::DecodeFailure {
            record_index,
            message,
        }),
        OperatorError::Config(m) => types::OperatorError::Config(m),
        OperatorError::State(m) => types::OperatorError::State(m),
        OperatorError::Failed(m) => types::OperatorError::Failed(m),
    }
}

/// Runs `f` on the instance, then keeps the state cache within its bound.
fn with_instance<T>(
    f: impl FnOnce(&mut Instance) -> Result<T, types::OperatorError>,
) -> Result<T, types::OperatorError> {
    INSTANCE.with(|cell| match cell.borrow_mut().as_mut() {
        Some(instance) => {
            let result = f(instance);
            instance.host.trim();
            result
        }
        None => Err(types::OperatorError::Failed(
            "operator called before a successful open".into(),
        )),
    })
}

/// Runs `f` with a fresh context over the instance's output buffer, then sends what it emitted
/// through the `emit` import.
fn call_emitting(
    instance: &mut Instance,
    key: Option<&[u8]>,
    timestamp: Option<i64>,
    f: impl FnOnce(&mut dyn Operator, &mut Context<'_>) -> Result<(), OperatorError>,
) -> Result<(), types::OperatorError> {
    instance.out.clear();
    let result = {
        let mut ctx = Context::with_host(
            HostRef::Cached(&mut instance.host),
            &mut instance.out,
            key,
            timestamp,
        );
        f(instance.operator.as_mut(), &mut ctx)
    };
    for record in weir_framing::records(instance.out.as_bytes()) {
        let record = record.map_err(|e| {
            types::OperatorError::Failed(format!("SDK produced malformed output: {e}"))
        })?;
        output::emit(record.value, record.key, record.timestamp);
    }
    result.map_err(|e| to_wit(e, 0))
}

fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let message = info.payload_as_str().unwrap_or("a panic without a message");
        let report = match info.location() {
            Some(at) => format!("{message} (at {}:{}:{})", at.file(), at.line(), at.column()),
            None => message.to_string(),
        };
        logging::report_panic(&report);
    }));
}

impl<R: Registry> operator::Guest for Component<R> {
    fn open(context: types::Context) -> Result<(), types::OperatorError> {
        install_panic_hook();
        let info = OperatorInfo {
            name: context.operator_name,
            subtask_index: context.subtask_index,
            parallelism: context.parallelism,
            max_parallelism: context.max_parallelism,
            attempt: context.attempt,
            config: context.config,
        };
        let Some(mut operator) = R::create(&info.name) else {
            return Err(types::OperatorError::UnknownOperator(R::NAMES.join(", ")));
        };
        let mut host = WasmHost;
        operator
            .open(&mut OpenContext::new(&info, &mut host))
            .map_err(|e| to_wit(e, 0))?;
        INSTANCE.with(|cell| {
            *cell.borrow_mut() = Some(Instance {
                operator,
                out: BatchWriter::new(),
                host: CachedHost::default(),
            })
        });
        Ok(())
    }

    fn process_element(
        value: Vec<u8>,
        key: Option<Vec<u8>>,
        timestamp: Option<i64>,
    ) -> Result<(), types::OperatorError> {
        with_instance(|instance| {
            let record = Record {
                value: &value,
                key: key.as_deref(),
                timestamp,
            };
            call_emitting(instance, record.key, timestamp, |op, ctx| {
                op.process(record, ctx)
            })
        })
    }

    fn on_watermark(watermark: i64) -> Result<(), types::OperatorError> {
        with_instance(|instance| {
            call_emitting(instance, None, Some(watermark), |op, ctx| {
                op.on_watermark(watermark, ctx)
            })
        })
    }

    fn on_timer(
        domain: types::TimeDomain,
        key: Vec<u8>,
        timestamp: i64,
    ) -> Result<(), types::OperatorError> {
        with_instance(|instance| {
            call_emitting(instance, Some(&key), Some(timestamp), |op, ctx| {
                op.on_timer(from_wit_domain(domain), ctx)
            })
        })
    }

    fn snapshot_state() -> Result<Vec<u8>, types::OperatorError> {
        // The host snapshots keyed state right after this returns: it must hold every write.
        with_instance(|instance| {
            let own = instance.operator.snapshot_state().map_err(|e| to_wit(e, 0));
            instance.host.flush();
            own
        })
    }

    fn restore_state(state: Vec<u8>) -> Result<(), types::OperatorError> {
        with_instance(|instance| {
            instance
                .operator
                .restore_state(&state)
                .map_err(|e| to_wit(e, 0))
        })
    }

    fn close() -> Result<(), types::OperatorError> {
        with_instance(|instance| {
            let result = call_emitting(instance, None, None, |op, ctx| op.close(ctx));
            instance.host.flush();
            result
        })
    }
}

/// One batched call: `f` runs the batch through the operator into the instance's output buffer,
/// which goes back to the host as the call's result.
fn batch_call(
    records: &[u8],
    f: impl FnOnce(
        &mut dyn Operator,
        &[u8],
        &mut BatchHost<'_>,
        &mut BatchWriter,
    ) -> Result<(), crate::operator::BatchFailure>,
) -> Result<Vec<u8>, types::OperatorError> {
    with_instance(|instance| {
        instance.out.clear();
        f(
            instance.operator.as_mut(),
            records,
            &mut BatchHost(HostRef::Cached(&mut instance.host)),
            &mut instance.out,
        )
        .map_err(|f| to_wit(f.error, u32::try_from(f.record_index).unwrap_or(u32::MAX)))?;
        // Hand the filled buffer to the host and keep one of the same size for the next
        // batch: the allocator reuses the block the host's copy frees.
        let capacity = instance.out.len();
        Ok(std::mem::replace(&mut instance.out, BatchWriter::with_capacity(capacity)).into_vec())
    })
}

impl<R: Registry> batch::Guest for Component<R> {
    fn process_batch(records: Vec<u8>) -> Result<Vec<u8>, types::OperatorError> {
        batch_call(&records, |op, records, host, out| {
            op.process_batch(records, host, out)
        })
    }
}

impl<R: Registry> two_input::Guest for Component<R> {
    fn process_element_second(
        value: Vec<u8>,
        key: Option<Vec<u8>>,
        timestamp: Option<i64>,
    ) -> Result<(), types::OperatorError> {
        with_instance(|instance| {
            let record = Record {
                value: &value,
                key: key.as_deref(),
                timestamp,
            };
            call_emitting(instance, record.key, timestamp, |op, ctx| {
                op.process_second(record, ctx)
            })
        })
    }

    fn process_batch_second(records: Vec<u8>) -> Result<Vec<u8>, types::OperatorError> {
        batch_call(&records, |op, records, host, out| {
            op.process_second_batch(records, host, out)
        })
    }
}

impl<R: Registry> job_plan::Guest for Component<R> {
    fn plan(args: Vec<(String, String)>) -> Result<Option<String>, String> {
        install_panic_hook();
        match R::plan(&crate::plan::Args::new(args)) {
            None => Ok(None),
            Some(Ok(job)) => job.manifest().map(Some).map_err(|e| e.to_string()),
            Some(Err(e)) => Err(e.to_string()),
        }
    }

    fn operators() -> Vec<String> {
        R::NAMES.iter().map(|name| name.to_string()).collect()
    }
}

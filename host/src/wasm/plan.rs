//! Asking a component for the job it runs: one call of `job-plan.plan` in an instance of its
//! own, made for that call alone, with no capability, no state worth the name (an empty
//! context: records it emits are refused) and under a deadline, before anything is deployed.

use std::sync::Arc;
use std::time::Duration;

use super::engine::{Capabilities, LoadedComponent, WasmRuntime};
use super::error::FailureKind;
use super::function::{sandbox_store, trap_kind};
use super::limits::Limits;
use super::stdio::{GuestLog, LogSink};

/// What a component says about the job it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentPlan {
    /// The job manifest (TOML) whose operators are the component's own.
    pub manifest: String,
    /// The operator names the component exports.
    pub operators: Vec<String>,
}

/// Why a component gave no plan. Each names the component.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The component exports operators but no plan, or answered that it has none.
    #[error(
        "`{component}` is an operator component without a plan: run it from a job manifest that \
         names it (see `weir package` to make one file of both), or give it a plan (the Rust \
         SDK's `export_operators! {{ plan = ...; }}`)"
    )]
    NoPlan { component: String },
    /// The plan's own code refused the arguments it was given.
    #[error("the plan of `{component}` failed: {message}")]
    Refused { component: String, message: String },
    /// The plan call trapped, ran past its deadline or its memory.
    #[error("the plan of `{component}` {kind}")]
    Trapped {
        component: String,
        kind: FailureKind,
    },
}

/// How the plan call is bounded.
#[derive(Debug, Clone, Copy)]
pub struct PlanLimits {
    /// Longest the call may run.
    pub deadline: Duration,
    /// Largest memory the instance may grow to.
    pub memory_bytes: usize,
}

impl Default for PlanLimits {
    fn default() -> Self {
        PlanLimits {
            deadline: Duration::from_secs(10),
            memory_bytes: 256 << 20,
        }
    }
}

/// Calls the component's plan with the command line's `args`. What the guest prints goes to
/// `log` (at most 64 KiB).
pub fn describe_job(
    runtime: &WasmRuntime,
    component: &Arc<LoadedComponent>,
    args: &[(String, String)],
    limits: PlanLimits,
    log: Arc<dyn LogSink>,
) -> Result<ComponentPlan, PlanError> {
    let no_plan = || PlanError::NoPlan {
        component: component.name.clone(),
    };
    let Some(indices) = &component.plan_indices else {
        return Err(no_plan());
    };
    let limits = Arc::new(Limits {
        call_deadline: limits.deadline,
        max_memory_bytes: limits.memory_bytes,
        max_log_bytes: 64 << 10,
        // A plan has no use for timers, state or records; what host memory they take is not
        // under the memory cap, so none is allowed (a record, at most 4 KiB, is refused by the
        // empty context's output).
        max_timers: 0,
        max_states: 0,
        max_record_bytes: 4096,
        max_state_key_bytes: 0,
        max_state_value_bytes: 0,
        max_state_bytes: 0,
        ..Limits::default()
    });
    let log = GuestLog::new("plan".into(), limits.max_log_bytes, log);
    let deadline = limits.call_deadline;
    let mut store = sandbox_store(runtime, limits, Capabilities::default(), log, None, None, 0);
    let trapped = |store: &mut wasmtime::Store<super::store::OperatorStore>, e: wasmtime::Error| {
        store.data().log.flush_partial();
        let kind = match store.data_mut().downstream.take() {
            // An emitted record, refused by the context's empty output.
            Some(refused) => FailureKind::Violation(format!("{refused} (a plan emits nothing)")),
            None => trap_kind(store.data_mut(), &e, deadline),
        };
        PlanError::Trapped {
            component: component.name.clone(),
            kind,
        }
    };
    let instance = match super::function::instantiate(component, &mut store) {
        Ok(instance) => instance,
        Err(e) => return Err(trapped(&mut store, e)),
    };
    let guest = match indices.load(&mut store, &instance) {
        Ok(guest) => guest,
        Err(e) => return Err(trapped(&mut store, e)),
    };
    store.data_mut().clock.start_call();
    let answer = match guest.call_plan(&mut store, args) {
        Ok(answer) => answer,
        Err(e) => return Err(trapped(&mut store, e)),
    };
    let manifest = match answer {
        Ok(Some(manifest)) => manifest,
        Ok(None) => return Err(no_plan()),
        Err(message) => {
            return Err(PlanError::Refused {
                component: component.name.clone(),
                message,
            });
        }
    };
    store.data_mut().clock.start_call();
    let operators = match guest.call_operators(&mut store) {
        Ok(operators) => operators,
        Err(e) => return Err(trapped(&mut store, e)),
    };
    store.data().log.flush_partial();
    Ok(ComponentPlan {
        manifest,
        operators,
    })
}

//! Blocking waits of a guest. A call runs on its task's thread, and a guest waiting in a host
//! call (`std::thread::sleep` on wasm32-wasip2 is `subscribe-duration` then `block`) is beyond
//! the reach of epoch interruption: it would hold the task, and delay cancellation, for as long
//! as it asks. So the host takes over the two ways to make a timed pollable:
//!
//! - a guest without the clocks capability (the default) cannot wait at all: its clocks read
//!   zero, so a sleep could only be a stall. The wait traps at once, naming itself;
//! - a guest with clocks gets a wait that ends at the latest when its call's deadline would
//!   pass, and at once when the job is cancelled. The time it actually waited is charged to
//!   the call's budget (the [`WaitLedger`]), so the deadline then stops the call and the
//!   failure names the wait.
//!
//! A zero-length wait (a non-blocking poll) is always allowed.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::clocks::WasiClocksView;
use wasmtime_wasi::p2::bindings::clocks::monotonic_clock::Host as MonotonicClock;
use wasmtime_wasi::p2::{DynPollable, Pollable, subscribe};
use wasmtime_wasi::{WasiView, async_trait};

use super::store::OperatorStore;

/// The interface whose functions are replaced; the version wasmtime-wasi binds (an import of
/// any 0.2.x resolves to it).
const MONOTONIC_CLOCK: &str = "wasi:clocks/monotonic-clock@0.2.12";

/// How often a waiting guest looks at its job's cancel flag.
const CANCEL_CHECK: Duration = Duration::from_millis(10);

/// What the waits of the call in progress cost, shared between its pollables (which run on
/// wasmtime-wasi's executor) and the epoch callback (which charges the call's budget).
#[derive(Debug, Default)]
pub struct WaitLedger {
    waited_nanos: AtomicU64,
    /// The wait that was cut at the deadline, described.
    cut: Mutex<Option<String>>,
    /// Any wait happened since the last reset: lets the start of every call skip the reset
    /// (a call into a guest is on the per-record path).
    used: AtomicBool,
}

impl WaitLedger {
    /// Forgets the waits of the previous call.
    #[inline]
    pub fn reset(&self) {
        if self.used.load(Ordering::Relaxed) {
            self.used.store(false, Ordering::Relaxed);
            self.take_waited();
            self.take_cut();
        }
    }

    /// Time waited since the last look, now charged.
    pub fn take_waited(&self) -> Duration {
        Duration::from_nanos(self.waited_nanos.swap(0, Ordering::Relaxed))
    }

    /// Time waited and not yet charged.
    pub fn pending(&self) -> Duration {
        Duration::from_nanos(self.waited_nanos.load(Ordering::Relaxed))
    }

    /// The wait that reached the call's deadline, if one did.
    pub fn take_cut(&self) -> Option<String> {
        self.cut.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    fn charge(&self, waited: Duration) {
        let nanos = u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX);
        self.waited_nanos.fetch_add(nanos, Ordering::Relaxed);
        self.used.store(true, Ordering::Relaxed);
    }
}

/// Replaces `subscribe-duration` and `subscribe-instant` of the linker's WASI clocks with
/// guarded versions. Call after the WASI imports are added.
pub(crate) fn guard_clock_waits(linker: &mut Linker<OperatorStore>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut clock = linker.instance(MONOTONIC_CLOCK)?;
    clock.func_wrap(
        "subscribe-duration",
        |mut store: StoreContextMut<'_, OperatorStore>, (nanos,): (u64,)| {
            Ok((guarded_wait(store.data_mut(), nanos)?,))
        },
    )?;
    clock.func_wrap(
        "subscribe-instant",
        |mut store: StoreContextMut<'_, OperatorStore>, (when,): (u64,)| {
            let now = store.data_mut().clocks().now()?;
            Ok((guarded_wait(store.data_mut(), when.saturating_sub(now))?,))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// A pollable for a wait of `nanos`, or the trap that refuses it.
fn guarded_wait(store: &mut OperatorStore, nanos: u64) -> wasmtime::Result<Resource<DynPollable>> {
    let asked = Duration::from_nanos(nanos);
    if !nanos.eq(&0) && !store.clocks_granted {
        return Err(store.violate(format!(
            "tried to wait {asked:?} (a sleep or timed poll); this job grants no clock, so a \
             guest cannot wait: it would only stall its task"
        )));
    }
    let remaining = store.clock.remaining();
    let wait = GuardedWait {
        until: Instant::now() + asked.min(remaining),
        cut: (asked > remaining).then(|| format!("a wait of {asked:?}")),
        cancel: store.clock.cancel.clone(),
        ledger: store.clock.waits.clone(),
    };
    let table = store.ctx().table;
    let resource = table.push(wait)?;
    subscribe(table, resource)
}

/// A wait that ends at `until` or when the job is cancelled, whichever comes first.
struct GuardedWait {
    until: Instant,
    /// Set when `until` is the call's deadline rather than what the guest asked for.
    cut: Option<String>,
    cancel: Option<Arc<AtomicBool>>,
    ledger: Arc<WaitLedger>,
}

/// Charges the time a wait took, however it ended: a poll over several pollables drops the
/// futures of those that did not become ready.
struct Charge<'a> {
    ledger: &'a WaitLedger,
    started: Instant,
}

impl Drop for Charge<'_> {
    fn drop(&mut self) {
        self.ledger.charge(self.started.elapsed());
    }
}

#[async_trait]
impl Pollable for GuardedWait {
    async fn ready(&mut self) {
        let _charge = Charge {
            ledger: &self.ledger,
            started: Instant::now(),
        };
        loop {
            let now = Instant::now();
            if self
                .cancel
                .as_ref()
                .is_some_and(|c| c.load(Ordering::Relaxed))
            {
                return;
            }
            if now >= self.until {
                if let Some(cut) = &self.cut {
                    *self.ledger.cut.lock().unwrap_or_else(|p| p.into_inner()) = Some(cut.clone());
                }
                return;
            }
            tokio::time::sleep((self.until - now).min(CANCEL_CHECK)).await;
        }
    }
}

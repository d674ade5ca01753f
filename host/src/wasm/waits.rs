//! Blocking waits of a guest. A call runs on its task's thread, and a guest waiting in a host
//! call (`std::thread::sleep` on wasm32-wasip2 is `subscribe-duration` then `block`) is beyond
//! the reach of epoch interruption: it would hold the task, and delay cancellation, for as long
//! as it asks. So the host takes over the two ways to make a timed pollable:
//!
//! - a guest without the clocks capability (the default) cannot wait at all: its clocks read
//!   zero, so a sleep could only be a stall. The wait traps at once, naming itself;
//! - a guest with clocks waits at most what its call has left of the CPU deadline; the deadline
//!   then stops the call and the failure names the wait.
//!
//! A zero-length wait (a non-blocking poll) is always allowed.

use std::time::Duration;

use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::clocks::WasiClocksView;
use wasmtime_wasi::p2::DynPollable;
use wasmtime_wasi::p2::bindings::clocks::monotonic_clock::Host as MonotonicClock;

use super::store::OperatorStore;

/// The interface whose functions are replaced; the version wasmtime-wasi binds (an import of
/// any 0.2.x resolves to it).
const MONOTONIC_CLOCK: &str = "wasi:clocks/monotonic-clock@0.2.12";

/// Replaces `subscribe-duration` and `subscribe-instant` of the linker's WASI clocks with
/// guarded versions. Call after the WASI imports are added.
pub(crate) fn guard_clock_waits(linker: &mut Linker<OperatorStore>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut clock = linker.instance(MONOTONIC_CLOCK)?;
    clock.func_wrap(
        "subscribe-duration",
        |mut store: StoreContextMut<'_, OperatorStore>, (nanos,): (u64,)| {
            let wait = allowed_wait(store.data_mut(), nanos)?;
            let pollable = store.data_mut().clocks().subscribe_duration(wait)?;
            Ok((pollable,))
        },
    )?;
    clock.func_wrap(
        "subscribe-instant",
        |mut store: StoreContextMut<'_, OperatorStore>,
         (when,): (u64,)|
         -> wasmtime::Result<(Resource<DynPollable>,)> {
            let now = store.data_mut().clocks().now()?;
            let wait = allowed_wait(store.data_mut(), when.saturating_sub(now))?;
            let pollable = store.data_mut().clocks().subscribe_duration(wait)?;
            Ok((pollable,))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// The part of a wait of `nanos` the guest may take, or the trap that refuses it.
fn allowed_wait(store: &mut OperatorStore, nanos: u64) -> wasmtime::Result<u64> {
    if nanos == 0 {
        return Ok(0);
    }
    let asked = Duration::from_nanos(nanos);
    if !store.clocks_granted {
        return Err(store.violate(format!(
            "tried to wait {asked:?} (a sleep or timed poll); this job grants no clock, so a \
             guest cannot wait: it would only stall its task"
        )));
    }
    let remaining = store.clock.remaining();
    let granted = asked.min(remaining);
    if asked > remaining {
        store.blocked_in = Some(format!("a wait of {asked:?}"));
    }
    // Epoch ticks that pass while the guest waits in the host are not seen by the epoch
    // callback, so the wait is charged to the call's budget here.
    let tick = store.clock.tick.as_nanos().max(1);
    let ticks = u64::try_from(granted.as_nanos().div_ceil(tick)).unwrap_or(u64::MAX);
    store.clock.ticks_left = store.clock.ticks_left.saturating_sub(ticks).max(1);
    Ok(u64::try_from(granted.as_nanos()).unwrap_or(u64::MAX))
}

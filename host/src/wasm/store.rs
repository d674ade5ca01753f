//! The data of an operator instance's store: its sandboxed WASI context, its limits, its keyed
//! state and timers, and the output its records go to.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{
    HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView,
};

use super::engine::Capabilities;
use super::limits::Limits;
use super::stdio::{GuestLog, GuestStdio};
use super::waits::WaitLedger;
use crate::stream::{FunctionContext, StreamError};

/// A limit the guest ran into, recorded so the trap that follows is reported for what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitHit {
    Memory { requested: usize, cap: usize },
    Table { requested: usize, cap: usize },
}

/// Enforces memory and table caps. Growth over a cap traps at once (rather than letting
/// `memory.grow` return -1), so the failure is reported as the cap, not as whatever the
/// guest's allocator does next.
pub struct GuestLimiter {
    max_memory: usize,
    max_table: usize,
    pub hit: Option<LimitHit>,
    /// The task's gauge of guest memory, and what this instance added to it (taken back
    /// when the instance goes).
    gauge: Option<(Arc<std::sync::atomic::AtomicU64>, u64)>,
}

impl Drop for GuestLimiter {
    fn drop(&mut self) {
        if let Some((gauge, mine)) = &self.gauge {
            gauge.fetch_sub(*mine, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

impl ResourceLimiter for GuestLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_memory {
            self.hit = Some(LimitHit::Memory {
                requested: desired,
                cap: self.max_memory,
            });
            wasmtime::bail!("memory cap of {} bytes reached", self.max_memory);
        }
        if let Some((gauge, mine)) = &mut self.gauge {
            let grown = desired.saturating_sub(current) as u64;
            gauge.fetch_add(grown, std::sync::atomic::Ordering::Relaxed);
            *mine += grown;
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_table {
            self.hit = Some(LimitHit::Table {
                requested: desired,
                cap: self.max_table,
            });
            wasmtime::bail!("table cap of {} elements reached", self.max_table);
        }
        Ok(true)
    }
}

/// Clocks for a guest that was not granted any: always zero, so a guest cannot time anything
/// (no timing side channels, no nondeterminism from the wall clock).
struct ZeroClock;

impl HostWallClock for ZeroClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl HostMonotonicClock for ZeroClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

/// Why a running call was stopped from outside the guest's own code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interruption {
    /// The call ran past the CPU deadline.
    Deadline,
    /// The job was cancelled (a sibling failed, or the user stopped it).
    Cancelled,
}

/// The budget of the call in progress, kept in epoch ticks: the epoch callback spends one tick
/// each time the engine's epoch advances, and checks the job's cancel flag, so a call stops
/// within a tick of its deadline or of a cancellation.
pub struct CallClock {
    /// Ticks a call may run.
    pub deadline_ticks: u64,
    /// Ticks the call in progress has left.
    pub ticks_left: u64,
    /// Length of one tick.
    pub tick: Duration,
    /// The job's cancel flag; `None` for an operator outside a job (tests, benchmarks).
    pub cancel: Option<Arc<AtomicBool>>,
    /// Set by the epoch callback just before it stops the call.
    pub interrupted: Option<Interruption>,
    /// What the guest's waits in the host cost (epoch ticks that pass meanwhile go unseen).
    pub waits: Arc<WaitLedger>,
}

impl CallClock {
    /// A fresh budget for the next call.
    #[inline]
    pub fn start_call(&mut self) {
        self.ticks_left = self.deadline_ticks;
        self.interrupted = None;
        self.waits.reset();
    }

    /// Whether the job was cancelled: the call must stop.
    pub fn cancelled(&self) -> bool {
        self.cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Relaxed))
    }

    /// What is left of the current call's deadline.
    pub fn remaining(&self) -> Duration {
        self.tick
            .saturating_mul(u32::try_from(self.ticks_left).unwrap_or(u32::MAX))
            .saturating_sub(self.waits.pending())
    }
}

/// The `T` of an operator instance's `Store<T>`.
pub struct OperatorStore {
    wasi: WasiCtx,
    table: ResourceTable,
    pub limiter: GuestLimiter,
    pub limits: Arc<Limits>,
    pub log: Arc<GuestLog>,
    /// The operator's keyed state, timers, watermark and output, lent by the stream operator
    /// for the call in progress (an empty context between calls).
    pub ctx: FunctionContext,
    pub clock: CallClock,
    /// Whether the guest may read real clocks (and so wait on them).
    pub clocks_granted: bool,
    /// Set by the panic hook of SDK guests just before they trap.
    pub panic_message: Option<String>,
    /// Set when the guest broke the host contract, just before the import traps.
    pub violation: Option<String>,
    /// Set when keyed state passed its byte limit, just before the import traps.
    pub state_limit: Option<String>,
    /// A failure further down the chain, raised while this guest was emitting; it travels back
    /// as a trap of this guest and is reported as itself.
    pub downstream: Option<StreamError>,
}

impl OperatorStore {
    pub fn new(
        limits: Arc<Limits>,
        capabilities: Capabilities,
        log: Arc<GuestLog>,
        clock: CallClock,
        memory_gauge: Option<Arc<std::sync::atomic::AtomicU64>>,
        random_seed: u64,
    ) -> Self {
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(GuestStdio::stdout(log.clone()))
            .stderr(GuestStdio::stderr(log.clone()))
            .allow_ip_name_lookup(false)
            .allow_tcp(false)
            .allow_udp(false);
        if !capabilities.clocks {
            wasi.wall_clock(ZeroClock).monotonic_clock(ZeroClock);
        }
        if !capabilities.random {
            use rand::SeedableRng;
            // Both of WASI's generators and the seed a guest asks for follow from the one seed,
            // so an attempt that replays records draws what the failed one drew.
            const INSECURE: u64 = 0x9e37_79b9_7f4a_7c15;
            wasi.secure_random(rand::rngs::StdRng::seed_from_u64(random_seed))
                .insecure_random(rand::rngs::StdRng::seed_from_u64(random_seed ^ INSECURE))
                .insecure_random_seed(u128::from(random_seed) << 64 | u128::from(INSECURE));
        }
        OperatorStore {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            limiter: GuestLimiter {
                max_memory: limits.max_memory_bytes,
                max_table: limits.max_table_elements,
                hit: None,
                gauge: memory_gauge.map(|g| (g, 0)),
            },
            limits,
            log,
            ctx: FunctionContext::empty(),
            clock,
            clocks_granted: capabilities.clocks,
            panic_message: None,
            violation: None,
            state_limit: None,
            downstream: None,
        }
    }

    /// Records a contract violation and returns the trap that reports it.
    pub fn violate(&mut self, message: String) -> wasmtime::Error {
        let err = wasmtime::format_err!("{message}");
        self.violation = Some(message);
        err
    }
}

impl WasiView for OperatorStore {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

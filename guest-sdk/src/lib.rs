//! The weir SDK: write stream operators in Rust and export them from a WebAssembly component.
//!
//! An operator is per-record code: a closure given to [`map`], [`filter`], [`flat_map`],
//! [`key_by`], or a [`ProcessFunction`] with keyed [`ValueState`] and [`MapState`] and timers.
//! [`export_operators!`] exports any number of them by name from one component; the job manifest
//! picks one by name for each operator of a job. The SDK implements both the per-record and the
//! batched exports of the `weir:stream` world from the same code, and the host uses the batched
//! one.
//!
//! ```
//! use weir_sdk::prelude::*;
//!
//! weir_sdk::export_operators! {
//!     "double" => map(|x: u64| x * 2),
//!     "positive" => filter(|x: &i64| *x > 0),
//! }
//! # fn main() {}
//! ```
//!
//! Operators are unit-tested natively with [`testing::Harness`], without wasm.
//!
//! Build the crate as a `cdylib` for `wasm32-wasip2`; the result is the component a job names.

extern crate self as weir_sdk;

pub mod bindings;
mod cache;
mod co_process;
pub mod codec;
mod export;
mod functions;
pub mod host;
pub mod join;
mod keyed_map;
mod operator;
pub mod plan;
mod process;
mod reduce;
mod slot_index;
pub mod state;
pub mod testing;
pub mod window;

pub use co_process::{CoProcess, CoProcessFunction, co_process, keyed_co_process};
pub use functions::{
    Emitter, Filter, FlatMap, KeyBy, Map, TryMap, filter, flat_map, key_by, map, try_map,
};
pub use keyed_map::KeyedMap;
pub use operator::{
    BatchFailure, BatchHost, Context, OpenContext, Operator, OperatorError, OperatorInfo,
};
pub use process::{Process, ProcessContext, ProcessFunction, keyed_process, process};
pub use reduce::{Reduce, reduce};
pub use state::{MapState, ValueState};
pub use weir_framing::{BatchWriter, OwnedRecord, Record};

/// The SDK's version, as it is reported to the host's logs when an operator opens.
pub const SDK_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Everything an operator crate usually needs.
pub mod prelude {
    pub use crate::codec::{Bincode, BincodeFixed, Bytes, Codec, Fixed, Json, Ordered, Text};
    pub use crate::host::{Level, TimeDomain};
    pub use crate::join::{interval_join, window_join};
    pub use crate::window::{AggregateFunction, Collecting, Reducing, TimeWindow, Windows, window};
    pub use crate::{
        CoProcessFunction, Context, Emitter, MapState, OpenContext, Operator, OperatorError,
        OperatorInfo, ProcessContext, ProcessFunction, Record, ValueState, co_process, filter,
        flat_map, key_by, keyed_co_process, keyed_process, map, process, reduce, try_map,
    };
}

#[doc(hidden)]
pub mod __private {
    pub use crate::export::{Component, Registry};
    pub use wit_bindgen;
}

/// Exports operators by name from this component.
///
/// Each entry is `"name" => expression`, where the expression builds a fresh operator (anything
/// implementing [`Operator`]); it is evaluated once per operator instance. A job refers to the
/// operator by the name; opening a name the component does not export fails with an error that
/// lists the names it does export.
///
/// ```
/// use weir_sdk::prelude::*;
/// weir_sdk::export_operators! {
///     "lowercase" => map(|s: String| s.to_lowercase()).input(Text).output(Text),
/// }
/// # fn main() {}
/// ```
///
/// A component that is a whole job names its plan first (see [`plan`]); `weir run job.wasm`
/// then runs the component alone:
///
/// ```
/// use weir_sdk::prelude::*;
/// use weir_sdk::plan::{Args, Job, PlanError, Sink, Source};
///
/// fn plan(args: &Args) -> Result<Job, PlanError> {
///     let job = Job::new("lowercase");
///     job.source("lines", Source::file(args.get("input")))
///         .operator("lowercase")
///         .sink("out", Sink::file(args.get("output")));
///     Ok(job)
/// }
///
/// weir_sdk::export_operators! {
///     plan = plan;
///     "lowercase" => map(|s: String| s.to_lowercase()).input(Text).output(Text),
/// }
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! export_operators {
    (plan = $plan:path; $($name:literal => $factory:expr),+ $(,)?) => {
        $crate::export_operators!(@registry [$plan] $($name => $factory),+);
    };
    ($($name:literal => $factory:expr),+ $(,)?) => {
        $crate::export_operators!(@registry [] $($name => $factory),+);
    };
    (@registry [$($plan:path)?] $($name:literal => $factory:expr),+) => {
        #[doc(hidden)]
        pub struct __WeirOperators;

        impl $crate::__private::Registry for __WeirOperators {
            const NAMES: &'static [&'static str] = &[$($name),+];
            fn create(
                name: &str,
            ) -> ::core::option::Option<::std::boxed::Box<dyn $crate::Operator>> {
                match name {
                    $($name => ::core::option::Option::Some(::std::boxed::Box::new($factory)),)+
                    _ => ::core::option::Option::None,
                }
            }
            fn plan(
                args: &$crate::plan::Args,
            ) -> ::core::option::Option<
                ::core::result::Result<$crate::plan::Job, $crate::plan::PlanError>,
            > {
                let _ = args;
                $(return ::core::option::Option::Some($plan(args));)?
                #[allow(unreachable_code)]
                ::core::option::Option::None
            }
        }

        // Exported only in the component: native builds (tests with the harness) have no
        // use for the symbols, and native linkers reject their `:` and `@` in names.
        #[doc(hidden)]
        #[cfg(target_arch = "wasm32")]
        type __WeirComponent = $crate::__private::Component<__WeirOperators>;
        #[cfg(target_arch = "wasm32")]
        $crate::bindings::__export_job!(__WeirComponent with_types_in $crate::bindings);
    };
}

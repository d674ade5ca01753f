//! Typed failures of loading a component and of running an operator. Each names the component,
//! and for a running operator the operator and subtask, so an error reaches its reader with
//! enough context to act on.

use std::time::Duration;

use crate::stream::{FailureClass, OperatorIdentity, StreamError};

/// A component could not be loaded as a weir operator component.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read component `{component}`: {error}")]
    Read {
        component: String,
        error: std::io::Error,
    },
    /// The bytes are not a wasm component at all.
    #[error("`{component}` is not a wasm component: {reason}")]
    NotAComponent { component: String, reason: String },
    /// A valid component, but of another world.
    #[error(
        "`{component}` is not a weir operator: it does not export `weir:stream/operator@{expected}` \
         (its exports: {exports})"
    )]
    WrongWorld {
        component: String,
        expected: &'static str,
        exports: String,
    },
    /// A weir operator built against a WIT version this host does not implement.
    #[error(
        "`{component}` was built for weir:stream@{found}, but this host implements weir:stream@{expected}"
    )]
    WrongVersion {
        component: String,
        found: String,
        expected: &'static str,
    },
    /// The component imports something the host does not provide.
    #[error("`{component}` imports `{import}`, which weir does not provide{hint}: {reason}")]
    UnsupportedImport {
        component: String,
        /// The import, as the linker named it.
        import: String,
        /// What to do about it, for imports known to come from a build flag.
        hint: String,
        reason: String,
    },
    /// Cranelift refused the component.
    #[error("cannot compile `{component}`: {reason}")]
    Compile { component: String, reason: String },
    /// The wasm engine could not be set up.
    #[error("cannot set up the wasm engine: {0}")]
    Engine(String),
}

impl LoadError {
    /// The error of linking `component` when the linker refused it with `reason`.
    pub(crate) fn unsupported_import(component: &str, reason: String) -> LoadError {
        // The linker names the import in backquotes: "component imports instance `x`, ...".
        let import = reason.split('`').nth(1).unwrap_or("an import").to_string();
        let hint = if import.starts_with("wasi:http/") {
            " (componentize-js adds it unless built with `-d http fetch-event`, as `weir build \
             --language js` does; operators get no network)"
        } else if import.starts_with("wasi:sockets/") {
            " (operators get no network)"
        } else if import.starts_with("weir:stream/") {
            " (the component was built for a newer weir:stream than this host implements)"
        } else {
            ""
        };
        LoadError::UnsupportedImport {
            component: component.to_string(),
            import,
            hint: hint.to_string(),
            reason,
        }
    }
}

/// An operator instance failed. The instance is unusable afterwards; other instances, of this
/// job or any other, are unaffected.
#[derive(Debug, thiserror::Error)]
#[error("operator `{operator}` (subtask {subtask}) of component `{component}` {kind}")]
pub struct OperatorFailure {
    /// The component file name.
    pub component: String,
    /// The operator name from the job.
    pub operator: String,
    /// The subtask index.
    pub subtask: u32,
    /// What went wrong.
    pub kind: FailureKind,
}

/// The ways an operator instance fails.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FailureKind {
    /// `open` named an operator the component does not export.
    #[error(
        "names operator `{requested}`, which the component does not export (it exports {available})"
    )]
    UnknownOperator {
        requested: String,
        available: String,
    },
    /// One call ran past the CPU deadline.
    #[error("ran past its CPU deadline of {0:?} in one call")]
    DeadlineExceeded(Duration),
    /// The guest tried to grow its linear memory over the cap.
    #[error("tried to grow its memory to {requested} bytes, over its cap of {cap} bytes")]
    MemoryCap { requested: usize, cap: usize },
    /// The guest tried to grow a table over the cap.
    #[error("tried to grow a table to {requested} elements, over its cap of {cap}")]
    TableCap { requested: usize, cap: usize },
    /// The guest was waiting (a sleep or a timed poll) when its call ran out of time.
    #[error(
        "ran past its CPU deadline of {deadline:?} in one call while blocked in {wait}; waits are \
         cut short at the call's deadline"
    )]
    BlockedPastDeadline { deadline: Duration, wait: String },
    /// The job was cancelled while the guest was running; the call was stopped.
    #[error("was stopped because the job was cancelled")]
    Cancelled,
    /// The guest accessed linear memory out of bounds.
    #[error(
        "accessed memory out of bounds; most likely its stack overflowed (wasm guests keep their \
         stack in linear memory, so unbounded recursion shows as an out-of-bounds access)"
    )]
    OutOfBoundsMemory,
    /// The guest's call stack overflowed.
    #[error("overflowed its call stack (unbounded recursion?)")]
    StackOverflow,
    /// The guest panicked; the message is the panic's.
    #[error("panicked: {0}")]
    Panic(String),
    /// The guest wrote more to stdout, stderr and its log than allowed.
    #[error("wrote more than its cap of {cap} bytes to stdout, stderr and its log")]
    OutputCap { cap: usize },
    /// Any other trap.
    #[error("trapped: {0}")]
    Trap(String),
    /// The guest could not decode an input record.
    #[error("could not decode input record {index} ({preview}): {message}")]
    Decode {
        index: u32,
        message: String,
        preview: String,
    },
    /// The guest rejected its configuration.
    #[error("rejected its configuration: {0}")]
    Config(String),
    /// The guest reported a state failure (restoring its own state, or keyed state).
    #[error("failed on its state: {0}")]
    State(String),
    /// The guest's code reported a failure.
    #[error("failed: {0}")]
    Failed(String),
    /// The guest broke the host contract (bad state handle, oversized record, malformed output).
    #[error("broke the host contract: {0}")]
    Violation(String),
    /// Instantiation failed.
    #[error("could not be instantiated: {0}")]
    Instantiate(String),
    /// An earlier failure left this instance unusable.
    #[error("was called after it had failed")]
    AlreadyFailed,
}

impl FailureKind {
    /// Who is to blame: the guest for everything it did, the runtime for an instance it could
    /// not create.
    pub fn class(&self) -> FailureClass {
        match self {
            FailureKind::Instantiate(_) => FailureClass::Internal,
            _ => FailureClass::User,
        }
    }
}

/// A wasm operator's failure, as the operator contract carries it: the identity and class as
/// data, this failure (with its component and kind) as the error a caller may downcast to.
impl From<OperatorFailure> for StreamError {
    fn from(failure: OperatorFailure) -> Self {
        StreamError::Operator {
            identity: OperatorIdentity {
                operator: failure.operator.clone(),
                subtask: failure.subtask,
            },
            class: failure.kind.class(),
            failure: Box::new(failure),
        }
    }
}

/// A short, printable preview of a record value for error messages: valid UTF-8 is quoted, other
/// bytes shown in hex; both cut at 48 bytes.
pub(crate) fn preview(value: &[u8]) -> String {
    const MAX: usize = 48;
    let cut = &value[..value.len().min(MAX)];
    let more = if value.len() > MAX { "..." } else { "" };
    match std::str::from_utf8(cut) {
        Ok(text) => format!("{text:?}{more}, {} bytes", value.len()),
        Err(_) => {
            let hex: String = cut.iter().map(|b| format!("{b:02x}")).collect();
            format!("0x{hex}{more}, {} bytes", value.len())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unsupported_import_is_named_with_what_to_do_about_it() {
        let reason = "component imports instance `wasi:http/types@0.2.10`, but a matching \
                      implementation was not found in the linker: instance export `fields` has \
                      the wrong type: resource implementation is missing";
        let err = LoadError::unsupported_import("op.wasm", reason.into()).to_string();
        assert!(
            err.starts_with(
                "`op.wasm` imports `wasi:http/types@0.2.10`, which weir does not provide \
                 (componentize-js adds it unless built with `-d http fetch-event`"
            ),
            "{err}"
        );
        let err = LoadError::unsupported_import("op.wasm", "no backquotes".into()).to_string();
        assert!(err.starts_with("`op.wasm` imports `an import`"), "{err}");
    }
}

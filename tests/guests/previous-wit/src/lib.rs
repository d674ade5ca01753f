//! An operator built against `weir:stream@0.2.1` (its WIT frozen beside this crate), before the
//! `two-input` export: the host must still load and run it. `upper` upper-cases text records,
//! one call per record.
// Natively (workspace tests) nothing is exported, so nothing is used.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

wit_bindgen::generate!({
    path: "wit",
    world: "streaming-operator",
});

use exports::weir::stream::operator::Guest;
use weir::stream::{output, types};

struct Upper;

impl Guest for Upper {
    fn open(context: types::Context) -> Result<(), types::OperatorError> {
        match context.operator_name.as_str() {
            "upper" => Ok(()),
            _ => Err(types::OperatorError::UnknownOperator("upper".into())),
        }
    }

    fn process_element(
        value: Vec<u8>,
        key: Option<Vec<u8>>,
        timestamp: Option<i64>,
    ) -> Result<(), types::OperatorError> {
        output::emit(&value.to_ascii_uppercase(), key.as_deref(), timestamp);
        Ok(())
    }

    fn on_watermark(_: i64) -> Result<(), types::OperatorError> {
        Ok(())
    }

    fn on_timer(_: types::TimeDomain, _: Vec<u8>, _: i64) -> Result<(), types::OperatorError> {
        Ok(())
    }

    fn snapshot_state() -> Result<Vec<u8>, types::OperatorError> {
        Ok(Vec::new())
    }

    fn restore_state(_: Vec<u8>) -> Result<(), types::OperatorError> {
        Ok(())
    }

    fn close() -> Result<(), types::OperatorError> {
        Ok(())
    }
}

// Native builds of the workspace link no component exports.
#[cfg(target_arch = "wasm32")]
export!(Upper);

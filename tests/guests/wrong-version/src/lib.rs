//! A component built against a future `weir:stream@0.3.0`: the host must name the version it
//! found and the one it supports.
// Natively (workspace tests) nothing is exported, so nothing is used.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

wit_bindgen::generate!({
    inline: "
        package weir:%stream@0.3.0;
        interface operator {
            open: func(name: string) -> result<_, string>;
        }
        world streaming-operator {
            export operator;
        }
    ",
});

struct Future;

impl exports::weir::stream::operator::Guest for Future {
    fn open(_name: String) -> Result<(), String> {
        Ok(())
    }
}

// Native builds of the workspace link no component exports.
#[cfg(target_arch = "wasm32")]
export!(Future);

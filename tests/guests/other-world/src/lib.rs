//! A valid component of a world that is not weir's: the host must refuse it by name.
// Natively (workspace tests) nothing is exported, so nothing is used.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

wit_bindgen::generate!({
    inline: "
        package test:other;
        world calculator {
            export add: func(a: u32, b: u32) -> u32;
        }
    ",
});

struct Calculator;

impl Guest for Calculator {
    fn add(a: u32, b: u32) -> u32 {
        a.wrapping_add(b)
    }
}

// Native builds of the workspace link no component exports.
#[cfg(target_arch = "wasm32")]
export!(Calculator);

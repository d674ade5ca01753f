//! The only `bindgen!` of the host: Rust types and traits for the `weir:stream` world.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "job",
    imports: { default: trappable },
});

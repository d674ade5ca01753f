//! Bindings generated from `wit/weir.wit`. Operator crates never use them directly: the
//! [`export_operators!`](crate::export_operators) macro wires them to the SDK.

wit_bindgen::generate!({
    path: "../wit",
    world: "job",
    pub_export_macro: true,
    export_macro_name: "__export_job",
    runtime_path: "::weir_sdk::__private::wit_bindgen::rt",
});

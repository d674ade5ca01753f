//! The job model: a TOML manifest, checked and turned into a job graph of chained vertices,
//! before anything starts (Flink's JobGraph and chaining). Knows nothing of wasm or threads.

mod connector_options;
pub mod connectors;
mod graph;
mod manifest;
pub mod package;
mod plan;
pub mod units;

pub use connectors::Secret;
pub use graph::{
    ChainedOperator, Edge, Grants, JobGraph, JobLimits, JobVertex, OperatorImpl, Partitioning,
    SinkSpec, SourceSpec, VertexInput, VertexOutput, VertexWatermarks, WatermarkStrategy,
};
pub use manifest::{JobError, Manifest, load_manifest, parse_manifest};
pub use plan::manifest_from_plan;

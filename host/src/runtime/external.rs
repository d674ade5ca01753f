//! Opening the connectors to external systems (each behind a cargo feature): a build without
//! a connector's feature still knows its kind, and says which feature it lacks.

use std::sync::Arc;

use crate::connectors::{SourceError, SourceReader};
use crate::job::{SinkSpec, SourceSpec};
use crate::metrics::TaskMetrics;
use crate::stream::{Output, StreamError};

/// Which subtask of which sink of which job opens, and the first checkpoint it will take
/// (`None`: no checkpoints). A build without every connector reads only some of it.
#[cfg_attr(
    not(all(feature = "postgres", feature = "kafka", feature = "nats")),
    allow(dead_code)
)]
pub(super) struct ExternalSink<'a> {
    pub job_name: &'a str,
    pub id: &'a str,
    pub subtask: u32,
    pub parallelism: u32,
    pub epoch: Option<u64>,
}

/// A PostgreSQL, Kafka or NATS sink.
pub(super) fn open_external_sink(
    spec: &SinkSpec,
    at: &ExternalSink<'_>,
    metrics: &Arc<TaskMetrics>,
) -> Result<Box<dyn Output>, StreamError> {
    let without = |feature: &str| {
        StreamError::Output(format!(
            "sink `{}`: this weir was built without the `{feature}` feature",
            at.id
        ))
    };
    let _ = (&without, metrics);
    match spec {
        #[cfg(feature = "postgres")]
        SinkSpec::Postgres(spec) => Ok(Box::new(crate::connectors::postgres::PostgresSink::open(
            spec,
            at.job_name,
            at.id,
            at.subtask,
            at.epoch,
            metrics.clone(),
        )?)),
        #[cfg(feature = "kafka")]
        SinkSpec::Kafka(spec) => Ok(Box::new(crate::connectors::kafka::KafkaSink::open(
            spec,
            at.job_name,
            at.id,
            at.subtask,
            at.parallelism,
            at.epoch,
            metrics.clone(),
        )?)),
        #[cfg(feature = "nats")]
        SinkSpec::Nats(spec) => Ok(Box::new(crate::connectors::nats::NatsSink::open(
            spec,
            at.job_name,
            at.id,
            at.subtask,
            at.parallelism,
            at.epoch.is_some(),
            metrics.clone(),
        )?)),
        #[cfg(not(feature = "postgres"))]
        SinkSpec::Postgres(_) => Err(without("postgres")),
        #[cfg(not(feature = "kafka"))]
        SinkSpec::Kafka(_) => Err(without("kafka")),
        #[cfg(not(feature = "nats"))]
        SinkSpec::Nats(_) => Err(without("nats")),
        SinkSpec::File { .. } | SinkSpec::Stdout | SinkSpec::Discard => Err(StreamError::Output(
            format!("sink `{}` is not an external one", at.id),
        )),
    }
}

/// A Kafka or NATS source.
pub(super) fn open_external_source(
    spec: &SourceSpec,
    remaining: Option<Vec<(u64, u64)>>,
    subtask: u32,
    parallelism: u32,
    checkpointing: bool,
) -> Result<Box<dyn SourceReader>, SourceError> {
    let without = |what: String, feature: &str| SourceError::External {
        what,
        message: format!("this weir was built without the `{feature}` feature"),
    };
    let _ = (&without, &remaining, subtask, parallelism, checkpointing);
    match spec {
        #[cfg(feature = "kafka")]
        SourceSpec::Kafka(spec) => Ok(Box::new(crate::connectors::kafka::KafkaSource::open(
            spec,
            remaining,
            subtask,
            parallelism,
        )?)),
        #[cfg(feature = "nats")]
        SourceSpec::Nats(spec) => Ok(Box::new(crate::connectors::nats::NatsSource::open(
            spec,
            remaining,
            checkpointing,
        )?)),
        #[cfg(not(feature = "kafka"))]
        SourceSpec::Kafka(spec) => Err(without(format!("kafka topic `{}`", spec.topic), "kafka")),
        #[cfg(not(feature = "nats"))]
        SourceSpec::Nats(spec) => Err(without(format!("nats stream `{}`", spec.stream), "nats")),
        other => Err(SourceError::External {
            what: format!("{other:?}"),
            message: "not an external source".into(),
        }),
    }
}

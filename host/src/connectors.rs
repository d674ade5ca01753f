//! Sources and sinks. A source reads its share of the input (its split) in framed batches; a
//! sink is the tail output of a chain.

pub mod external;
pub mod kafka;
pub mod nats;
pub mod nexmark;
pub mod postgres;
mod sink;
pub(crate) mod source;

pub use sink::{
    DiscardSink, FileSink, StdoutSink, TransactionalFileSink, committed_parts, create_output_dir,
    recover_transactional_dir,
};
pub use source::{
    FileSource, SequenceSource, SourceError, SourceReader, initial_split, redistribute,
};

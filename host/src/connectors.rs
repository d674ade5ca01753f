//! Sources and sinks. A source reads its share of the input (its split) in framed batches; a
//! sink is the tail output of a chain.

mod sink;
mod source;

pub use sink::{FileSink, StdoutSink};
pub use source::{FileSource, SequenceSource, SourceError, SourceReader};

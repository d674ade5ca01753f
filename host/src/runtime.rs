//! The task side of the runtime: the operator chain and the outputs it writes to.

mod chain;
mod output;

pub use chain::{ChainSpec, OperatorChain};
pub use output::{ChainError, CollectedOutput, CollectingOutput, DiscardOutput, Output};

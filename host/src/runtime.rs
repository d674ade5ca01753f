//! The task side of the runtime: the TaskExecutor and its slots, tasks and their mailbox loop,
//! the input processor, and the operator chain with the outputs it writes to.

mod chain;
pub mod deployment;
mod external;
mod input;
pub mod job_log;
mod output;
mod stream_operator;
mod submit;
mod task;
pub mod task_executor;
mod watermarks;

pub use chain::{ChainLink, ChainSpec, NativeOperators, OperatorChain};
pub use input::{InputProcessor, InputStatus};
pub use output::{CollectedOutput, CollectingOutput, NetworkOutput};
pub use stream_operator::{RestoreStateError, StreamOperator, WasmOperator};
pub use submit::{JobConnection, JobMasterConnection, SubmitError};
pub use task::{Mail, Mailbox, Task, TaskCheckpointing, TaskFailure, TaskInput};
pub use watermarks::{SplitCursor, WatermarkGenerator, WatermarkStrategy};

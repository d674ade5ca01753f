//! The raw operator interface that every typed function in this SDK compiles down to, and the
//! contexts the host hands it.

use std::str::FromStr;

use weir_framing::{BatchWriter, Record};

use crate::cache::CachedHost;
use crate::codec::{Codec, SMALL_ENCODING};
use crate::host::{HostApi, Level, StateKind, TimeDomain};
use crate::state::{MapState, ValueState};

/// Why an operator call failed. Returning one fails the subtask with this reason; the job's
/// restart strategy decides what follows.
///
/// ```
/// use weir_sdk::OperatorError;
/// let err = OperatorError::Config("missing key `factor`".into());
/// assert_eq!(err.to_string(), "bad configuration: missing key `factor`");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OperatorError {
    /// An input record could not be decoded; the SDK adds the record's position.
    Decode(String),
    /// The configuration is missing a key or holds an unusable value.
    Config(String),
    /// State could not be read: the operator's own saved state, or a keyed state value that
    /// does not decode.
    State(String),
    /// Anything else the operator's code reports.
    Failed(String),
}

impl std::fmt::Display for OperatorError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OperatorError::Decode(m) => write!(f, "cannot decode record: {m}"),
            OperatorError::Config(m) => write!(f, "bad configuration: {m}"),
            OperatorError::State(m) => write!(f, "state error: {m}"),
            OperatorError::Failed(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for OperatorError {}

/// Who this operator instance is: the `context` of `open`.
///
/// ```
/// use weir_sdk::OperatorInfo;
/// let info = OperatorInfo::new("scale").with_config("factor", "3");
/// assert_eq!(info.config("factor"), Some("3"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorInfo {
    /// The operator name from the job.
    pub name: String,
    /// Index of this parallel instance.
    pub subtask_index: u32,
    /// Number of parallel instances.
    pub parallelism: u32,
    /// Number of key groups of the job.
    pub max_parallelism: u32,
    /// Restart attempt, 0 on the first run.
    pub attempt: u32,
    /// Configuration key/values from the job manifest.
    pub config: Vec<(String, String)>,
}

impl OperatorInfo {
    /// Subtask 0 of 1 with no configuration, as a test would open an operator.
    pub fn new(name: impl Into<String>) -> Self {
        OperatorInfo {
            name: name.into(),
            subtask_index: 0,
            parallelism: 1,
            max_parallelism: 128,
            attempt: 0,
            config: Vec::new(),
        }
    }

    /// Adds a configuration entry.
    pub fn with_config(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.config.push((key.into(), value.into()));
        self
    }

    /// The last value configured for `key`.
    pub fn config(&self, key: &str) -> Option<&str> {
        self.config
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// What `open` gets: the operator's identity and configuration, and the place to declare state.
pub struct OpenContext<'a> {
    pub(crate) info: &'a OperatorInfo,
    pub(crate) host: &'a mut dyn HostApi,
}

impl<'a> OpenContext<'a> {
    /// Builds a context; the export glue and the test harness do this.
    pub fn new(info: &'a OperatorInfo, host: &'a mut dyn HostApi) -> Self {
        OpenContext { info, host }
    }

    /// The instance's identity and configuration.
    pub fn info(&self) -> &OperatorInfo {
        self.info
    }

    /// A configuration value, if set.
    pub fn config(&self, key: &str) -> Option<&str> {
        self.info.config(key)
    }

    /// A configuration value parsed as `T`; a [`OperatorError::Config`] naming the key if it is
    /// missing or does not parse.
    ///
    /// ```
    /// # use weir_sdk::{OperatorInfo, OpenContext, testing::TestHost};
    /// let info = OperatorInfo::new("op").with_config("n", "x");
    /// let mut host = TestHost::default();
    /// let ctx = OpenContext::new(&info, &mut host);
    /// assert!(ctx.parse_config::<u32>("n").is_err());
    /// ```
    pub fn parse_config<T: FromStr>(&self, key: &str) -> Result<T, OperatorError>
    where
        T::Err: std::fmt::Display,
    {
        let raw = self
            .config(key)
            .ok_or_else(|| OperatorError::Config(format!("missing key `{key}`")))?;
        raw.parse()
            .map_err(|e| OperatorError::Config(format!("key `{key}` = `{raw}`: {e}")))
    }

    /// Declares a keyed value state with the default codec.
    pub fn value_state<T>(&mut self, name: &str) -> ValueState<T> {
        ValueState::new(self.host.declare_state(name, StateKind::Value))
    }

    /// Declares a keyed map state with the default codec.
    pub fn map_state<K, V>(&mut self, name: &str) -> MapState<K, V> {
        MapState::new(self.host.declare_state(name, StateKind::Map))
    }

    /// Writes to the task's log.
    pub fn log(&mut self, level: Level, message: &str) {
        self.host.log(level, message)
    }
}

/// Bytes of output one call gathers before it hands them to the host (`output.emit-batch`).
/// A quarter of a mebibyte: large enough that a flush is rare next to the records it carries,
/// small enough that a flat_map emitting millions of records per input stays far inside a
/// guest's memory cap.
pub const OUTPUT_FLUSH_BYTES: usize = 256 << 10;

/// What an operator gets while handling a record or timer: the host, where its output goes, and
/// the key and timestamp of what it is handling.
pub struct Context<'a> {
    pub(crate) host: HostRef<'a>,
    pub(crate) out: &'a mut BatchWriter,
    pub(crate) key: Option<&'a [u8]>,
    pub(crate) timestamp: Option<i64>,
    /// The record being handled and its framed bytes if it stands alone, so emitting it
    /// unchanged is one copy.
    current: Option<(Record<'a>, Option<&'a [u8]>)>,
}

/// Where a context's host calls go. Inside a component that is the guest-side state cache,
/// called directly so the per-record state accesses inline; anywhere else (the test harness)
/// any [`HostApi`], through its vtable.
pub(crate) enum HostRef<'a> {
    Cached(&'a mut CachedHost),
    Dyn(&'a mut dyn HostApi),
}

impl HostRef<'_> {
    #[inline(always)]
    pub(crate) fn api(&mut self) -> &mut dyn HostApi {
        match self {
            HostRef::Cached(cache) => *cache,
            HostRef::Dyn(host) => *host,
        }
    }

    #[inline(always)]
    pub(crate) fn reborrow(&mut self) -> HostRef<'_> {
        match self {
            HostRef::Cached(cache) => HostRef::Cached(cache),
            HostRef::Dyn(host) => HostRef::Dyn(*host),
        }
    }
}

/// The host a batch is handled against; see [`Operator::process_batch`].
pub struct BatchHost<'a>(pub(crate) HostRef<'a>);

impl<'a> BatchHost<'a> {
    /// Handles a batch against `host` (the test harness does this).
    pub fn new(host: &'a mut dyn HostApi) -> Self {
        BatchHost(HostRef::Dyn(host))
    }
}

impl<'a> Context<'a> {
    /// Builds a context; the export glue and the test harness do this.
    #[inline(always)]
    pub fn new(
        host: &'a mut dyn HostApi,
        out: &'a mut BatchWriter,
        key: Option<&'a [u8]>,
        timestamp: Option<i64>,
    ) -> Self {
        Context {
            host: HostRef::Dyn(host),
            out,
            key,
            timestamp,
            current: None,
        }
    }

    #[inline(always)]
    pub(crate) fn with_host(
        host: HostRef<'a>,
        out: &'a mut BatchWriter,
        key: Option<&'a [u8]>,
        timestamp: Option<i64>,
    ) -> Self {
        Context {
            host,
            out,
            key,
            timestamp,
            current: None,
        }
    }

    /// The host services.
    pub fn host(&mut self) -> &mut dyn HostApi {
        self.host.api()
    }

    /// Key bytes of the record or timer being handled.
    #[inline]
    pub fn key(&self) -> Option<&'a [u8]> {
        self.key
    }

    /// Event time of the record being handled, or the timer's time in `on_timer`.
    #[inline]
    pub fn timestamp(&self) -> Option<i64> {
        self.timestamp
    }

    /// Emits a record as it is.
    #[inline(always)]
    pub fn emit_record(&mut self, record: Record<'_>) {
        // Passing on a lone record being handled (a filter) copies its framed bytes; an entry
        // of a block goes on as an entry of the output's block.
        if let Some((current, Some(framed))) = self.current
            && std::ptr::eq(current.value, record.value)
            && current.timestamp == record.timestamp
            && match (current.key, record.key) {
                (Some(a), Some(b)) => std::ptr::eq(a, b),
                (None, None) => true,
                _ => false,
            }
        {
            self.out.push_framed(framed);
        } else {
            self.out.push(record);
        }
        self.after_emit();
    }

    /// Past [`OUTPUT_FLUSH_BYTES`] of output in one call, hands it to the host, so a call that
    /// fans out to many records holds at most about that much in guest memory.
    #[inline(always)]
    fn after_emit(&mut self) {
        if self.out.len() >= OUTPUT_FLUSH_BYTES {
            self.flush_output();
        }
    }

    #[cold]
    #[inline(never)]
    fn flush_output(&mut self) {
        if self.host.api().emit_batch(self.out.as_bytes()) {
            self.out.clear();
        }
    }

    /// Emits `value`, encoded by `codec` straight into the output, with the given key and
    /// timestamp.
    #[inline(always)]
    pub fn emit_encoded<T, C: Codec<T> + ?Sized>(
        &mut self,
        codec: &C,
        value: &T,
        key: Option<&[u8]>,
        timestamp: Option<i64>,
    ) -> Result<(), OperatorError> {
        encode_into(self.out, codec, value, key, timestamp)?;
        self.after_emit();
        Ok(())
    }

    /// Registers a timer for the current key.
    ///
    /// Returns [`OperatorError::Failed`] outside a keyed context.
    pub fn register_timer(
        &mut self,
        domain: TimeDomain,
        timestamp: i64,
    ) -> Result<(), OperatorError> {
        let key = self.require_key("register a timer")?;
        self.host.api().register_timer(domain, key, timestamp);
        Ok(())
    }

    /// Deletes a timer of the current key.
    pub fn delete_timer(
        &mut self,
        domain: TimeDomain,
        timestamp: i64,
    ) -> Result<(), OperatorError> {
        let key = self.require_key("delete a timer")?;
        self.host.api().delete_timer(domain, key, timestamp);
        Ok(())
    }

    #[inline]
    pub(crate) fn require_key(&self, what: &str) -> Result<&'a [u8], OperatorError> {
        match self.key {
            Some(key) => Ok(key),
            None => Err(no_key(what)),
        }
    }
}

/// Appends `value`, encoded by `codec`, as a record with `key` and `timestamp`.
#[inline(always)]
pub(crate) fn encode_into<T, C: Codec<T> + ?Sized>(
    out: &mut BatchWriter,
    codec: &C,
    value: &T,
    key: Option<&[u8]>,
    timestamp: Option<i64>,
) -> Result<(), OperatorError> {
    let mut small = [0u8; SMALL_ENCODING];
    if let Some(len) = codec
        .encode_small(value, &mut small)
        .filter(|&len| len <= SMALL_ENCODING)
    {
        // Encoded on the stack and appended in one piece, usually as one more entry of the
        // output's block; copies of constant length once the codec is inlined.
        out.push(Record {
            value: &small[..len],
            key,
            timestamp,
        });
        return Ok(());
    }
    let out = out.raw();
    let open = weir_framing::begin_record(out, key, timestamp);
    match codec.encode(value, out) {
        Ok(()) => {
            weir_framing::finish_record(out, open);
            Ok(())
        }
        Err(e) => {
            weir_framing::abandon_record(out, open);
            Err(e)
        }
    }
}

/// The batch loop of operators that need neither the host nor a context (maps, filters):
/// `each` gets every item of `batch` (a lone record or a block) with the index of its first
/// record, and reports a failure with the failing record's index.
#[inline(always)]
pub(crate) fn for_each_item(
    batch: &[u8],
    mut each: impl FnMut(weir_framing::Item<'_>, usize) -> Result<(), BatchFailure>,
) -> Result<(), BatchFailure> {
    let mut items = weir_framing::items(batch);
    let mut record_index = 0;
    for item in &mut items {
        each(item, record_index)?;
        record_index += match item {
            weir_framing::Item::Record(..) => 1,
            weir_framing::Item::Block(block) => block.len(),
        };
    }
    match items.fault() {
        None => Ok(()),
        Some(fault) => Err(malformed_batch(record_index, fault)),
    }
}

/// A block loop's outcome (the index of a failing record counted from the block's start) as
/// the batch's, the block starting at record `first_index`.
#[inline(always)]
pub(crate) fn block_outcome(
    done: Result<(), (usize, OperatorError)>,
    first_index: usize,
) -> Result<(), BatchFailure> {
    done.map_err(|(i, error)| BatchFailure {
        record_index: first_index + i,
        error,
    })
}

/// Runs `each` on every record of `item` (whose first record has index `first_index`), with
/// its framed bytes when it stands alone.
#[inline(always)]
pub(crate) fn for_each_record_of(
    item: weir_framing::Item<'_>,
    first_index: usize,
    mut each: impl FnMut(Record<'_>, Option<&[u8]>) -> Result<(), OperatorError>,
) -> Result<(), BatchFailure> {
    let failed = |i: usize| {
        move |error| BatchFailure {
            record_index: first_index + i,
            error,
        }
    };
    match item {
        weir_framing::Item::Record(record, framed) => each(record, Some(framed)).map_err(failed(0)),
        weir_framing::Item::Block(block) => {
            let mut records = block.records();
            let mut i = 0;
            while let Some((record, _)) = records.next_with_bytes() {
                each(record, None).map_err(failed(i))?;
                i += 1;
            }
            Ok(())
        }
    }
}

/// Runs `f` on every record of a framed batch in order, each with a context over `host` and
/// `out`, and stops at the first failure, naming the record.
#[inline(always)]
fn each_record(
    batch: &[u8],
    host: &mut BatchHost<'_>,
    out: &mut BatchWriter,
    mut f: impl FnMut(Record<'_>, &mut Context<'_>) -> Result<(), OperatorError>,
) -> Result<(), BatchFailure> {
    let mut records = weir_framing::records(batch);
    let mut record_index = 0;
    while let Some((record, framed)) = records.next_with_bytes() {
        let mut ctx = Context::with_host(host.0.reborrow(), out, record.key, record.timestamp);
        ctx.current = Some((record, framed));
        if let Err(error) = f(record, &mut ctx) {
            return Err(BatchFailure {
                record_index,
                error,
            });
        }
        record_index += 1;
    }
    match records.fault() {
        None => Ok(()),
        Some(fault) => Err(malformed_batch(record_index, fault)),
    }
}

#[cold]
fn malformed_batch(record_index: usize, fault: &weir_framing::FramingError) -> BatchFailure {
    BatchFailure {
        record_index,
        error: OperatorError::Failed(format!("the host sent a malformed batch: {fault}")),
    }
}

#[cold]
fn no_key(what: &str) -> OperatorError {
    OperatorError::Failed(format!(
        "cannot {what}: the record has no key (add a key_by before this operator)"
    ))
}

/// Why a batch stopped: the failure and the index of the record that caused it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchFailure {
    /// Index of the failing record in the batch.
    pub record_index: usize,
    /// What went wrong.
    pub error: OperatorError,
}

/// The byte-level operator every typed function of this SDK implements. Implement it directly
/// only when the typed builders do not fit; every method but `process` has a default.
///
/// ```
/// use weir_sdk::{Context, Operator, OperatorError, Record};
/// /// Passes records on unchanged.
/// struct Identity;
/// impl Operator for Identity {
///     fn process(&mut self, record: Record<'_>, ctx: &mut Context<'_>) -> Result<(), OperatorError> {
///         ctx.emit_record(record);
///         Ok(())
///     }
/// }
/// ```
pub trait Operator {
    /// Called once before anything else: declare state, read configuration.
    fn open(&mut self, ctx: &mut OpenContext<'_>) -> Result<(), OperatorError> {
        let _ = ctx;
        Ok(())
    }

    /// Handles one record.
    fn process(&mut self, record: Record<'_>, ctx: &mut Context<'_>) -> Result<(), OperatorError>;

    /// Handles every record of a framed batch in order, appending what they emit to `out`, and
    /// stops at the first failure. The default loops over [`process`](Operator::process); it
    /// exists so the loop is compiled once per operator type with `process` inlined into it:
    /// one dynamic call per batch instead of one per record. Override it only to handle a
    /// batch as a whole.
    fn process_batch(
        &mut self,
        batch: &[u8],
        host: &mut BatchHost<'_>,
        out: &mut BatchWriter,
    ) -> Result<(), BatchFailure> {
        each_record(batch, host, out, |record, ctx| self.process(record, ctx))
    }

    /// Handles one record of the second input, for two-input operators (see
    /// [`co_process`](crate::co_process)). The default refuses: most operators take one input.
    fn process_second(
        &mut self,
        record: Record<'_>,
        ctx: &mut Context<'_>,
    ) -> Result<(), OperatorError> {
        let _ = (record, ctx);
        Err(OperatorError::Failed(
            "this operator takes one input, but the job gives it a second (use a two-input \
             operator such as co_process)"
                .into(),
        ))
    }

    /// [`process_batch`](Operator::process_batch) for the second input.
    fn process_second_batch(
        &mut self,
        batch: &[u8],
        host: &mut BatchHost<'_>,
        out: &mut BatchWriter,
    ) -> Result<(), BatchFailure> {
        each_record(batch, host, out, |record, ctx| {
            self.process_second(record, ctx)
        })
    }

    /// The event-time watermark advanced; due event-time timers have already fired.
    fn on_watermark(&mut self, watermark: i64, ctx: &mut Context<'_>) -> Result<(), OperatorError> {
        let _ = (watermark, ctx);
        Ok(())
    }

    /// A timer registered for `ctx.key()` is due; `ctx.timestamp()` is its time.
    fn on_timer(&mut self, domain: TimeDomain, ctx: &mut Context<'_>) -> Result<(), OperatorError> {
        let _ = (domain, ctx);
        Ok(())
    }

    /// State kept in the operator's own memory, for a checkpoint.
    fn snapshot_state(&mut self) -> Result<Vec<u8>, OperatorError> {
        Ok(Vec::new())
    }

    /// Restores what `snapshot_state` returned, after `open`.
    fn restore_state(&mut self, state: &[u8]) -> Result<(), OperatorError> {
        let _ = state;
        Ok(())
    }

    /// Input has ended; emit what is left.
    fn close(&mut self, ctx: &mut Context<'_>) -> Result<(), OperatorError> {
        let _ = ctx;
        Ok(())
    }
}

impl<O: Operator + ?Sized> Operator for Box<O> {
    fn open(&mut self, ctx: &mut OpenContext<'_>) -> Result<(), OperatorError> {
        (**self).open(ctx)
    }
    fn process(&mut self, record: Record<'_>, ctx: &mut Context<'_>) -> Result<(), OperatorError> {
        (**self).process(record, ctx)
    }
    fn process_batch(
        &mut self,
        batch: &[u8],
        host: &mut BatchHost<'_>,
        out: &mut BatchWriter,
    ) -> Result<(), BatchFailure> {
        (**self).process_batch(batch, host, out)
    }
    fn process_second(
        &mut self,
        record: Record<'_>,
        ctx: &mut Context<'_>,
    ) -> Result<(), OperatorError> {
        (**self).process_second(record, ctx)
    }
    fn process_second_batch(
        &mut self,
        batch: &[u8],
        host: &mut BatchHost<'_>,
        out: &mut BatchWriter,
    ) -> Result<(), BatchFailure> {
        (**self).process_second_batch(batch, host, out)
    }
    fn on_watermark(&mut self, watermark: i64, ctx: &mut Context<'_>) -> Result<(), OperatorError> {
        (**self).on_watermark(watermark, ctx)
    }
    fn on_timer(&mut self, domain: TimeDomain, ctx: &mut Context<'_>) -> Result<(), OperatorError> {
        (**self).on_timer(domain, ctx)
    }
    fn snapshot_state(&mut self) -> Result<Vec<u8>, OperatorError> {
        (**self).snapshot_state()
    }
    fn restore_state(&mut self, state: &[u8]) -> Result<(), OperatorError> {
        (**self).restore_state(state)
    }
    fn close(&mut self, ctx: &mut Context<'_>) -> Result<(), OperatorError> {
        (**self).close(ctx)
    }
}

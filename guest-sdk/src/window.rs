//! Windows over keyed streams (Flink's `WindowOperator`): tumbling, sliding (hop) and session
//! windows by event time or processing time, each window's aggregate kept in host keyed state
//! and fired by host timers, so windows checkpoint and rescale as all keyed state does.
//!
//! A record goes into every window its timestamp falls in; its value is added to the window's
//! accumulator ([`AggregateFunction`]). When the clock passes a window's end the emit function
//! turns the key, the window and the aggregate into output records, stamped with the window's
//! last millisecond. With allowed lateness a window stays after it fired until the watermark
//! passes its end plus the lateness: a late record within that time updates it and fires it
//! again; a record later than that is dropped and counted (or passed to `on_late`). A window's
//! state goes when it can no longer change.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::host::{Level, TimeDomain};
use crate::operator::{OpenContext, OperatorError};
use crate::process::{ProcessContext, ProcessFunction};
use crate::state::{MapState, ValueState};

/// A window of time, `start` inclusive, `end` exclusive, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TimeWindow {
    pub start: i64,
    pub end: i64,
}

impl TimeWindow {
    pub fn new(start: i64, end: i64) -> Self {
        TimeWindow { start, end }
    }

    /// The last millisecond in the window: its timers fire there, and its results carry it.
    pub fn max_timestamp(&self) -> i64 {
        self.end - 1
    }

    fn intersects(&self, other: &TimeWindow) -> bool {
        self.start <= other.end && other.start <= self.end
    }

    fn cover(&self, other: &TimeWindow) -> TimeWindow {
        TimeWindow::new(self.start.min(other.start), self.end.max(other.end))
    }
}

/// Which windows a record belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Windows {
    /// Back-to-back windows of `size`, starting at multiples of `size` (plus `offset`).
    Tumbling { size: i64, offset: i64 },
    /// Windows of `size` starting every `slide` (SQL's HOP): a record is in `size / slide`.
    Sliding { size: i64, slide: i64, offset: i64 },
    /// A window per burst of activity: records closer than `gap` share one.
    Session { gap: i64 },
}

impl Windows {
    /// Tumbling windows of `size_ms`.
    pub fn tumbling(size_ms: i64) -> Self {
        Windows::Tumbling {
            size: size_ms,
            offset: 0,
        }
    }

    /// Windows of `size_ms` starting every `slide_ms`.
    pub fn sliding(size_ms: i64, slide_ms: i64) -> Self {
        Windows::Sliding {
            size: size_ms,
            slide: slide_ms,
            offset: 0,
        }
    }

    /// Session windows closed by `gap_ms` without a record.
    pub fn session(gap_ms: i64) -> Self {
        Windows::Session { gap: gap_ms }
    }

    fn check(&self) -> Result<(), OperatorError> {
        let bad = match *self {
            Windows::Tumbling { size, .. } => size <= 0,
            Windows::Sliding { size, slide, .. } => size <= 0 || slide <= 0,
            Windows::Session { gap } => gap <= 0,
        };
        if bad {
            return Err(OperatorError::Config(format!(
                "{self:?}: window sizes, slides and gaps must be positive"
            )));
        }
        Ok(())
    }

    /// The windows `timestamp` falls in (a session's own window before merging).
    pub fn assign(&self, timestamp: i64, out: &mut Vec<TimeWindow>) {
        out.clear();
        match *self {
            Windows::Tumbling { size, offset } => {
                let start = timestamp - (timestamp - offset).rem_euclid(size);
                out.push(TimeWindow::new(start, start + size));
            }
            Windows::Sliding {
                size,
                slide,
                offset,
            } => {
                let mut start = timestamp - (timestamp - offset).rem_euclid(slide);
                while start > timestamp - size {
                    out.push(TimeWindow::new(start, start + size));
                    start -= slide;
                }
            }
            Windows::Session { gap } => out.push(TimeWindow::new(timestamp, timestamp + gap)),
        }
    }

    /// The window whose timers fire at `timestamp`, for windows that do not merge.
    pub(crate) fn ending_at(&self, max_timestamp: i64) -> Option<TimeWindow> {
        let end = max_timestamp + 1;
        match *self {
            Windows::Tumbling { size, .. } | Windows::Sliding { size, .. } => {
                Some(TimeWindow::new(end - size, end))
            }
            Windows::Session { .. } => None,
        }
    }
}

/// Folds a window's values into an accumulator (Flink's `AggregateFunction`). The accumulator
/// is keyed state, stored with bincode.
pub trait AggregateFunction {
    type In;
    type Acc: Serialize + DeserializeOwned;
    type Out;
    fn create_accumulator(&self) -> Self::Acc;
    fn add(&self, acc: &mut Self::Acc, value: Self::In);
    fn result(&self, acc: Self::Acc) -> Self::Out;
    /// Two accumulators as one, for session windows that merge; `None`: this aggregate cannot
    /// merge (session windows then fail with a clear error).
    fn merge(&self, a: Self::Acc, b: Self::Acc) -> Option<Self::Acc> {
        let _ = (a, b);
        None
    }
}

/// A window's values folded pairwise with `f` (Flink's `ReduceFunction`).
pub struct Reducing<T, F> {
    f: F,
    _values: std::marker::PhantomData<fn(T, T) -> T>,
}

impl<T, F: Fn(T, T) -> T> Reducing<T, F> {
    pub fn new(f: F) -> Self {
        Reducing {
            f,
            _values: std::marker::PhantomData,
        }
    }
}

impl<T, F> AggregateFunction for Reducing<T, F>
where
    T: Serialize + DeserializeOwned + Clone,
    F: Fn(T, T) -> T,
{
    type In = T;
    type Acc = Option<T>;
    type Out = T;
    fn create_accumulator(&self) -> Option<T> {
        None
    }
    fn add(&self, acc: &mut Option<T>, value: T) {
        *acc = Some(match acc.take() {
            Some(a) => (self.f)(a, value),
            None => value,
        });
    }
    fn result(&self, acc: Option<T>) -> T {
        // A window exists only once a value was added.
        acc.expect("a window holds at least one value")
    }
    fn merge(&self, a: Option<T>, b: Option<T>) -> Option<Option<T>> {
        Some(match (a, b) {
            (Some(a), Some(b)) => Some((self.f)(a, b)),
            (a, b) => a.or(b),
        })
    }
}

/// Every value of a window, in arrival order (for emit functions that need them all, as Flink's
/// `ProcessWindowFunction` over the window's elements).
pub struct Collecting<T>(std::marker::PhantomData<fn(T)>);

impl<T> Default for Collecting<T> {
    fn default() -> Self {
        Collecting(std::marker::PhantomData)
    }
}

impl<T: Serialize + DeserializeOwned> AggregateFunction for Collecting<T> {
    type In = T;
    type Acc = Vec<T>;
    type Out = Vec<T>;
    fn create_accumulator(&self) -> Vec<T> {
        Vec::new()
    }
    fn add(&self, acc: &mut Vec<T>, value: T) {
        acc.push(value);
    }
    fn result(&self, acc: Vec<T>) -> Vec<T> {
        acc
    }
    fn merge(&self, mut a: Vec<T>, b: Vec<T>) -> Option<Vec<T>> {
        a.extend(b);
        Some(a)
    }
}

type LateHandler<I, O> = Box<dyn FnMut(I) -> Option<O>>;

/// A window operator: a [`ProcessFunction`] for [`keyed_process`](crate::keyed_process).
/// Built by [`window`].
pub struct Window<A: AggregateFunction, E, O> {
    windows: Windows,
    domain: TimeDomain,
    allowed_lateness: i64,
    aggregate: A,
    emit: E,
    on_late: Option<LateHandler<A::In, O>>,
    state: Option<MapState<TimeWindow, A::Acc>>,
    /// Sliding windows kept as slide-long panes, each record added to one (Flink's slicing):
    /// a key's live panes, by start, in one value (cached in the guest, so a record costs no
    /// host call), when the windows allow it (see [`Window::pane_size`]).
    panes: Option<ValueState<Vec<(i64, A::Acc)>>>,
    /// Records dropped for arriving after their windows were gone since this instance opened
    /// (as Flink's `numLateRecordsDropped`, a count, not state: a window keeps no state of its
    /// own, so it rescales).
    late_records: u64,
    assigned: Vec<TimeWindow>,
}

/// Windows of a keyed stream by event time, `aggregate` folding each window's values and
/// `emit` turning key bytes, window and aggregate into output values (any number).
///
/// ```
/// use weir_sdk::prelude::*;
/// use weir_sdk::window::{window, Reducing, TimeWindow, Windows};
/// use weir_sdk::testing::Harness;
///
/// // The largest value per key and 10-second window, as "key,window start,max".
/// let op = keyed_process(window(
///     Windows::tumbling(10_000),
///     Reducing::new(|a: u64, b: u64| a.max(b)),
///     |key: &[u8], w: TimeWindow, max: u64| {
///         Some(format!("{},{},{max}", String::from_utf8_lossy(key), w.start))
///     },
/// ))
/// .input(Fixed)
/// .output(Text);
/// let mut h = Harness::open(op, OperatorInfo::new("max")).unwrap();
/// for (key, value, ts) in [("a", 3u64, 1_000), ("a", 7, 9_999), ("b", 1, 5_000), ("a", 2, 10_000)] {
///     h.push_record(Record { value: &value.to_le_bytes(), key: Some(key.as_bytes()), timestamp: Some(ts) }).unwrap();
/// }
/// h.advance_watermark(9_999).unwrap();
/// let mut fired = h.take_values::<String>(&Text).unwrap();
/// fired.sort();
/// assert_eq!(fired, vec!["a,0,7", "b,0,1"]);
/// h.advance_watermark(i64::MAX).unwrap();
/// assert_eq!(h.take_values::<String>(&Text).unwrap(), vec!["a,10000,2"]);
/// ```
pub fn window<A, E, I, O>(windows: Windows, aggregate: A, emit: E) -> Window<A, E, O>
where
    A: AggregateFunction,
    E: FnMut(&[u8], TimeWindow, A::Out) -> I,
    I: IntoIterator<Item = O>,
{
    Window {
        windows,
        domain: TimeDomain::EventTime,
        allowed_lateness: 0,
        aggregate,
        emit,
        on_late: None,
        state: None,
        panes: None,
        late_records: 0,
        assigned: Vec::new(),
    }
}

impl<A: AggregateFunction, E, O> Window<A, E, O> {
    /// Windows by the host's processing time instead of event time.
    pub fn processing_time(mut self) -> Self {
        self.domain = TimeDomain::ProcessingTime;
        self
    }

    /// Keeps each window `ms` after its end (event time): a record that late still counts and
    /// fires the window again.
    pub fn allowed_lateness(mut self, ms: i64) -> Self {
        self.allowed_lateness = ms.max(0);
        self
    }

    /// Passes each record too late for its windows to `f`, whose values go to the output with
    /// the windows' results (a side output in the main stream), instead of only counting it.
    pub fn on_late(mut self, f: impl FnMut(A::In) -> Option<O> + 'static) -> Self {
        self.on_late = Some(Box::new(f));
        self
    }
}

impl<A, E, I, O> Window<A, E, O>
where
    A: AggregateFunction,
    A::In: Clone,
    E: FnMut(&[u8], TimeWindow, A::Out) -> I,
    I: IntoIterator<Item = O>,
{
    fn state(&self) -> Result<&MapState<TimeWindow, A::Acc>, OperatorError> {
        self.state
            .as_ref()
            .ok_or_else(|| OperatorError::Failed("window used before open".into()))
    }

    /// The window's time (watermark or processing time) now.
    fn clock(&self, ctx: &mut ProcessContext<'_, '_, O>) -> i64 {
        match self.domain {
            TimeDomain::EventTime => ctx.current_watermark(),
            TimeDomain::ProcessingTime => ctx.current_processing_time(),
        }
    }

    fn lateness(&self) -> i64 {
        match self.domain {
            TimeDomain::EventTime => self.allowed_lateness,
            TimeDomain::ProcessingTime => 0,
        }
    }

    /// The pane length, if windows are kept as panes: sliding windows a whole number of slides
    /// long, without lateness, whose aggregate merges. A record then costs one state read and
    /// write however many windows it falls in, and a window merges its panes when it fires.
    fn pane_size(&self) -> Option<i64> {
        match self.windows {
            Windows::Sliding { size, slide, .. }
                if size % slide == 0
                    && size > slide
                    && self.lateness() == 0
                    && self
                        .aggregate
                        .merge(
                            self.aggregate.create_accumulator(),
                            self.aggregate.create_accumulator(),
                        )
                        .is_some() =>
            {
                Some(slide)
            }
            _ => None,
        }
    }

    /// Adds `value` to the pane of `timestamp`; a new pane sets the timers of every window it
    /// is part of.
    fn add_to_pane(
        &mut self,
        timestamp: i64,
        value: A::In,
        clock: i64,
        ctx: &mut ProcessContext<'_, '_, O>,
    ) -> Result<(), OperatorError> {
        let Windows::Sliding {
            size,
            slide,
            offset,
        } = self.windows
        else {
            return Err(OperatorError::Failed(
                "panes are for sliding windows".into(),
            ));
        };
        let pane = timestamp - (timestamp - offset).rem_euclid(slide);
        if self.domain == TimeDomain::EventTime && pane + size - 1 <= clock {
            // Every window of this pane has fired.
            return self.late(value, ctx);
        }
        let state = self.panes.as_ref().ok_or_else(not_open)?;
        let mut panes = state.get(ctx)?.unwrap_or_default();
        let at = match panes.binary_search_by_key(&pane, |(start, _)| *start) {
            Ok(at) => at,
            Err(at) => {
                let mut end = pane + slide;
                while end <= pane + size {
                    if self.domain == TimeDomain::ProcessingTime || end - 1 > clock {
                        ctx.register_timer(self.domain, end - 1)?;
                    }
                    end += slide;
                }
                panes.insert(at, (pane, self.aggregate.create_accumulator()));
                at
            }
        };
        self.aggregate.add(&mut panes[at].1, value);
        state.set(ctx, &panes)
    }

    /// The window ending after `time` fires from its panes; its first pane is then done.
    fn fire_panes(
        &mut self,
        time: i64,
        slide: i64,
        ctx: &mut ProcessContext<'_, '_, O>,
    ) -> Result<(), OperatorError> {
        let Windows::Sliding { size, .. } = self.windows else {
            return Ok(());
        };
        let w = TimeWindow::new(time + 1 - size, time + 1);
        let state = self.panes.as_ref().ok_or_else(not_open)?;
        let Some(mut panes) = state.get(ctx)? else {
            return Ok(());
        };
        let mut merged: Option<A::Acc> = None;
        for (start, acc) in &panes {
            if *start < w.start || *start >= w.end || (start - w.start) % slide != 0 {
                continue;
            }
            let acc = bincode_copy(acc)?;
            merged = Some(match merged {
                None => acc,
                Some(m) => self
                    .aggregate
                    .merge(m, acc)
                    .ok_or_else(|| OperatorError::Failed("the aggregate stopped merging".into()))?,
            });
        }
        // The window's first pane is in no later window.
        panes.retain(|(start, _)| *start > w.start);
        if panes.is_empty() {
            state.clear(ctx)?;
        } else {
            state.set(ctx, &panes)?;
        }
        match merged {
            Some(acc) => self.fire(w, acc, ctx),
            None => Ok(()),
        }
    }

    /// When the window's state goes: its end plus the allowed lateness.
    fn cleanup_time(&self, w: &TimeWindow) -> i64 {
        w.max_timestamp().saturating_add(self.lateness())
    }

    fn is_late(&self, w: &TimeWindow, clock: i64) -> bool {
        self.domain == TimeDomain::EventTime && self.cleanup_time(w) <= clock
    }

    /// The window's timers: at its end, unless that has passed (a late window within the
    /// lateness fires at once instead, as Flink's `EventTimeTrigger` does, and a timer in the
    /// past would fire it a second time), and at its cleanup time.
    fn register(
        &self,
        w: &TimeWindow,
        clock: i64,
        ctx: &mut ProcessContext<'_, '_, O>,
    ) -> Result<(), OperatorError> {
        if self.domain == TimeDomain::ProcessingTime || w.max_timestamp() > clock {
            ctx.register_timer(self.domain, w.max_timestamp())?;
        }
        if self.lateness() > 0 {
            ctx.register_timer(self.domain, self.cleanup_time(w))?;
        }
        Ok(())
    }

    fn unregister(
        &self,
        w: &TimeWindow,
        ctx: &mut ProcessContext<'_, '_, O>,
    ) -> Result<(), OperatorError> {
        ctx.delete_timer(self.domain, w.max_timestamp())?;
        if self.lateness() > 0 {
            ctx.delete_timer(self.domain, self.cleanup_time(w))?;
        }
        Ok(())
    }

    /// Emits the window's results, stamped with its last millisecond.
    fn fire(
        &mut self,
        w: TimeWindow,
        acc: A::Acc,
        ctx: &mut ProcessContext<'_, '_, O>,
    ) -> Result<(), OperatorError> {
        let key = ctx.key().unwrap_or_default();
        let result = self.aggregate.result(acc);
        for value in (self.emit)(key, w, result) {
            ctx.emit_at(&value, w.max_timestamp())?;
        }
        Ok(())
    }

    fn late(
        &mut self,
        value: A::In,
        ctx: &mut ProcessContext<'_, '_, O>,
    ) -> Result<(), OperatorError> {
        self.late_records += 1;
        if let Some(f) = &mut self.on_late
            && let Some(out) = f(value)
        {
            ctx.emit(&out)?;
        }
        Ok(())
    }

    /// Adds `value` to window `w` (already merged, for sessions); fires it at once if its time
    /// has passed (a late record within the allowed lateness).
    fn add_to(
        &mut self,
        w: TimeWindow,
        acc: Option<A::Acc>,
        value: A::In,
        clock: i64,
        ctx: &mut ProcessContext<'_, '_, O>,
    ) -> Result<(), OperatorError> {
        let mut acc = match acc {
            Some(acc) => acc,
            None => {
                self.register(&w, clock, ctx)?;
                self.aggregate.create_accumulator()
            }
        };
        self.aggregate.add(&mut acc, value);
        if self.domain == TimeDomain::EventTime && w.max_timestamp() <= clock {
            let copy = bincode_copy(&acc)?;
            self.state()?.put(ctx, &w, &acc)?;
            self.fire(w, copy, ctx)
        } else {
            self.state()?.put(ctx, &w, &acc)
        }
    }

    /// Session windows: the record's window merged with every window of its key it touches.
    fn add_to_session(
        &mut self,
        own: TimeWindow,
        value: A::In,
        clock: i64,
        ctx: &mut ProcessContext<'_, '_, O>,
    ) -> Result<(), OperatorError> {
        let existing = self.state()?.entries(ctx)?;
        let mut merged = own;
        let mut touched = Vec::new();
        for (w, acc) in existing {
            if w.intersects(&own) {
                merged = merged.cover(&w);
                touched.push((w, acc));
            }
        }
        if self.is_late(&merged, clock) {
            return self.late(value, ctx);
        }
        let mut acc: Option<A::Acc> = None;
        for (w, other) in touched {
            self.state()?.remove(ctx, &w)?;
            self.unregister(&w, ctx)?;
            acc = Some(match acc {
                None => other,
                Some(a) => self.aggregate.merge(a, other).ok_or_else(|| {
                    OperatorError::Config(
                        "session windows merge accumulators: this aggregate has no `merge`".into(),
                    )
                })?,
            });
        }
        if acc.is_some() {
            self.register(&merged, clock, ctx)?;
        }
        self.add_to(merged, acc, value, clock, ctx)
    }
}

fn not_open() -> OperatorError {
    OperatorError::Failed("window used before open".into())
}

/// A copy of an accumulator: the window keeps its state when it fires within its lateness.
fn bincode_copy<T: Serialize + DeserializeOwned>(value: &T) -> Result<T, OperatorError> {
    use crate::codec::Codec;
    let mut bytes = Vec::new();
    crate::codec::Bincode.encode(value, &mut bytes)?;
    crate::codec::Bincode.decode(&bytes)
}

impl<A, E, I, O> ProcessFunction for Window<A, E, O>
where
    A: AggregateFunction,
    A::In: Clone,
    E: FnMut(&[u8], TimeWindow, A::Out) -> I,
    I: IntoIterator<Item = O>,
{
    type In = A::In;
    type Out = O;

    fn open(&mut self, ctx: &mut OpenContext<'_>) -> Result<(), OperatorError> {
        self.windows.check()?;
        self.state = Some(ctx.map_state("window-contents"));
        if self.pane_size().is_some() {
            self.panes = Some(ctx.value_state("window-panes"));
        }
        Ok(())
    }

    fn process_element(
        &mut self,
        value: A::In,
        ctx: &mut ProcessContext<'_, '_, O>,
    ) -> Result<(), OperatorError> {
        let clock = self.clock(ctx);
        let timestamp = match self.domain {
            TimeDomain::EventTime => ctx.timestamp().ok_or_else(|| {
                OperatorError::Failed(
                    "an event-time window got a record without a timestamp (declare \
                     `watermarks` where records get their timestamps)"
                        .into(),
                )
            })?,
            TimeDomain::ProcessingTime => clock,
        };
        if self.panes.is_some() {
            return self.add_to_pane(timestamp, value, clock, ctx);
        }
        if let Windows::Session { gap } = self.windows {
            return self.add_to_session(
                TimeWindow::new(timestamp, timestamp + gap),
                value,
                clock,
                ctx,
            );
        }
        let mut assigned = std::mem::take(&mut self.assigned);
        self.windows.assign(timestamp, &mut assigned);
        let mut late = true;
        for &w in &assigned {
            if self.is_late(&w, clock) {
                continue;
            }
            late = false;
            let acc = self.state()?.get(ctx, &w)?;
            self.add_to(w, acc, value.clone(), clock, ctx)?;
        }
        self.assigned = assigned;
        if late {
            self.late(value, ctx)?;
        }
        Ok(())
    }

    fn on_timer(
        &mut self,
        domain: TimeDomain,
        ctx: &mut ProcessContext<'_, '_, O>,
    ) -> Result<(), OperatorError> {
        if domain != self.domain {
            return Ok(());
        }
        let Some(time) = ctx.timestamp() else {
            return Ok(());
        };
        if self.panes.is_some()
            && let Some(slide) = self.pane_size()
        {
            return self.fire_panes(time, slide, ctx);
        }
        let lateness = self.lateness();
        let state = self.state()?;
        // The windows whose end or whose cleanup time this is.
        let due: Vec<(TimeWindow, A::Acc)> = match self.windows.ending_at(time) {
            Some(ending) => {
                let mut due = Vec::new();
                if let Some(acc) = state.get(ctx, &ending)? {
                    due.push((ending, acc));
                }
                if lateness > 0
                    && let Some(cleaned) = self.windows.ending_at(time - lateness)
                    && let Some(acc) = state.get(ctx, &cleaned)?
                {
                    due.push((cleaned, acc));
                }
                due
            }
            None => state
                .entries(ctx)?
                .into_iter()
                .filter(|(w, _)| w.max_timestamp() == time || self.cleanup_time(w) == time)
                .collect(),
        };
        for (w, acc) in due {
            let fires = w.max_timestamp() == time;
            let cleans = self.cleanup_time(&w) == time;
            if cleans {
                self.state()?.remove(ctx, &w)?;
            }
            if fires {
                self.fire(w, acc, ctx)?;
            }
        }
        Ok(())
    }

    fn close(&mut self, ctx: &mut ProcessContext<'_, '_, O>) -> Result<(), OperatorError> {
        if self.late_records > 0 {
            ctx.host().log(
                Level::Warn,
                &format!(
                    "{} records arrived after their windows were gone and were dropped",
                    self.late_records
                ),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assigned(windows: Windows, t: i64) -> Vec<(i64, i64)> {
        let mut out = Vec::new();
        windows.assign(t, &mut out);
        let mut pairs: Vec<(i64, i64)> = out.iter().map(|w| (w.start, w.end)).collect();
        pairs.sort();
        pairs
    }

    #[test]
    fn records_fall_in_the_windows_flink_puts_them_in() {
        assert_eq!(assigned(Windows::tumbling(10), 0), vec![(0, 10)]);
        assert_eq!(assigned(Windows::tumbling(10), 9), vec![(0, 10)]);
        assert_eq!(assigned(Windows::tumbling(10), 10), vec![(10, 20)]);
        assert_eq!(assigned(Windows::tumbling(10), -1), vec![(-10, 0)]);
        assert_eq!(
            assigned(Windows::sliding(10_000, 2_000), 5_000),
            vec![
                (-4_000, 6_000),
                (-2_000, 8_000),
                (0, 10_000),
                (2_000, 12_000),
                (4_000, 14_000)
            ]
        );
        assert_eq!(
            assigned(Windows::sliding(10, 4), 9),
            vec![(0, 10), (4, 14), (8, 18)]
        );
        assert_eq!(assigned(Windows::session(30), 7), vec![(7, 37)]);
    }

    use crate::codec::{Fixed, Text};
    use crate::operator::OperatorInfo;
    use crate::testing::Harness;
    use crate::{Operator, Record, keyed_process};

    /// Sums per key and window as `start..end=sum`, with late records as `late x`.
    fn summing(windows: Windows, lateness: i64) -> impl Operator {
        keyed_process(
            window(
                windows,
                Reducing::new(|a: u64, b: u64| a + b),
                |_: &[u8], w: TimeWindow, sum: u64| Some(format!("{}..{}={sum}", w.start, w.end)),
            )
            .allowed_lateness(lateness)
            .on_late(|x: u64| Some(format!("late {x}"))),
        )
        .input(Fixed)
        .output(Text)
    }

    fn push<O: Operator>(h: &mut Harness<O>, key: &str, value: u64, ts: i64) {
        h.push_record(Record {
            value: &value.to_le_bytes(),
            key: Some(key.as_bytes()),
            timestamp: Some(ts),
        })
        .unwrap();
    }

    #[test]
    fn a_late_record_within_the_lateness_fires_its_window_again_and_a_later_one_is_counted() {
        let mut h =
            Harness::open(summing(Windows::tumbling(10), 5), OperatorInfo::new("w")).unwrap();
        push(&mut h, "a", 1, 3);
        h.advance_watermark(9).unwrap();
        assert_eq!(h.take_values(&Text).unwrap(), vec!["0..10=1"]);
        // Within the lateness: the window fires again with the record counted.
        push(&mut h, "a", 2, 4);
        assert_eq!(h.take_values(&Text).unwrap(), vec!["0..10=3"]);
        // Past it the window's state is gone and a record for it is late.
        h.advance_watermark(14).unwrap();
        assert!(h.host().pending_timers().next().is_none());
        push(&mut h, "a", 4, 5);
        assert_eq!(h.take_values(&Text).unwrap(), vec!["late 4"]);
        assert!(h.snapshot_state().unwrap().is_empty());
        h.close().unwrap();
        assert!(
            h.host()
                .logs
                .iter()
                .any(|(_, m)| m.contains("1 records arrived after their windows were gone"))
        );
    }

    #[test]
    fn sliding_windows_kept_as_panes_fire_every_window_a_record_falls_in() {
        let mut h =
            Harness::open(summing(Windows::sliding(10, 2), 0), OperatorInfo::new("p")).unwrap();
        // Sparse times, so that some windows hold only their first or last pane.
        let times = [0i64, 1, 3, 9, 10, 17, 31];
        for (i, &t) in times.iter().enumerate() {
            push(&mut h, "a", 1 << i, t);
        }
        // Six panes (0, 2, 8, 10, 16, 30); a timer at the end of each window holding one: 18
        // distinct ends.
        assert_eq!(h.host().pending_timers().count(), 18);
        h.advance_watermark(i64::MAX).unwrap();
        let mut fired = h.take_values(&Text).unwrap();
        fired.sort();
        let mut expected = Vec::new();
        let mut start = -8;
        while start <= 30 {
            let sum: u64 = times
                .iter()
                .enumerate()
                .filter(|(_, t)| (start..start + 10).contains(*t))
                .map(|(i, _)| 1u64 << i)
                .sum();
            if sum > 0 {
                expected.push(format!("{start}..{}={sum}", start + 10));
            }
            start += 2;
        }
        expected.sort();
        assert_eq!(fired, expected);
        assert!(h.host().pending_timers().next().is_none());
    }

    #[test]
    fn processing_time_windows_follow_the_hosts_clock_not_the_records() {
        let op = keyed_process(
            window(
                Windows::tumbling(100),
                Reducing::new(|a: u64, b: u64| a + b),
                |_: &[u8], w: TimeWindow, sum: u64| Some(format!("{}..{}={sum}", w.start, w.end)),
            )
            .processing_time(),
        )
        .input(Fixed)
        .output(Text);
        let mut h = Harness::open(op, OperatorInfo::new("p")).unwrap();
        h.advance_processing_time(1_050).unwrap();
        // Event times are ignored: both land in [1000, 1100) by the clock.
        push(&mut h, "a", 1, 5);
        push(&mut h, "a", 2, 999_999);
        h.advance_watermark(i64::MAX).unwrap();
        assert!(h.take_values::<String>(&Text).unwrap().is_empty());
        h.advance_processing_time(1_099).unwrap();
        assert_eq!(h.take_values(&Text).unwrap(), vec!["1000..1100=3"]);
        assert!(h.host().pending_timers().next().is_none());
    }

    #[test]
    fn a_late_record_opening_a_window_within_the_lateness_fires_it_once() {
        let mut h =
            Harness::open(summing(Windows::tumbling(10), 5), OperatorInfo::new("w")).unwrap();
        push(&mut h, "b", 9, 30);
        h.advance_watermark(12).unwrap();
        // [0, 10) has no state yet; its end has passed, its cleanup (14) has not.
        push(&mut h, "a", 1, 5);
        assert_eq!(h.take_values(&Text).unwrap(), vec!["0..10=1"]);
        h.advance_watermark(13).unwrap();
        h.advance_watermark(i64::MAX).unwrap();
        assert_eq!(h.take_values(&Text).unwrap(), vec!["30..40=9"]);
    }

    #[test]
    fn session_windows_merge_when_a_record_bridges_them() {
        let mut h =
            Harness::open(summing(Windows::session(10), 0), OperatorInfo::new("s")).unwrap();
        push(&mut h, "a", 1, 0);
        push(&mut h, "a", 2, 20);
        push(&mut h, "b", 5, 5);
        // Touches both of a's sessions, [0, 10) and [20, 30): one session [0, 30).
        push(&mut h, "a", 4, 10);
        h.advance_watermark(i64::MAX).unwrap();
        let mut fired = h.take_values(&Text).unwrap();
        fired.sort();
        assert_eq!(fired, vec!["0..30=7", "5..15=5"]);
        assert!(h.host().pending_timers().next().is_none());
    }
}

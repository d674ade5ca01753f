//! Joins of two keyed streams by event time, as Flink's DataStream joins: an interval join
//! (each left record with the right records of the same key within a time interval of it) and
//! a window join (the records of the same key and window, pairwise). Both are
//! [`CoProcessFunction`]s for [`keyed_co_process`](crate::keyed_co_process); the records they
//! wait with are host keyed state, cleared by timers once the watermark says no partner can
//! come, so joins checkpoint and rescale as keyed state does. A record behind the watermark
//! (late) is dropped, as Flink drops it.

use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::co_process::CoProcessFunction;
use crate::host::TimeDomain;
use crate::operator::{OpenContext, OperatorError};
use crate::process::ProcessContext;
use crate::state::MapState;
use crate::window::{TimeWindow, Windows};

fn timestamp_of<O>(ctx: &ProcessContext<'_, '_, O>, what: &str) -> Result<i64, OperatorError> {
    ctx.timestamp().ok_or_else(|| {
        OperatorError::Failed(format!(
            "{what} got a record without a timestamp (declare `watermarks` where records get \
             their timestamps)"
        ))
    })
}

fn not_open() -> OperatorError {
    OperatorError::Failed("join used before open".into())
}

/// Whether `timestamp` is behind the watermark (Flink's `isLate`).
fn is_late<O>(ctx: &mut ProcessContext<'_, '_, O>, timestamp: i64) -> bool {
    let watermark = ctx.current_watermark();
    watermark != i64::MIN && timestamp < watermark
}

/// Appends `value` to the list under `at`.
fn append<K, T>(
    state: &MapState<K, Vec<T>>,
    ctx: &mut ProcessContext<'_, '_, impl Sized>,
    at: &K,
    value: T,
) -> Result<(), OperatorError>
where
    K: Serialize + DeserializeOwned,
    T: Serialize + DeserializeOwned,
{
    let mut list = state.get(ctx, at)?.unwrap_or_default();
    list.push(value);
    state.put(ctx, at, &list)
}

/// Joins each left record at `t` with every right record of its key at `t + lower ..= t +
/// upper`, emitting `join(left, right)` stamped with the later of the two. Built by
/// [`interval_join`].
pub struct IntervalJoin<L, R, F, O> {
    lower: i64,
    upper: i64,
    join: F,
    left: Option<MapState<i64, Vec<L>>>,
    right: Option<MapState<i64, Vec<R>>>,
    _out: PhantomData<fn() -> O>,
}

/// An interval join (Flink's `KeyedStream.intervalJoin(..).between(lower, upper)`): both
/// bounds inclusive, in milliseconds relative to the left record's time.
///
/// ```
/// use weir_sdk::prelude::*;
/// use weir_sdk::OwnedRecord;
/// use weir_sdk::testing::Harness;
/// let op = keyed_co_process(interval_join(-2, 1, |l: &u64, r: &u64| format!("{l}-{r}")))
///     .input1(Fixed)
///     .input2(Fixed)
///     .output(Text);
/// let mut h = Harness::open(op, OperatorInfo::new("j")).unwrap();
/// let rec = |v: u64, ts: i64| OwnedRecord::from(Record { value: &v.to_le_bytes(), key: Some(&b"k"[..]), timestamp: Some(ts) });
/// h.push_second_record(rec(100, 8).as_record()).unwrap(); // right at 8
/// h.push_record(rec(1, 10).as_record()).unwrap();          // left at 10: rights at 8..=11
/// h.push_second_record(rec(200, 11).as_record()).unwrap(); // right at 11
/// h.push_second_record(rec(300, 12).as_record()).unwrap(); // right at 12: too late for 10
/// assert_eq!(h.take_values(&Text).unwrap(), vec!["1-100", "1-200"]);
/// ```
pub fn interval_join<L, R, O, F>(lower_ms: i64, upper_ms: i64, join: F) -> IntervalJoin<L, R, F, O>
where
    F: FnMut(&L, &R) -> O,
{
    IntervalJoin {
        lower: lower_ms,
        upper: upper_ms,
        join,
        left: None,
        right: None,
        _out: PhantomData,
    }
}

impl<L, R, F, O> CoProcessFunction for IntervalJoin<L, R, F, O>
where
    L: Serialize + DeserializeOwned,
    R: Serialize + DeserializeOwned,
    F: FnMut(&L, &R) -> O,
{
    type In1 = L;
    type In2 = R;
    type Out = O;

    fn open(&mut self, ctx: &mut OpenContext<'_>) -> Result<(), OperatorError> {
        if self.lower > self.upper {
            return Err(OperatorError::Config(format!(
                "an interval join's lower bound ({}) is above its upper bound ({})",
                self.lower, self.upper
            )));
        }
        self.left = Some(ctx.map_state("interval-join-left"));
        self.right = Some(ctx.map_state("interval-join-right"));
        Ok(())
    }

    fn process_element1(
        &mut self,
        value: L,
        ctx: &mut ProcessContext<'_, '_, O>,
    ) -> Result<(), OperatorError> {
        let t = timestamp_of(ctx, "an interval join")?;
        if is_late(ctx, t) {
            return Ok(());
        }
        let (left, right) = (
            self.left.as_ref().ok_or_else(not_open)?,
            self.right.as_ref().ok_or_else(not_open)?,
        );
        for (tr, rights) in right.entries(ctx)? {
            if (t + self.lower..=t + self.upper).contains(&tr) {
                for r in &rights {
                    let out = (self.join)(&value, r);
                    ctx.emit_at(&out, t.max(tr))?;
                }
            }
        }
        append(left, ctx, &t, value)?;
        // No right record can match once the watermark passes t + upper.
        ctx.register_event_time_timer(t.saturating_add(self.upper))
    }

    fn process_element2(
        &mut self,
        value: R,
        ctx: &mut ProcessContext<'_, '_, O>,
    ) -> Result<(), OperatorError> {
        let t = timestamp_of(ctx, "an interval join")?;
        if is_late(ctx, t) {
            return Ok(());
        }
        let (left, right) = (
            self.left.as_ref().ok_or_else(not_open)?,
            self.right.as_ref().ok_or_else(not_open)?,
        );
        for (tl, lefts) in left.entries(ctx)? {
            if (tl + self.lower..=tl + self.upper).contains(&t) {
                for l in &lefts {
                    let out = (self.join)(l, &value);
                    ctx.emit_at(&out, t.max(tl))?;
                }
            }
        }
        append(right, ctx, &t, value)?;
        // No left record can match once the watermark passes t - lower.
        ctx.register_event_time_timer(t.saturating_sub(self.lower))
    }

    fn on_timer(
        &mut self,
        domain: TimeDomain,
        ctx: &mut ProcessContext<'_, '_, O>,
    ) -> Result<(), OperatorError> {
        let Some(now) = ctx.timestamp().filter(|_| domain == TimeDomain::EventTime) else {
            return Ok(());
        };
        let (left, right) = (
            self.left.as_ref().ok_or_else(not_open)?,
            self.right.as_ref().ok_or_else(not_open)?,
        );
        for (tl, _) in left.entries(ctx)? {
            if tl.saturating_add(self.upper) <= now {
                left.remove(ctx, &tl)?;
            }
        }
        for (tr, _) in right.entries(ctx)? {
            if tr.saturating_sub(self.lower) <= now {
                right.remove(ctx, &tr)?;
            }
        }
        Ok(())
    }
}

/// Joins the records of each key and window pairwise when the window closes, emitting
/// `join(left, right)` stamped with the window's last millisecond. Built by [`window_join`].
pub struct WindowJoin<L, R, F, O> {
    windows: Windows,
    join: F,
    left: Option<MapState<TimeWindow, Vec<L>>>,
    right: Option<MapState<TimeWindow, Vec<R>>>,
    assigned: Vec<TimeWindow>,
    _out: PhantomData<fn() -> O>,
}

/// A window join (Flink's `stream.join(other).where(..).equalTo(..).window(..)`) over
/// tumbling or sliding event-time windows.
///
/// ```
/// use weir_sdk::prelude::*;
/// use weir_sdk::window::Windows;
/// use weir_sdk::OwnedRecord;
/// use weir_sdk::testing::Harness;
/// let op = keyed_co_process(window_join(Windows::tumbling(10), |l: &u64, r: &u64| l * r))
///     .input1(Fixed)
///     .input2(Fixed)
///     .output(Fixed);
/// let mut h = Harness::open(op, OperatorInfo::new("j")).unwrap();
/// let rec = |v: u64, ts: i64| OwnedRecord::from(Record { value: &v.to_le_bytes(), key: Some(&b"k"[..]), timestamp: Some(ts) });
/// h.push_record(rec(2, 1).as_record()).unwrap();
/// h.push_record(rec(3, 9).as_record()).unwrap();
/// h.push_second_record(rec(10, 5).as_record()).unwrap();
/// h.push_second_record(rec(100, 12).as_record()).unwrap(); // the next window: no partner
/// h.advance_watermark(i64::MAX).unwrap();
/// assert_eq!(h.take_values::<u64>(&Fixed).unwrap(), vec![20, 30]);
/// ```
pub fn window_join<L, R, O, F>(windows: Windows, join: F) -> WindowJoin<L, R, F, O>
where
    F: FnMut(&L, &R) -> O,
{
    WindowJoin {
        windows,
        join,
        left: None,
        right: None,
        assigned: Vec::new(),
        _out: PhantomData,
    }
}

impl<L, R, F, O> WindowJoin<L, R, F, O>
where
    L: Serialize + DeserializeOwned,
    R: Serialize + DeserializeOwned,
{
    /// Puts `value` into every window of its time that is not yet closed.
    fn add<T: Serialize + DeserializeOwned + Clone>(
        windows: Windows,
        assigned: &mut Vec<TimeWindow>,
        state: &MapState<TimeWindow, Vec<T>>,
        value: T,
        ctx: &mut ProcessContext<'_, '_, O>,
    ) -> Result<(), OperatorError> {
        let t = timestamp_of(ctx, "a window join")?;
        let watermark = ctx.current_watermark();
        windows.assign(t, assigned);
        for w in assigned.iter() {
            if w.max_timestamp() <= watermark {
                continue;
            }
            append(state, ctx, w, value.clone())?;
            ctx.register_event_time_timer(w.max_timestamp())?;
        }
        Ok(())
    }
}

impl<L, R, F, O> CoProcessFunction for WindowJoin<L, R, F, O>
where
    L: Serialize + DeserializeOwned + Clone,
    R: Serialize + DeserializeOwned + Clone,
    F: FnMut(&L, &R) -> O,
{
    type In1 = L;
    type In2 = R;
    type Out = O;

    fn open(&mut self, ctx: &mut OpenContext<'_>) -> Result<(), OperatorError> {
        if let Windows::Session { .. } = self.windows {
            return Err(OperatorError::Config(
                "a window join takes tumbling or sliding windows".into(),
            ));
        }
        self.left = Some(ctx.map_state("window-join-left"));
        self.right = Some(ctx.map_state("window-join-right"));
        Ok(())
    }

    fn process_element1(
        &mut self,
        value: L,
        ctx: &mut ProcessContext<'_, '_, O>,
    ) -> Result<(), OperatorError> {
        let state = self.left.as_ref().ok_or_else(not_open)?;
        Self::add(self.windows, &mut self.assigned, state, value, ctx)
    }

    fn process_element2(
        &mut self,
        value: R,
        ctx: &mut ProcessContext<'_, '_, O>,
    ) -> Result<(), OperatorError> {
        let state = self.right.as_ref().ok_or_else(not_open)?;
        Self::add(self.windows, &mut self.assigned, state, value, ctx)
    }

    fn on_timer(
        &mut self,
        domain: TimeDomain,
        ctx: &mut ProcessContext<'_, '_, O>,
    ) -> Result<(), OperatorError> {
        let Some(time) = ctx.timestamp().filter(|_| domain == TimeDomain::EventTime) else {
            return Ok(());
        };
        let Some(w) = self.windows.ending_at(time) else {
            return Ok(());
        };
        let (left, right) = (
            self.left.as_ref().ok_or_else(not_open)?,
            self.right.as_ref().ok_or_else(not_open)?,
        );
        let lefts = left.get(ctx, &w)?.unwrap_or_default();
        let rights = right.get(ctx, &w)?.unwrap_or_default();
        left.remove(ctx, &w)?;
        right.remove(ctx, &w)?;
        for l in &lefts {
            for r in &rights {
                let out = (self.join)(l, r);
                ctx.emit_at(&out, time)?;
            }
        }
        Ok(())
    }
}

//! Operators driven by time. `alarm`: every record sets an alarm `delay` ms after its
//! timestamp, in the time domain named by `domain`; when the alarm rings the operator emits
//! `key time last-value`. `window-sum`: sums and counts per key and window.

use weir_sdk::prelude::*;

#[derive(Default)]
struct Alarm {
    delay: i64,
    processing_time: bool,
    last: Option<ValueState<String>>,
}

impl ProcessFunction for Alarm {
    type In = String;
    type Out = String;

    fn open(&mut self, ctx: &mut OpenContext<'_>) -> Result<(), OperatorError> {
        self.delay = ctx.parse_config("delay")?;
        self.processing_time = match ctx.config("domain").unwrap_or("event") {
            "event" => false,
            "processing" => true,
            other => return Err(OperatorError::Config(format!("unknown domain `{other}`"))),
        };
        self.last = Some(ctx.value_state("last"));
        Ok(())
    }

    fn process_element(
        &mut self,
        value: String,
        ctx: &mut ProcessContext<'_, '_, String>,
    ) -> Result<(), OperatorError> {
        let last = self
            .last
            .as_ref()
            .ok_or_else(|| OperatorError::Failed("not open".into()))?;
        last.set(ctx, &value)?;
        let at = ctx.timestamp().unwrap_or(0) + self.delay;
        if self.processing_time {
            ctx.register_processing_time_timer(at)
        } else {
            ctx.register_event_time_timer(at)
        }
    }

    fn on_timer(
        &mut self,
        _domain: TimeDomain,
        ctx: &mut ProcessContext<'_, '_, String>,
    ) -> Result<(), OperatorError> {
        let last = self
            .last
            .as_ref()
            .ok_or_else(|| OperatorError::Failed("not open".into()))?;
        let value = last.get(ctx)?.unwrap_or_default();
        let key = ctx.key_as(&Text)?;
        let at = ctx.timestamp().unwrap_or(0);
        ctx.emit(&format!("{key} {at} {value}"))
    }
}

/// The windows `kind` (tumbling, sliding, session) of `size`, `slide` or `gap` ms, from the
/// operator's configuration.
fn windows_of(config: &OperatorInfo) -> Windows {
    let ms = |key: &str| config.config(key).and_then(|v| v.parse().ok()).unwrap_or(0);
    match config.config("kind").unwrap_or("tumbling") {
        "sliding" => Windows::sliding(ms("size"), ms("slide")),
        "session" => Windows::session(ms("gap")),
        _ => Windows::tumbling(ms("size")),
    }
}

/// Sums per key and window, emitted as `key,start,end,sum,count`; with `lateness`, windows
/// stay that long after their end.
struct WindowSum {
    inner: Option<Box<dyn Operator>>,
}

impl Operator for WindowSum {
    fn open(&mut self, ctx: &mut OpenContext<'_>) -> Result<(), OperatorError> {
        let windows = windows_of(ctx.info());
        let lateness: i64 = ctx
            .config("lateness")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let processing = ctx.config("domain") == Some("processing");
        let mut windowed = window(
            windows,
            Reducing::new(|a: (u64, u64), b: (u64, u64)| (a.0 + b.0, a.1 + b.1)),
            |key: &[u8], w: TimeWindow, (sum, count): (u64, u64)| {
                let key = u64::from_le_bytes(key.try_into().unwrap_or([0; 8]));
                Some(format!("{key},{},{},{sum},{count}", w.start, w.end))
            },
        )
        .allowed_lateness(lateness)
        .on_late(|(value, _): (u64, u64)| Some(format!("late,{value}")));
        if processing {
            windowed = windowed.processing_time();
        }
        let mut inner: Box<dyn Operator> =
            Box::new(keyed_process(windowed).input(PairOfOne).output(Text));
        inner.open(ctx)?;
        self.inner = Some(inner);
        Ok(())
    }

    fn process(&mut self, record: Record<'_>, ctx: &mut Context<'_>) -> Result<(), OperatorError> {
        self.inner_mut()?.process(record, ctx)
    }

    fn on_watermark(&mut self, watermark: i64, ctx: &mut Context<'_>) -> Result<(), OperatorError> {
        self.inner_mut()?.on_watermark(watermark, ctx)
    }

    fn on_timer(&mut self, domain: TimeDomain, ctx: &mut Context<'_>) -> Result<(), OperatorError> {
        self.inner_mut()?.on_timer(domain, ctx)
    }

    fn snapshot_state(&mut self) -> Result<Vec<u8>, OperatorError> {
        self.inner_mut()?.snapshot_state()
    }

    fn restore_state(&mut self, state: &[u8]) -> Result<(), OperatorError> {
        self.inner_mut()?.restore_state(state)
    }

    fn close(&mut self, ctx: &mut Context<'_>) -> Result<(), OperatorError> {
        self.inner_mut()?.close(ctx)
    }
}

impl WindowSum {
    fn inner_mut(&mut self) -> Result<&mut Box<dyn Operator>, OperatorError> {
        self.inner
            .as_mut()
            .ok_or_else(|| OperatorError::Failed("not open".into()))
    }
}

/// A fixed-width number read as the pair (number, 1): a sum and a count in one reduce.
struct PairOfOne;

impl Codec<(u64, u64)> for PairOfOne {
    fn encode(&self, value: &(u64, u64), out: &mut Vec<u8>) -> Result<(), OperatorError> {
        out.extend_from_slice(&value.0.to_le_bytes());
        Ok(())
    }
    fn decode(&self, bytes: &[u8]) -> Result<(u64, u64), OperatorError> {
        let n: u64 = Fixed.decode(bytes)?;
        Ok((n, 1))
    }
}

weir_sdk::export_operators! {
    "alarm" => keyed_process(Alarm::default()).input(Text).output(Text),
    // Keys a number by its remainder modulo `modulus`.
    "key-mod" => KeyMod { modulus: 1 },
    // Drops the numbers in every third block of `block` (gaps for session windows).
    "gaps" => filter(|n: &u64| (n / 1_000) % 3 != 2).input(Fixed),
    "window-sum" => WindowSum { inner: None },
    // Pairs `left,right` of one key within 2 ms of each other.
    "interval-join" => keyed_co_process(interval_join(-2, 2, |l: &u64, r: &u64| format!("{l},{r}")))
        .input1(Fixed)
        .input2(Fixed)
        .output(Text),
    // Pairs `left,right` of one key and 100 ms tumbling window.
    "window-join" => keyed_co_process(window_join(Windows::tumbling(100), |l: &u64, r: &u64| format!("{l},{r}")))
        .input1(Fixed)
        .input2(Fixed)
        .output(Text),
}

/// `key_by(n % modulus)`, the modulus from the configuration.
struct KeyMod {
    modulus: u64,
}

impl Operator for KeyMod {
    fn open(&mut self, ctx: &mut OpenContext<'_>) -> Result<(), OperatorError> {
        self.modulus = ctx.parse_config("modulus")?;
        if self.modulus == 0 {
            return Err(OperatorError::Config("modulus must not be 0".into()));
        }
        Ok(())
    }

    fn process(&mut self, record: Record<'_>, ctx: &mut Context<'_>) -> Result<(), OperatorError> {
        let n: u64 = Fixed.decode(record.value)?;
        let key = (n % self.modulus).to_le_bytes();
        ctx.emit_record(Record {
            value: record.value,
            key: Some(&key),
            timestamp: record.timestamp,
        });
        Ok(())
    }
}

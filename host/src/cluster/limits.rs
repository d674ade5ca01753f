//! The limits each operator subtask of a job runs under: the job's own settings (manifest or
//! command line) over the cluster's defaults, each within the cluster's maximum. Tenants'
//! quotas will set those maximums.

use std::time::Duration;

use crate::job::JobLimits;
use crate::wasm::Limits;

/// The most a job may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitMaximums {
    /// Longest call deadline a job may set.
    pub call_deadline: Duration,
    /// Largest guest memory a job may set.
    pub memory_bytes: u64,
    /// Most keyed state per subtask a job may set.
    pub state_bytes: u64,
}

impl Default for LimitMaximums {
    /// A guest's linear memory cannot pass 4 GiB on wasm32; ten minutes is longer than any
    /// sane single call; 8 GiB of heap state per subtask is a third of this kind of machine.
    fn default() -> Self {
        LimitMaximums {
            call_deadline: Duration::from_secs(600),
            memory_bytes: 4 << 30,
            state_bytes: 8 << 30,
        }
    }
}

/// A job asked for more than the cluster allows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the job asks for {setting} = {asked}, over this cluster's maximum of {maximum}")]
pub struct LimitTooHigh {
    pub setting: &'static str,
    pub asked: String,
    pub maximum: String,
}

/// `defaults` with the job's settings applied, each checked against `maximums`.
pub fn job_limits(
    defaults: &Limits,
    maximums: &LimitMaximums,
    job: &JobLimits,
) -> Result<Limits, LimitTooHigh> {
    let mut limits = defaults.clone();
    if let Some(deadline) = job.call_deadline {
        if deadline > maximums.call_deadline {
            return Err(LimitTooHigh {
                setting: "call_deadline",
                asked: format!("{deadline:?}"),
                maximum: format!("{:?}", maximums.call_deadline),
            });
        }
        limits.call_deadline = deadline;
    }
    if let Some(bytes) = job.memory_bytes {
        limits.max_memory_bytes = within("memory_limit", bytes, maximums.memory_bytes)?;
    }
    if let Some(bytes) = job.state_bytes {
        limits.max_state_bytes = within("state_limit", bytes, maximums.state_bytes)?;
    }
    if let Some(bytes) = job.log_bytes {
        // Only ever lowered: a tenant's quota, never more than the cluster's default.
        limits.max_log_bytes = limits
            .max_log_bytes
            .min(usize::try_from(bytes).unwrap_or(usize::MAX));
    }
    Ok(limits)
}

fn within(setting: &'static str, asked: u64, maximum: u64) -> Result<usize, LimitTooHigh> {
    let too_high = || LimitTooHigh {
        setting,
        asked: format!("{asked} bytes"),
        maximum: format!("{maximum} bytes"),
    };
    if asked > maximum {
        return Err(too_high());
    }
    usize::try_from(asked).map_err(|_| too_high())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_settings_replace_defaults_within_the_maximums() {
        let job = JobLimits {
            call_deadline: Some(Duration::from_secs(2)),
            memory_bytes: Some(64 << 20),
            state_bytes: None,
            log_bytes: Some(1024),
        };
        let limits = job_limits(&Limits::default(), &LimitMaximums::default(), &job).unwrap();
        assert_eq!(limits.call_deadline, Duration::from_secs(2));
        assert_eq!(limits.max_memory_bytes, 64 << 20);
        assert_eq!(limits.max_state_bytes, Limits::default().max_state_bytes);
        assert_eq!(limits.max_log_bytes, 1024);
        let greedy = JobLimits {
            state_bytes: Some(1 << 40),
            ..JobLimits::default()
        };
        let err = job_limits(&Limits::default(), &LimitMaximums::default(), &greedy).unwrap_err();
        assert_eq!(err.setting, "state_limit");
        assert!(
            err.to_string().contains("over this cluster's maximum"),
            "{err}"
        );
    }
}

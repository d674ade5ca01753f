//! What every connector to an external system needs: retries with backoff while a server
//! cannot be reached, and a small async runtime of its own for a client that is async, driven
//! from a task's mailbox thread. (Secrets, which the job describes, are `job::Secret`.)

use std::time::{Duration, Instant};

/// Tries `attempt` until it succeeds, fails for good, or `timeout` has passed, sleeping
/// 100 ms, 200 ms, ... up to 2 s between tries. `attempt` says whether an error is worth
/// another try (a refused connection is; a wrong password is not).
pub async fn retry<T, E>(
    timeout: Duration,
    mut attempt: impl AsyncFnMut() -> Result<T, (E, Retry)>,
) -> Result<T, RetryError<E>> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(100);
    let mut tries = 0;
    loop {
        tries += 1;
        match attempt().await {
            Ok(value) => return Ok(value),
            Err((error, Retry::No)) => return Err(RetryError { error, tries: None }),
            Err((error, Retry::Yes)) => {
                let left = timeout.saturating_sub(started.elapsed());
                if left.is_zero() {
                    return Err(RetryError {
                        error,
                        tries: Some((tries, started.elapsed())),
                    });
                }
                tokio::time::sleep(pause.min(left)).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// Whether an error may go away by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    Yes,
    No,
}

/// The last error of [`retry`], and how long it kept trying (`None`: the error was final).
#[derive(Debug)]
pub struct RetryError<E> {
    pub error: E,
    pub tries: Option<(u32, Duration)>,
}

impl<E: std::fmt::Display> std::fmt::Display for RetryError<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.tries {
            Some((tries, waited)) => write!(
                f,
                "{} (gave up after {tries} tries in {:.1} s)",
                self.error,
                waited.as_secs_f64()
            ),
            None => write!(f, "{}", self.error),
        }
    }
}

/// A single-threaded runtime for one connector instance. A task's mailbox thread drives it
/// with `block_on` only while the connector works, which is when its client must make
/// progress; nothing runs in the background between calls.
pub fn connector_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
}

/// A runtime with one worker thread of its own: for a client whose connection must answer its
/// server between calls (NATS pings an idle client and drops one that does not answer).
pub fn background_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_io()
        .enable_time()
        .build()
}

/// Runs the future `work` makes on a runtime of its own on a thread of its own: for the
/// JobMaster's calls (recovering a sink's transactions), which may come from inside another
/// runtime, where `block_on` is not allowed. The future is made on that thread, so it need not
/// be `Send`.
pub fn on_own_runtime<T: Send, F: std::future::Future<Output = T>>(
    work: impl FnOnce() -> F + Send,
) -> std::io::Result<T> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| connector_runtime().map(|rt| rt.block_on(work())))
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_gives_up_after_its_timeout_and_at_once_on_a_final_error() {
        let rt = connector_runtime().unwrap();
        let mut calls = 0;
        let err = rt
            .block_on(retry(Duration::from_millis(250), async || {
                calls += 1;
                Err::<(), _>(("refused", Retry::Yes))
            }))
            .unwrap_err();
        let (tries, waited) = err.tries.expect("retried");
        assert!(tries >= 2 && tries == calls, "{tries} {calls}");
        assert!(waited >= Duration::from_millis(250));
        assert!(err.to_string().starts_with("refused (gave up after"));
        let err = rt
            .block_on(retry(Duration::from_secs(60), async || {
                Err::<(), _>(("bad password", Retry::No))
            }))
            .unwrap_err();
        assert!(err.tries.is_none());
    }
}

//! Connecting to NATS, retried while the servers cannot be reached.

use std::time::Duration;

use crate::connectors::external::{Retry, retry};
use crate::job::Secret;

/// A client of `url`, as `user` with `password` if given; tried again with backoff for up to
/// `timeout` while no server answers.
pub async fn connect(
    url: &str,
    user: Option<&str>,
    password: Option<&Secret>,
    timeout: Duration,
) -> Result<async_nats::Client, String> {
    let password = password
        .map(|s| s.read().map_err(|e| format!("the password: {e}")))
        .transpose()?;
    retry(timeout, async || {
        let mut options = async_nats::ConnectOptions::new()
            .connection_timeout(timeout.min(Duration::from_secs(5)))
            .max_reconnects(Some(10));
        if let Some(user) = user {
            options =
                options.user_and_password(user.to_string(), password.clone().unwrap_or_default());
        }
        match options.connect(url).await {
            Ok(client) => Ok(client),
            Err(e) => {
                let again = match e.kind() {
                    async_nats::ConnectErrorKind::AuthorizationViolation
                    | async_nats::ConnectErrorKind::ServerParse => Retry::No,
                    _ => Retry::Yes,
                };
                Err((e.to_string(), again))
            }
        }
    })
    .await
    .map_err(|e| format!("cannot connect to NATS at {url}: {e}"))
}

/// A JetStream context on a client of `url`, made inside the runtime that drives it (the
/// context starts a task of its own).
pub async fn jetstream_of(
    url: &str,
    user: Option<&str>,
    password: Option<&Secret>,
    timeout: Duration,
) -> Result<async_nats::jetstream::Context, String> {
    let client = connect(url, user, password, timeout).await?;
    Ok(async_nats::jetstream::new(client))
}

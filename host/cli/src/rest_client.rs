//! A small HTTP/1.1 client for the JobManager's REST endpoint: one request per connection,
//! JSON answers. Enough for the CLI's few calls, without a client library and its TLS stack.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// The API token every request presents (`--token`, or `WEIR_TOKEN`).
static TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Sets the token requests present; the first call wins.
pub fn set_token(token: String) {
    let _ = TOKEN.set(token);
}

/// `method path` with `body`; the status code and the JSON answer.
pub fn request(
    address: &str,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> Result<(u16, serde_json::Value)> {
    let mut stream = TcpStream::connect(address)
        .with_context(|| format!("cannot reach the JobManager's REST endpoint at {address}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(300)))?;
    let body = body.unwrap_or_default();
    let authorization = TOKEN
        .get()
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\
         {authorization}Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )?;
    stream.write_all(body)?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .with_context(|| format!("no answer from {address}"))?;
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("not an HTTP answer")?;
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let mut payload = response[split + 4..].to_vec();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("not an HTTP status line: {head}"))?;
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        payload = dechunk(&payload)?;
    }
    if status == 401 {
        bail!(
            "the JobManager at {address} refused the call (401): it serves tenants; give a \
             token with --token or WEIR_TOKEN"
        );
    }
    let json = if payload.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&payload).with_context(|| {
            format!(
                "the JobManager answered {status} with what is not JSON: {}",
                String::from_utf8_lossy(&payload)
            )
        })?
    };
    Ok((status, json))
}

fn dechunk(mut bytes: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = bytes
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("a chunk without its size line")?;
        let size = usize::from_str_radix(String::from_utf8_lossy(&bytes[..line_end]).trim(), 16)
            .context("a chunk size that is not hex")?;
        bytes = &bytes[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if bytes.len() < size + 2 {
            bail!("a chunk cut short");
        }
        out.extend_from_slice(&bytes[..size]);
        bytes = &bytes[size + 2..];
    }
}

/// The first error message of a REST error answer.
pub fn error_of(json: &serde_json::Value) -> String {
    json["errors"][0]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| json.to_string())
}

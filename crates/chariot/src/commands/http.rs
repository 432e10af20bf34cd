//! The HTTP API's client side, for the subcommands that use it (`record`, `cluster`).

use std::fmt;
use std::time::Duration;

use anyhow::{anyhow, Context};
use serde_json::Value;

use super::Connection;

/// No answer within `--timeout`: worth telling apart, because a `post --wait` that times
/// out has not failed, it is still waiting.
#[derive(Debug)]
pub struct NoAnswer {
    base: String,
    timeout: Duration,
}

impl fmt::Display for NoAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no answer from the HTTP API at {} within {:?} (see --timeout)",
            self.base, self.timeout
        )
    }
}

impl std::error::Error for NoAnswer {}

fn is_timeout(e: &ureq::Transport) -> bool {
    std::error::Error::source(e)
        .and_then(|cause| cause.downcast_ref::<std::io::Error>())
        .is_some_and(|io| {
            matches!(
                io.kind(),
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
            )
        })
}

/// The node's HTTP API at `--http`.
pub struct Api {
    agent: ureq::Agent,
    /// `http://HOST:PORT`, without a trailing slash.
    base: String,
    timeout: Duration,
}

/// What the server answered: an HTTP status and a JSON body.
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl Answer {
    /// The body of a success, or the server's error.
    pub fn ok(self) -> anyhow::Result<Value> {
        if self.status == 200 {
            Ok(self.body)
        } else {
            Err(self.error())
        }
    }

    /// The stable error code of an error answer.
    pub fn code(&self) -> Option<&str> {
        if self.status == 200 {
            return None;
        }
        self.body.get("code").and_then(Value::as_str)
    }

    /// The server's error as one line: its message, the HTTP status and the code.
    pub fn error(&self) -> anyhow::Error {
        let message = self.body.get("error").and_then(Value::as_str);
        match (message, self.code()) {
            (Some(message), Some(code)) => anyhow!("{message} (HTTP {}, {code})", self.status),
            _ => anyhow!("HTTP {}: {}", self.status, self.body),
        }
    }
}

impl Api {
    /// A client of `--http`, with `--timeout` on connecting and on each whole request.
    pub fn new(conn: &Connection) -> Api {
        let addr = conn.http.trim_end_matches('/');
        let base = if addr.contains("://") {
            addr.to_owned()
        } else {
            format!("http://{addr}")
        };
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(conn.timeout)
            .timeout(conn.timeout)
            .build();
        Api {
            agent,
            base,
            timeout: conn.timeout,
        }
    }

    pub async fn get(
        &self,
        path: &str,
        query: Vec<(&'static str, String)>,
    ) -> anyhow::Result<Answer> {
        self.request("GET", path, query, None).await
    }

    pub async fn post(
        &self,
        path: &str,
        query: Vec<(&'static str, String)>,
        body: Value,
    ) -> anyhow::Result<Answer> {
        self.request("POST", path, query, Some(body)).await
    }

    /// Sends a DELETE of `path`.
    pub async fn delete(&self, path: &str) -> anyhow::Result<Answer> {
        self.request("DELETE", path, Vec::new(), None).await
    }

    /// Sends one request; any answer with a JSON body is an `Answer`, whatever its status
    /// (errors are JSON too); no answer, or one that is not JSON, is an error.
    async fn request(
        &self,
        method: &'static str,
        path: &str,
        query: Vec<(&'static str, String)>,
        body: Option<Value>,
    ) -> anyhow::Result<Answer> {
        let agent = self.agent.clone();
        let base = self.base.clone();
        let timeout = self.timeout;
        let url = format!("{base}{path}");
        tokio::task::spawn_blocking(move || {
            let mut request = agent.request(method, &url);
            for (key, value) in &query {
                request = request.query(key, value);
            }
            let sent = match body {
                Some(body) => request.send_json(body),
                None => request.call(),
            };
            let response = match sent {
                Ok(response) | Err(ureq::Error::Status(_, response)) => response,
                Err(ureq::Error::Transport(e)) if is_timeout(&e) => {
                    return Err(NoAnswer { base, timeout }.into())
                }
                Err(ureq::Error::Transport(e)) => {
                    return Err(anyhow!(
                        "cannot reach the HTTP API at {base}: {e} \
                         (is a server running there? set --http or CHARIOT_HTTP)"
                    ))
                }
            };
            let status = response.status();
            let body = response.into_json::<Value>().with_context(|| {
                format!("the answer to {method} {url} (HTTP {status}) is not JSON; is {base} a Chariot HTTP API?")
            })?;
            Ok(Answer { status, body })
        })
        .await
        .context("the HTTP request's thread failed")?
    }
}

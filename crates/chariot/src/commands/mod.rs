//! The client subcommands, one file each, and the options they share.

pub mod cluster;
pub mod consume;
pub mod fetch;
pub mod http;
pub mod log;
pub mod publish;
pub mod read;
pub mod record;
pub mod repair;

use std::time::Duration;

use chariot_client::Client;

use crate::output::Output;

/// Options of every client subcommand (global: accepted before or after the
/// subcommand's name).
#[derive(Debug, Clone, clap::Args)]
pub struct Connection {
    /// Server address (native protocol port).
    #[arg(
        long,
        global = true,
        env = "CHARIOT_ADDR",
        default_value = "127.0.0.1:7878",
        value_name = "HOST:PORT"
    )]
    pub addr: String,
    /// Address of the HTTP API, for `chariot record` (the Chariots causal log); an
    /// `http://` URL is accepted too.
    #[arg(
        long,
        global = true,
        env = "CHARIOT_HTTP",
        default_value = "127.0.0.1:8080",
        value_name = "HOST:PORT"
    )]
    pub http: String,
    /// Machine-readable output (JSON); see the end of --help.
    #[arg(long, global = true)]
    pub json: bool,
    /// Give up on a connection attempt or an answer after this many seconds.
    #[arg(long, global = true, default_value = "30", value_name = "SECS", value_parser = parse_secs)]
    pub timeout: Duration,
}

impl Connection {
    /// A client connected to `--addr`, with `--timeout` on the connection attempt and on
    /// every request.
    pub async fn connect(&self) -> anyhow::Result<Client> {
        let client = tokio::time::timeout(self.timeout, Client::connect(self.addr.as_str()))
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "cannot connect to {}: no answer within {:?}",
                    self.addr,
                    self.timeout
                )
            })?
            .map_err(|e| {
                anyhow::anyhow!("{e} (is a server running there? set --addr or CHARIOT_ADDR)")
            })?;
        Ok(client.with_timeout(Some(self.timeout)))
    }

    /// Where results go, in the format `--json` chose.
    pub fn output(&self) -> Output {
        Output::new(self.json)
    }
}

/// Parses a number of seconds (fractions allowed) into a duration.
pub fn parse_secs(s: &str) -> Result<Duration, String> {
    let secs: f64 = s.parse().map_err(|e| format!("{e}"))?;
    Duration::try_from_secs_f64(secs)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("{s} is not a positive number of seconds"))
}

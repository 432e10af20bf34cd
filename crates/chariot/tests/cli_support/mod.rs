//! Runs the real `chariot` binary: one server on free ports, and CLI commands against it.
#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};

use serde_json::Value;
use tempfile::TempDir;

/// Path of the binary under test.
pub const CHARIOT: &str = env!("CARGO_BIN_EXE_chariot");

/// A `chariot serve` child on a fresh data directory; killed when dropped.
pub struct Server {
    child: Child,
    /// Native protocol address, from the ready line.
    pub tcp: SocketAddr,
    /// HTTP API address, from the ready line.
    pub http: SocketAddr,
    /// Chariots record port address, from the ready line.
    pub chariots: SocketAddr,
    _data: TempDir,
}

impl Server {
    /// Starts a server on port 0 and waits for its ready line on stdout.
    pub fn start() -> Server {
        Server::start_with(&[])
    }

    /// Starts a server on port 0 with extra `serve` flags.
    pub fn start_with(extra: &[&str]) -> Server {
        let data = tempfile::tempdir().expect("temp dir");
        let mut child = Command::new(CHARIOT)
            .arg("serve")
            .arg("--data-dir")
            .arg(data.path())
            .args(["--tcp-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
            .args(["--chariots-addr", "127.0.0.1:0"])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn chariot serve");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the ready line");
        // `chariot listening tcp=<addr> http=<addr> chariots=<addr>`
        let addr = |key: &str| -> SocketAddr {
            line.split_whitespace()
                .find_map(|word| word.strip_prefix(key))
                .unwrap_or_else(|| panic!("no {key} in the ready line {line:?}"))
                .parse()
                .unwrap_or_else(|e| panic!("{key} in {line:?}: {e}"))
        };
        Server {
            child,
            tcp: addr("tcp="),
            http: addr("http="),
            chariots: addr("chariots="),
            _data: data,
        }
    }

    /// Runs `chariot --addr <this server> --http <this server> ARGS`.
    pub fn run(&self, args: &[&str]) -> Run {
        self.run_with_stdin(args, None)
    }

    /// Runs `chariot --addr <this server> --http <this server> ARGS` with `input` on
    /// stdin.
    pub fn run_with_stdin(&self, args: &[&str], input: Option<&[u8]>) -> Run {
        run(self.command(args), input)
    }

    /// The command line, not started, for callers that manage the process themselves.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(CHARIOT);
        command
            .args(["--addr", &self.tcp.to_string(), "--timeout", "10"])
            .args(["--http", &self.http.to_string()])
            .args(args)
            .env_remove("CHARIOT_ADDR")
            .env_remove("CHARIOT_HTTP")
            .env("RUST_LOG", "warn");
        command
    }

    /// Runs a command that must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        self.run(args).success().stdout
    }

    /// Runs a `--json` command that must succeed; returns its parsed stdout.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut with_json = args.to_vec();
        with_json.push("--json");
        self.run(&with_json).success().json()
    }

    /// Creates `log` with `partitions` partitions.
    pub fn create_log(&self, log: &str, partitions: u8) {
        self.ok(&[
            "log",
            "create",
            log,
            "--partitions",
            &partitions.to_string(),
        ]);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A finished CLI invocation.
#[derive(Debug)]
pub struct Run {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Asserts exit status 0.
    pub fn success(self) -> Run {
        assert!(self.status.success(), "command failed: {self:?}");
        self
    }

    /// Asserts a failure with the given exit code and exactly one `error: ` line on
    /// stderr; returns that line.
    pub fn failure(self, code: i32) -> String {
        assert_eq!(self.status.code(), Some(code), "{self:?}");
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "expected one stderr line: {self:?}");
        assert!(lines[0].starts_with("error: "), "{self:?}");
        lines[0].to_owned()
    }

    /// Stdout as one JSON value.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON value ({e}): {:?}", self.stdout))
    }

    /// Stdout as JSON Lines.
    pub fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|line| serde_json::from_str(line).expect("a JSON line"))
            .collect()
    }
}

/// Runs `command` to completion, with `input` on stdin (else stdin is empty).
pub fn run(mut command: Command, input: Option<&[u8]>) -> Run {
    command
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("spawn chariot");
    if let Some(input) = input {
        let mut stdin = child.stdin.take().expect("piped stdin");
        stdin.write_all(input).expect("write stdin");
    }
    let output = child.wait_with_output().expect("wait for chariot");
    Run {
        status: output.status,
        stdout: String::from_utf8(output.stdout).expect("UTF-8 stdout"),
        stderr: String::from_utf8(output.stderr).expect("UTF-8 stderr"),
    }
}

//! Starts the real `chariot` binary on free ports and speaks raw bytes to it.
#![allow(dead_code, missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running `chariot serve` child process.
pub struct Node {
    pub child: Child,
    pub tcp: SocketAddr,
    pub http: SocketAddr,
    pub chariots: SocketAddr,
    pub data_dir: PathBuf,
}

/// `chariot serve` on `data_dir`, every port free on 127.0.0.1, with `extra` flags; not
/// started, its environment and streams left to the caller.
pub fn serve_command(data_dir: &Path, extra: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_chariot"));
    command
        .arg("serve")
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--tcp-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .args(["--chariots-addr", "127.0.0.1:0"])
        .args(extra);
    command
}

impl Node {
    /// Starts a node on `data_dir` with extra flags, waiting for its ready line.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Node {
        let mut child = serve_command(data_dir, extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = |key: &str| -> SocketAddr {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .unwrap_or_else(|| panic!("no {key} in ready line {line:?}"))
                .parse()
                .unwrap()
        };
        Node {
            tcp: addr("tcp="),
            http: addr("http="),
            chariots: addr("chariots="),
            child,
            data_dir: data_dir.to_path_buf(),
        }
    }

    /// Sends SIGTERM and waits; returns the exit status code.
    pub fn terminate(mut self) -> Option<i32> {
        // SAFETY-free: libc::kill is the only way to send SIGTERM from std-only code.
        let pid = self.child.id() as i32;
        unsafe_kill(pid, libc::SIGTERM);
        let status = self.child.wait().unwrap();
        status.code()
    }

    /// SIGKILL, no chance to flush anything.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    pub fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(self.tcp).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_nodelay(true).unwrap();
        s
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[allow(unsafe_code)]
fn unsafe_kill(pid: i32, sig: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(pid, sig);
    }
}

pub fn name(n: &str) -> Vec<u8> {
    let mut v = vec![n.len() as u8];
    v.extend_from_slice(n.as_bytes());
    v
}

pub fn create(log: &str, partitions: u8) -> Vec<u8> {
    let mut v = vec![0, partitions];
    v.extend(name(log));
    v
}

pub fn publish(log: &str, partition: u8, data: &[u8]) -> Vec<u8> {
    let mut v = vec![1, partition];
    v.extend(name(log));
    v.extend_from_slice(&(data.len() as u64).to_be_bytes());
    v.extend_from_slice(data);
    v
}

pub fn fetch(log: &str, partition: u8, group: &str) -> Vec<u8> {
    let mut v = vec![2, partition];
    v.extend(name(log));
    v.extend(name(group));
    v
}

pub fn ack(log: &str, partition: u8, group: &str) -> Vec<u8> {
    let mut v = vec![3, partition];
    v.extend(name(log));
    v.extend(name(group));
    v
}

/// A Rog response: `Ok(None)` for the bare success byte, `Ok(Some(payload))` for a
/// fetch, `Err(message)` for an error.
pub type RogReply = Result<Option<Vec<u8>>, String>;

/// Reads one Rog response; `with_payload` is true for fetch.
pub fn read_reply(s: &mut TcpStream, with_payload: bool) -> RogReply {
    let mut status = [0u8; 1];
    s.read_exact(&mut status).unwrap();
    if status[0] == 0 && !with_payload {
        return Ok(None);
    }
    let mut len = [0u8; 8];
    s.read_exact(&mut len).unwrap();
    let mut body = vec![0u8; u64::from_be_bytes(len) as usize];
    s.read_exact(&mut body).unwrap();
    match status[0] {
        0 => Ok(Some(body)),
        _ => Err(String::from_utf8(body).unwrap()),
    }
}

/// One request on its own connection, as Rog's clients do.
pub fn call(node: &Node, request: &[u8], with_payload: bool) -> RogReply {
    let mut s = node.connect();
    s.write_all(request).unwrap();
    read_reply(&mut s, with_payload)
}

/// FNV-1a 64 of `k:v`, as gochariots clients compute prehashes (written out here, not
/// taken from the server's code, so the tests check the server against the definition).
pub fn hash(k: &str, v: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in format!("{k}:{v}").bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A record-port frame: u32 length (of kind and payload), kind, payload.
pub fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = ((payload.len() + 1) as u32).to_be_bytes().to_vec();
    f.push(kind);
    f.extend_from_slice(payload);
    f
}

/// Sends one record-port frame on `s` and reads its `'a'` answer as JSON.
pub fn record_port_call(s: &mut TcpStream, kind: u8, payload: &[u8]) -> serde_json::Value {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&frame(kind, payload)).unwrap();
    let mut head = [0u8; 5];
    s.read_exact(&mut head).unwrap();
    assert_eq!(head[4], b'a');
    let mut body = vec![0u8; u32::from_be_bytes(head[..4].try_into().unwrap()) as usize - 1];
    s.read_exact(&mut body).unwrap();
    serde_json::from_slice(&body).unwrap()
}

/// POST a JSON body; (status, JSON answer), whatever the status.
pub fn post(node: &Node, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    match ureq::post(&node.url(path)).send_json(body) {
        Ok(r) => (r.status(), r.into_json().unwrap()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_json().unwrap()),
        Err(e) => panic!("{e}"),
    }
}

/// GET; (status, JSON answer), whatever the status.
pub fn get(node: &Node, path: &str) -> (u16, serde_json::Value) {
    match ureq::get(&node.url(path)).call() {
        Ok(r) => (r.status(), r.into_json().unwrap()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_json().unwrap()),
        Err(e) => panic!("{e}"),
    }
}

/// Polls `f` for up to 5 s.
pub fn wait_until(mut f: impl FnMut() -> bool) {
    for _ in 0..200 {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("condition never held");
}

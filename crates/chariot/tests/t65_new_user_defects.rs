//! Defects found trying Chariot as a new user would (issue 9, §5), each against the real
//! binary: a restart while the previous server still holds the data directory, client
//! options given to `serve`, errors that repeat their cause, partition limits, and the
//! shape of HTTP replies (405 bodies, `limit`, trailing newlines).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod server_support;

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use server_support::{get, post, serve_command, Node};

const CHARIOT: &str = env!("CARGO_BIN_EXE_chariot");

/// `chariot serve` on `data` with free ports and `extra` flags, not waited for.
fn serve(data: &Path, extra: &[&str]) -> Command {
    let mut c = serve_command(data, extra);
    c.env("RUST_LOG", "info")
        .env_remove("CHARIOT_LOCK_WAIT_MS")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// Every `LOCK` file under `dir`.
fn lock_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            lock_files(&path, out);
        } else if path.file_name().is_some_and(|n| n == "LOCK") {
            out.push(path);
        }
    }
}

/// Takes every partition's lock of a stopped server's data directory, as a server that
/// has not exited yet holds them.
fn hold_locks(data: &Path) -> Vec<File> {
    let mut paths = Vec::new();
    lock_files(data, &mut paths);
    assert!(!paths.is_empty(), "no LOCK under {}", data.display());
    paths
        .iter()
        .map(|p| {
            let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
            f.try_lock().unwrap();
            f
        })
        .collect()
}

/// A data directory with a log in it, its server stopped.
fn used_data_dir() -> tempfile::TempDir {
    let data = tempfile::tempdir().unwrap();
    let node = Node::start(data.path(), &[]);
    let (status, _) = post(
        &node,
        "/logs",
        serde_json::json!({"name": "orders", "partitions": 2}),
    );
    assert_eq!(status, 201);
    assert_eq!(node.terminate(), Some(0));
    data
}

/// Lines of a child's stream, sent as they come.
fn lines_of(stream: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Waits (up to 60 s) for a line containing `needle`.
fn wait_for_line(rx: &mpsc::Receiver<String>, needle: &str) -> String {
    loop {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) if line.contains(needle) => return line,
            Ok(_) => {}
            Err(e) => panic!("no line with {needle:?}: {e}"),
        }
    }
}

#[test]
fn a_restart_waits_for_the_lock_of_a_server_still_shutting_down() {
    let data = used_data_dir();
    let held = hold_locks(data.path());
    let mut child = serve(data.path(), &["--lock-wait-ms", "60000"])
        .spawn()
        .unwrap();
    let stdout = lines_of(child.stdout.take().unwrap());
    let stderr = lines_of(child.stderr.take().unwrap());
    // It says that it waits, and for what...
    let warning = wait_for_line(&stderr, "waiting for it");
    assert!(warning.contains("LOCK"), "{warning}");
    assert!(
        stdout.try_recv().is_err(),
        "it must not serve while the lock is held"
    );
    // ...and starts as soon as the other process lets go.
    drop(held);
    let ready = wait_for_line(&stdout, "chariot listening");
    assert!(ready.contains("http="), "{ready}");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn a_restart_fails_after_the_bounded_wait_naming_the_directory_and_the_flag() {
    let data = used_data_dir();
    let _held = hold_locks(data.path());
    let out = serve(data.path(), &["--lock-wait-ms", "300"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    let error = stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line in {stderr}"));
    let dir = data.path().display().to_string();
    assert!(error.contains(&dir), "{error}");
    assert!(error.contains("locked by another process"), "{error}");
    assert!(error.contains("shutting down"), "{error}");
    assert!(error.contains("--lock-wait-ms"), "{error}");
    assert!(stderr.contains("waiting for it"), "{stderr}");
}

#[test]
fn sigterm_then_an_immediate_restart_on_the_same_directory_starts() {
    let data = used_data_dir();
    for _ in 0..3 {
        let node = Node::start(data.path(), &[]);
        let pid = node.child.id();
        // SIGTERM and, without waiting for the exit, the next server.
        Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        let mut next = serve(data.path(), &[]).spawn().unwrap();
        let stdout = lines_of(next.stdout.take().unwrap());
        wait_for_line(&stdout, "chariot listening");
        assert_eq!(node.terminate(), Some(0));
        next.kill().unwrap();
        next.wait().unwrap();
    }
}

#[test]
fn serve_refuses_the_client_options_by_name() {
    let data = tempfile::tempdir().unwrap();
    let cases: [(&[&str], &[&str], &str); 5] = [
        (&["--addr", "127.0.0.1:1"], &[], "--tcp-addr"),
        (&[], &["--addr", "127.0.0.1:1"], "--tcp-addr"),
        (&["--http", "127.0.0.1:1"], &[], "--http-addr"),
        (&["--json"], &[], "RUST_LOG"),
        (&[], &["--timeout", "3"], "serve --help"),
    ];
    for (after, before, fix) in cases {
        let out = Command::new(CHARIOT)
            .args(before)
            .arg("serve")
            .arg("--data-dir")
            .arg(data.path())
            .args(after)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "{before:?} serve {after:?}: {out:?}"
        );
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(stderr.starts_with("error: --"), "{stderr}");
        assert!(stderr.contains("not of `chariot serve`"), "{stderr}");
        assert!(stderr.contains(fix), "{stderr}");
    }
    // Nothing was started, nothing written.
    assert_eq!(std::fs::read_dir(data.path()).unwrap().count(), 0);
    // `serve --help` lists only serve's options.
    let help = Command::new(CHARIOT)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    assert!(help.contains("--tcp-addr"), "{help}");
    assert!(help.contains("--lock-wait-ms"), "{help}");
    for client_only in ["--addr ", "--http ", "--json", "--timeout"] {
        assert!(!help.contains(client_only), "{client_only} in {help}");
    }
    // A client command still takes them, before and after its name.
    let cli = Command::new(CHARIOT)
        .args([
            "--addr",
            "127.0.0.1:1",
            "log",
            "list",
            "--timeout",
            "1",
            "--json",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8(cli.stderr).unwrap();
    assert!(stderr.contains("127.0.0.1:1"), "{stderr}");
}

#[test]
fn a_port_in_use_is_said_once_with_the_flag_that_fixes_it() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().to_string();
    let data = tempfile::tempdir().unwrap();
    for flag in ["--tcp-addr", "--http-addr", "--chariots-addr"] {
        let mut args = vec![
            "serve",
            "--tcp-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
            "--chariots-addr",
            "127.0.0.1:0",
        ];
        let at = args.iter().position(|a| *a == flag).unwrap();
        args[at + 1] = &port;
        let out = Command::new(CHARIOT)
            .args(&args)
            .arg("--data-dir")
            .arg(data.path())
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        let error = stderr.lines().find(|l| l.starts_with("error: ")).unwrap();
        assert_eq!(
            error.matches("Address already in use").count(),
            1,
            "{error}"
        );
        assert!(error.contains(&port), "{error}");
        assert!(error.contains(flag), "{error}");
    }
}

#[test]
fn partition_counts_are_one_to_1024_over_every_interface() {
    let data = tempfile::tempdir().unwrap();
    let node = Node::start(data.path(), &[]);
    let cli = |args: &[&str]| {
        Command::new(CHARIOT)
            .args(["--addr", &node.tcp.to_string(), "--timeout", "10"])
            .args(args)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    };
    // The CLI: 0 and 1025 are refused before anything is sent, in the server's words.
    for (bad, words) in [("0", "at least 1"), ("1025", "at most 1024, got 1025")] {
        let out = cli(&["log", "create", "bad", "--partitions", bad]);
        assert_eq!(out.status.code(), Some(1), "{bad}: {out:?}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(stderr.contains(words), "{stderr}");
        assert!(stderr.contains("--partitions takes 1 to 1024"), "{stderr}");
    }
    // Above Rog's one byte, through the extension.
    let out = cli(&["log", "create", "wide", "--partitions", "300"]);
    assert!(out.status.success(), "{out:?}");
    let out = cli(&["--json", "log", "describe", "wide"]);
    let described: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(described["partitions"].as_array().unwrap().len(), 300);
    // HTTP: the same bounds, and a message that says which one.
    let (status, body) = post(
        &node,
        "/logs",
        serde_json::json!({"name": "big", "partitions": 1025}),
    );
    assert_eq!(status, 400);
    assert_eq!(body["code"], "invalid_partition_count");
    assert_eq!(
        body["error"],
        "Number of partitions must be at most 1024, got 1025"
    );
    let (status, body) = post(
        &node,
        "/logs",
        serde_json::json!({"name": "none", "partitions": 0}),
    );
    assert_eq!(status, 400);
    assert_eq!(body["error"], "Number of partitions must be at least 1");
    let (status, _) = get(&node, "/logs/big");
    assert_eq!(status, 404);
    // The native extension refuses 1025 with the coded error.
    let mut s = node.connect();
    let mut req = vec![0x15];
    let body = [&[3u8][..], b"big", &1025u32.to_be_bytes()].concat();
    req.extend_from_slice(&(body.len() as u32).to_be_bytes());
    req.extend_from_slice(&body);
    s.write_all(&req).unwrap();
    let mut head = [0u8; 9];
    s.read_exact(&mut head).unwrap();
    assert_eq!(head[0], 1, "an error status");
    let mut rest = vec![0u8; u64::from_be_bytes(head[1..9].try_into().unwrap()) as usize];
    s.read_exact(&mut rest).unwrap();
    assert_eq!(u16::from_be_bytes([rest[0], rest[1]]), 3);
    assert!(String::from_utf8_lossy(&rest[2..]).contains("at most 1024"));
}

/// A raw HTTP/1.1 exchange, so status, headers and the exact body bytes are visible.
fn raw_http(node: &Node, request: &str) -> (String, Vec<u8>) {
    let mut s = std::net::TcpStream::connect(node.http).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let split = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header block");
    let head = String::from_utf8(all[..split].to_vec()).unwrap();
    (head, all[split + 4..].to_vec())
}

#[test]
fn http_errors_and_replies_are_json_lines() {
    let data = tempfile::tempdir().unwrap();
    let node = Node::start(data.path(), &[]);
    let (status, _) = post(
        &node,
        "/logs",
        serde_json::json!({"name": "orders", "partitions": 1}),
    );
    assert_eq!(status, 201);
    // 405: a JSON error body, and the Allow header kept.
    let (head, body) = raw_http(
        &node,
        "PUT /logs HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
    );
    assert!(head.starts_with("HTTP/1.1 405"), "{head}");
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains("allow: get,head,post"), "{head}");
    assert!(lower.contains("content-type: application/json"), "{head}");
    let err: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(err["code"], "method_not_allowed");
    assert!(body.ends_with(b"}\n"), "{body:?}");
    // `limit` above its documented maximum is refused, not silently lowered.
    let (status, err) = get(&node, "/logs/orders/partitions/0/records?limit=10001");
    assert_eq!(status, 400);
    assert!(
        err["error"].as_str().unwrap().contains("at most 10000"),
        "{err}"
    );
    let (status, _) = get(&node, "/logs/orders/partitions/0/records?limit=10000");
    assert_eq!(status, 200);
    // Every reply ends its line: successes, errors, the seed's and Chariots' endpoints.
    for path in [
        "/health",
        "/logs",
        "/logs/orders",
        "/logs/missing",
        "/get-all",
        "/cluster",
        "/records/waiting",
        "/no/such/endpoint",
    ] {
        let (head, body) = raw_http(
            &node,
            &format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"),
        );
        assert!(body.ends_with(b"\n"), "{path}: {head} {body:?}");
        assert!(!body.ends_with(b"\n\n"), "{path}: {body:?}");
        serde_json::from_slice::<serde_json::Value>(&body)
            .unwrap_or_else(|e| panic!("{path}: {e}"));
    }
}

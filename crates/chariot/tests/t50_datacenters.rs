//! Two datacenters as two real processes, linked through proxies the test can cut:
//! records posted on both sides with cross-datacenter dependencies end up in both logs,
//! each log respecting every dependency and each origin's TOId order, with nothing lost
//! or duplicated across a cut link and a kill -9 of one side.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

mod server_support;

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use server_support::*;

/// A TCP proxy whose link can be cut (every connection closed, new ones refused) and
/// whose target can move (a restarted node listens on a new port).
struct Proxy {
    addr: SocketAddr,
    target: Arc<Mutex<SocketAddr>>,
    cut: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let target = Arc::new(Mutex::new(target));
        let cut = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (t, c, cs) = (Arc::clone(&target), Arc::clone(&cut), Arc::clone(&conns));
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if c.load(Ordering::SeqCst) {
                    continue; // dropped: the link is cut
                }
                let to = *t.lock().unwrap();
                let Ok(server) = TcpStream::connect(to) else {
                    continue;
                };
                cs.lock().unwrap().push(client.try_clone().unwrap());
                cs.lock().unwrap().push(server.try_clone().unwrap());
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16384];
                        while let Ok(n) = from.read(&mut buf) {
                            if n == 0 || to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Proxy {
            addr,
            target,
            cut,
            conns,
        }
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }

    fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }

    fn retarget(&self, to: SocketAddr) {
        *self.target.lock().unwrap() = to;
    }
}

/// POST that must succeed; its JSON answer.
fn post_ok(node: &Node, path: &str, body: Value) -> Value {
    let (code, answer) = post(node, path, body);
    assert!((200..300).contains(&code), "{code}: {answer}");
    answer
}

/// One shared-log record: (origin dc, toid, seed, tags, prehash).
type Entry = (u64, u64, u64, BTreeMap<String, String>, Vec<u64>);

fn shared_log(node: &Node) -> Vec<Entry> {
    let r = ureq::get(&node.url("/logs/chariots/partitions/0/records?offset=0&limit=10000")).call();
    let body: Value = match r {
        Ok(r) => r.into_json().unwrap(),
        Err(_) => return Vec::new(),
    };
    body["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let meta: Value = serde_json::from_str(r["value"].as_str().unwrap()).unwrap();
            let tags: BTreeMap<String, String> =
                serde_json::from_value(r["headers"].clone()).unwrap();
            let prehash: Vec<u64> = serde_json::from_value(meta["prehash"].clone()).unwrap();
            (
                meta["origin_dc"].as_u64().unwrap(),
                meta["toid"].as_u64().unwrap(),
                meta["seed"].as_u64().unwrap(),
                tags,
                prehash,
            )
        })
        .collect()
}

/// Every dependency precedes its dependant; each origin's TOIds are 0, 1, 2, … in order.
fn check_order(log: &[Entry]) {
    let mut present: HashSet<(u64, u64)> = HashSet::new();
    let mut next_toid: BTreeMap<u64, u64> = BTreeMap::new();
    for (dc, toid, seed, tags, prehash) in log {
        for h in prehash {
            assert!(
                present.contains(&(*seed, *h)),
                "dependency {h} of seed {seed} not before"
            );
        }
        let expected = next_toid.entry(*dc).or_insert(0);
        assert_eq!(*toid, *expected, "origin {dc} out of TOId order");
        *expected += 1;
        for (k, v) in tags {
            present.insert((*seed, hash(k, v)));
        }
    }
}

fn identity(log: &[Entry]) -> Vec<(u64, u64)> {
    let mut v: Vec<(u64, u64)> = log.iter().map(|e| (e.0, e.1)).collect();
    v.sort();
    v
}

fn converge(a: &Node, b: &Node, total: usize) {
    for _ in 0..400 {
        let (la, lb) = (shared_log(a), shared_log(b));
        if la.len() == total && lb.len() == total {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "no convergence: {} and {} of {total} records",
        shared_log(a).len(),
        shared_log(b).len()
    );
}

#[test]
fn two_datacenters_converge_through_cuts_and_a_kill9() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Node::start(da.path(), &["--dc-id", "0"]);
    let mut b = Node::start(db.path(), &["--dc-id", "1"]);
    let to_b = Proxy::start(b.chariots);
    let to_a = Proxy::start(a.chariots);
    post_ok(
        &a,
        "/datacenters",
        json!({"id": 1, "addr": to_b.addr.to_string()}),
    );
    post_ok(
        &b,
        "/datacenters",
        json!({"id": 0, "addr": to_a.addr.to_string()}),
    );

    let mut total = 0;
    // Cross-datacenter chains: B's record depends on A's and the other way round.
    for round in 0..3 {
        if round == 1 {
            to_b.cut();
            to_a.cut();
        }
        for i in 0..10 {
            let seed = 100 + i;
            post_ok(
                &a,
                "/record",
                json!({"tags": {"a": format!("{round}-{i}")}, "seed": seed}),
            );
            post_ok(
                &b,
                "/record",
                json!({"tags": {"b": format!("{round}-{i}")}, "seed": seed,
                       "prehash": hash("a", &format!("{round}-{i}"))}),
            );
            post_ok(
                &b,
                "/record",
                json!({"tags": {"solo": format!("{round}-{i}")}, "seed": 7}),
            );
            total += 3;
        }
        if round == 1 {
            std::thread::sleep(Duration::from_millis(500));
            to_b.heal();
            to_a.heal();
        }
    }
    converge(&a, &b, total);

    // kill -9 B while A keeps producing, then restart it on a new port.
    for i in 0..10 {
        post_ok(
            &a,
            "/record",
            json!({"tags": {"late": i.to_string()}, "seed": 9}),
        );
        total += 1;
    }
    b.kill9();
    for i in 10..20 {
        post_ok(
            &a,
            "/record",
            json!({"tags": {"late": i.to_string()}, "seed": 9}),
        );
        total += 1;
    }
    // No --remote-dc: B remembers the remote it was given at run time.
    b = Node::start(db.path(), &["--dc-id", "1"]);
    to_b.retarget(b.chariots);
    post_ok(
        &b,
        "/record",
        json!({"tags": {"after": "restart"}, "seed": 9, "prehash": hash("late", "19")}),
    );
    total += 1;
    converge(&a, &b, total);

    let (la, lb) = (shared_log(&a), shared_log(&b));
    check_order(&la);
    check_order(&lb);
    assert_eq!(
        identity(&la),
        identity(&lb),
        "both logs hold the same records"
    );
    let unique: HashSet<(u64, u64)> = identity(&la).into_iter().collect();
    assert_eq!(unique.len(), total, "no duplicates");
    let cluster: Value = ureq::get(&a.url("/cluster"))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    assert_eq!(cluster["remote_datacenters"][0]["lag_records"], 0);
}

#[test]
fn the_chariots_bench_reports_throughput_and_propagation() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Node::start(da.path(), &["--dc-id", "0"]);
    // B only receives: it accepts A's records without propagating back.
    let b = Node::start(db.path(), &["--dc-id", "1", "--accept-dc", "0"]);
    post_ok(
        &a,
        "/datacenters",
        json!({"id": 1, "addr": b.chariots.to_string()}),
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_chariot"))
        .args([
            "--addr",
            &a.tcp.to_string(),
            "--json",
            "bench",
            "--chariots",
        ])
        .args(["--chariots-addr", &a.chariots.to_string()])
        .args(["--remote-addr", &b.tcp.to_string()])
        .args(["--producers", "2", "--duration", "1", "--rate", "500"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let records = report["records"].as_u64().unwrap();
    assert!(records > 0, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    assert!(
        report["queued_first"].as_u64().unwrap() > 0,
        "child-first chains wait"
    );
    // Every posted record reached the other datacenter, and was timed.
    assert_eq!(
        report["propagation"]["records"].as_u64(),
        Some(records),
        "{report}"
    );
    assert!(report["propagation"]["latency"]["p50_us"].as_u64().unwrap() > 0);
}

/// A propagation batch from datacenter `dc` with one record per TOId.
fn batch(dc: u32, toids: impl IntoIterator<Item = u64>) -> Vec<u8> {
    let records: Vec<Value> = toids
        .into_iter()
        .map(|t| json!({"dc": dc, "toid": t, "tags": {"t": t.to_string()}, "seed": 1, "prehash": []}))
        .collect();
    json!({"from": dc, "records": records})
        .to_string()
        .into_bytes()
}

/// Propagation is taken only from configured datacenters, and each origin has its own
/// bounded share of the dependency queue, so far-future TOIds cannot crowd out local
/// clients (nor the record its origin must send next).
#[test]
fn propagation_comes_only_from_known_datacenters_each_within_its_allowance() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(
        dir.path(),
        &[
            "--dc-id",
            "0",
            "--accept-dc",
            "5",
            "--max-waiting-per-origin",
            "10",
            "--max-waiting",
            "1",
        ],
    );
    let mut s = TcpStream::connect(node.chariots).unwrap();
    let refused = record_port_call(&mut s, b'p', &batch(6, [0]));
    assert_eq!(refused["code"], "unknown_datacenter", "{refused}");
    // Ten TOIds ahead of the expected 0: beyond the allowance, refused as busy.
    let ahead = record_port_call(&mut s, b'p', &batch(5, [10]));
    assert_eq!(ahead["code"], "busy", "{ahead}");
    assert!(
        ahead["error"].as_str().unwrap().contains("too far ahead"),
        "{ahead}"
    );
    // Within it: they wait for TOId 0.
    let queued = record_port_call(&mut s, b'p', &batch(5, 1..10));
    assert_eq!(queued["status"], "ok", "{queued}");
    assert_eq!(get(&node, "/cluster").1["waiting"], 9);
    // Local clients keep their own share of the queue.
    let (code, local) = post(
        &node,
        "/record",
        json!({"tags": {"l": "1"}, "seed": 9, "prehash": hash("never", "x")}),
    );
    assert_eq!(
        (code, local["status"].as_str()),
        (200, Some("waiting")),
        "{local}"
    );
    // The record expected next is always taken; the cascade appends all ten in order.
    let next = record_port_call(&mut s, b'p', &batch(5, [0]));
    assert_eq!(next["status"], "ok", "{next}");
    wait_until(|| get(&node, "/cluster").1["waiting"] == 1);
    let mut toids = Vec::new();
    for t in 0..10u64 {
        let (_, found) = get(&node, &format!("/records?tag=t:{t}"));
        assert_eq!(found.as_array().unwrap().len(), 1, "toid {t}: {found}");
        toids.push((
            found[0]["lid"].as_u64().unwrap(),
            found[0]["toid"].as_u64().unwrap(),
        ));
    }
    toids.sort_unstable();
    assert_eq!(
        toids.iter().map(|(_, t)| *t).collect::<Vec<_>>(),
        (0..10).collect::<Vec<_>>()
    );
    // Now TOId 10 fits.
    let later = record_port_call(&mut s, b'p', &batch(5, [10]));
    assert_eq!(later["status"], "ok", "{later}");
}

/// The remotes list and the senders' cursors are state: a damaged one is an error that
/// names the file, never a silent reset (which would forget a remote or resend all). They
/// are records of a system log now; the JSON files of earlier versions are taken in.
#[test]
fn damaged_remotes_and_cursors_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    // A remote that listens but never answers: nothing is acknowledged.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let node = Node::start(dir.path(), &["--dc-id", "0"]);
    post_ok(
        &node,
        "/datacenters",
        json!({"id": 1, "addr": silent.local_addr().unwrap().to_string()}),
    );
    assert_eq!(node.terminate(), Some(0));
    assert!(
        dir.path()
            .join("system")
            .join("__chariots_senders")
            .is_dir(),
        "the remotes are a system log"
    );
    // The files an earlier version kept.
    let senders = dir.path().join("__chariots_senders");
    std::fs::create_dir_all(&senders).unwrap();
    let remotes = senders.join("remotes.json");
    let good = json!({"1": silent.local_addr().unwrap().to_string()}).to_string();

    std::fs::write(&remotes, b"{\"1\": ").unwrap();
    let err = failed_start(dir.path(), &["--dc-id", "0"]);
    assert!(
        err.contains("remotes.json") && err.contains("damaged"),
        "{err}"
    );

    std::fs::write(&remotes, &good).unwrap();
    std::fs::write(senders.join("1.json"), b"not json").unwrap();
    let node = Node::start(dir.path(), &["--dc-id", "0"]);
    wait_until(|| {
        let c = get(&node, "/cluster").1;
        c["remote_datacenters"][0]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("1.json") && e.contains("damaged"))
    });
    // The remote is still listed: nothing was forgotten.
    assert_eq!(
        get(&node, "/cluster").1["remote_datacenters"][0]["datacenter"],
        1
    );
}

/// Damage inside the senders' system log (valid records after it) stops the start with
/// an error naming the log, its file and the position, never a silent reset.
#[test]
fn a_damaged_senders_log_is_an_error_naming_file_and_position() {
    let dir = tempfile::tempdir().unwrap();
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let node = Node::start(dir.path(), &["--dc-id", "0"]);
    for id in [1, 2] {
        post_ok(
            &node,
            "/datacenters",
            json!({"id": id, "addr": silent.local_addr().unwrap().to_string()}),
        );
    }
    assert_eq!(node.terminate(), Some(0));
    let part = dir.path().join("system/__chariots_senders/0");
    let segment = std::fs::read_dir(&part)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "log"))
        .unwrap();
    let mut bytes = std::fs::read(&segment).unwrap();
    let first_len = u32::from_be_bytes(bytes[8..12].try_into().unwrap()) as usize;
    let second_len = u32::from_be_bytes(
        bytes[12 + first_len + 8..12 + first_len + 12]
            .try_into()
            .unwrap(),
    );
    assert!(second_len > 0, "two batches, the second valid");
    // A byte of the first batch's last record (its address).
    bytes[12 + first_len - 2] ^= 0x04;
    std::fs::write(&segment, &bytes).unwrap();
    let err = failed_start(dir.path(), &["--dc-id", "0"]);
    let file = segment.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        err.contains("__chariots_senders") && err.contains(&file),
        "{err}"
    );
}

/// Runs `chariot serve` on `dir`, which must refuse to start; returns its stderr.
fn failed_start(dir: &std::path::Path, args: &[&str]) -> String {
    let out = serve_command(dir, args)
        .env("CHARIOT_LOCK_WAIT_MS", "0")
        .output()
        .unwrap();
    assert!(!out.status.success(), "the node started");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

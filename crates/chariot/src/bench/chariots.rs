//! `chariot bench --chariots`: load the Chariots causal log and measure propagation.
//!
//! Methodology:
//! - **Producers** (`--producers`) each hold one connection to the record port
//!   (`--chariots-addr`) and post chains of `--chain-depth` records: record `i` of a chain
//!   carries tag `c = <chain>-<i>` and depends (`prehash`) on record `i-1`'s tag, all with
//!   the chain's own seed. A share of the chains (`--child-first`, default 0.1) posts its
//!   last record before its predecessor, so it waits in the dependency queue and is
//!   appended by the cascade. Each record is one `'r'` frame; latency is measured from
//!   sending it to reading its `'a'` acknowledgment (appended, or durably queued).
//! - **Rate**: `--rate R` paces the producers to R records/s in total (0 = as fast as
//!   they go).
//! - **Propagation** (`--remote-addr`, the native address of a second datacenter whose
//!   record port the first propagates to): a tailer reads the remote's shared log with
//!   range reads and, for each record of this run, takes the time from its send (a `t`
//!   tag, microseconds since the Unix epoch) to its arrival in the remote log, polling
//!   every millisecond. Both processes share this machine's clock.
//! - **A full queue** (`--prefill-waiting N`): before the clock starts, N records whose
//!   dependency never arrives are posted over 64 connections, so they stay waiting while
//!   the producers run; compare the rate with the same run without it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::commands::Connection;

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).context("histogram bounds")
}

/// What the Chariots mode needs from the command line.
pub struct ChariotsPlan {
    pub addr: SocketAddr,
    pub producers: usize,
    pub duration: Duration,
    pub chain_depth: usize,
    pub child_first: f64,
    pub rate: u64,
    pub remote: Option<SocketAddr>,
    pub prefill_waiting: u64,
}

struct ProducerStats {
    latency: Histogram<u64>,
    records: u64,
    waited: u64,
    errors: u64,
    first_error: Option<String>,
}

async fn post(sock: &mut TcpStream, record: &Value) -> anyhow::Result<Value> {
    let payload = record.to_string();
    let mut frame = ((payload.len() + 1) as u32).to_be_bytes().to_vec();
    frame.push(b'r');
    frame.extend_from_slice(payload.as_bytes());
    sock.write_all(&frame).await?;
    let mut head = [0u8; 5];
    sock.read_exact(&mut head).await?;
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    if head[4] != b'a' || len == 0 || len > 1 << 20 {
        bail!("unexpected frame from the record port");
    }
    let mut body = vec![0u8; len - 1];
    sock.read_exact(&mut body).await?;
    Ok(serde_json::from_slice(&body)?)
}

async fn produce(
    plan: Arc<ChariotsPlan>,
    id: usize,
    run: String,
    start: Instant,
) -> anyhow::Result<ProducerStats> {
    let mut sock = TcpStream::connect(plan.addr)
        .await
        .with_context(|| format!("cannot connect to the record port {}", plan.addr))?;
    sock.set_nodelay(true)?;
    let mut stats = ProducerStats {
        latency: histogram()?,
        records: 0,
        waited: 0,
        errors: 0,
        first_error: None,
    };
    let per_producer_rate = plan.rate as f64 / plan.producers as f64;
    let deadline = start + plan.duration;
    let mut sent = 0u64;
    let mut chain = 0u64;
    // Every 1/child_first-th chain posts its last record first.
    let child_first_every = if plan.child_first > 0.0 {
        (1.0 / plan.child_first).round().max(1.0) as u64
    } else {
        0
    };
    while Instant::now() < deadline {
        let seed = ((id as u64) << 40) | chain;
        let name = |i: usize| format!("{run}-{id}-{chain}-{i}");
        let mut order: Vec<usize> = (0..plan.chain_depth).collect();
        if child_first_every > 0 && chain.is_multiple_of(child_first_every) && plan.chain_depth >= 2
        {
            let n = order.len();
            order.swap(n - 1, n - 2);
        }
        for i in order {
            if per_producer_rate > 0.0 {
                let due = start + Duration::from_secs_f64(sent as f64 / per_producer_rate);
                tokio::time::sleep_until(due.into()).await;
            }
            let prehash = if i == 0 {
                0
            } else {
                chariot_proto::chariots::tag_hash("c", &name(i - 1))
            };
            let record = json!({
                "Host": 0,
                "Tags": {"c": name(i), "t": now_us().to_string(), "run": run},
                "Pre": {"Hash": prehash},
                "Seed": seed,
            });
            let sent_at = Instant::now();
            match post(&mut sock, &record).await {
                Ok(ack) => {
                    let us = sent_at.elapsed().as_micros() as u64;
                    let _ = stats.latency.record(us.max(1));
                    match ack.get("status").and_then(Value::as_str) {
                        Some("appended") => stats.records += 1,
                        Some("waiting") => {
                            stats.records += 1;
                            stats.waited += 1;
                        }
                        _ => {
                            stats.errors += 1;
                            stats.first_error.get_or_insert_with(|| ack.to_string());
                        }
                    }
                }
                Err(e) => {
                    stats.errors += 1;
                    stats.first_error.get_or_insert_with(|| e.to_string());
                    return Ok(stats);
                }
            }
            sent += 1;
        }
        chain += 1;
    }
    Ok(stats)
}

/// Posts `count` records that wait forever (their dependency is a tag nobody posts).
async fn prefill(addr: SocketAddr, count: u64, run: &str) -> anyhow::Result<()> {
    const CONNECTIONS: u64 = 64;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CONNECTIONS {
        let mine = count / CONNECTIONS + u64::from(c < count % CONNECTIONS);
        let run = run.to_string();
        tasks.push(tokio::spawn(async move {
            let mut sock = TcpStream::connect(addr)
                .await
                .with_context(|| format!("cannot connect to the record port {addr}"))?;
            sock.set_nodelay(true)?;
            let never = chariot_proto::chariots::tag_hash("never", &run);
            for i in 0..mine {
                let record = json!({
                    "Host": 0,
                    "Tags": {"w": format!("{run}-{c}-{i}")},
                    "Pre": {"Hash": never},
                    "Seed": u64::MAX - c,
                });
                let ack = post(&mut sock, &record).await?;
                if ack.get("status").and_then(Value::as_str) != Some("waiting") {
                    bail!("prefill record not queued: {ack}");
                }
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await.context("a prefill task panicked")??;
    }
    eprintln!(
        "queued {count} waiting records in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Tails the remote's shared log, timing each record of this run from send to arrival.
async fn tail(
    conn: Connection,
    remote: SocketAddr,
    run: String,
    stop_after: Instant,
    total: Arc<AtomicU64>,
) -> anyhow::Result<(Histogram<u64>, u64)> {
    let mut remote_conn = conn.clone();
    remote_conn.addr = remote.to_string();
    let mut client = remote_conn.connect().await?;
    let mut hist = histogram()?;
    let mut seen = 0u64;
    let mut offset = match client.describe_log("chariots").await {
        Ok(parts) => parts.first().map_or(0, |p| p.next_offset),
        Err(_) => 0,
    };
    loop {
        let range = match client.read_range("chariots", 0, offset, 1 << 20).await {
            Ok(r) => r,
            Err(_) => {
                // The shared log appears with the first record.
                if Instant::now() > stop_after {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
        };
        let now = now_us();
        let mut got = false;
        for batch in &range.batches {
            for rec in batch.records() {
                if rec.offset < offset {
                    continue;
                }
                got = true;
                offset = rec.offset + 1;
                let tags: BTreeMap<&[u8], &[u8]> = rec.headers.iter().copied().collect();
                if tags.get(&b"run"[..]) != Some(&run.as_bytes()) {
                    continue;
                }
                if let Some(t) = tags
                    .get(&b"t"[..])
                    .and_then(|t| std::str::from_utf8(t).ok())
                    .and_then(|t| t.parse::<u64>().ok())
                {
                    let _ = hist.record(now.saturating_sub(t).max(1));
                    seen += 1;
                }
            }
        }
        let produced = total.load(Ordering::Acquire);
        let now_i = Instant::now();
        if (produced != u64::MAX && seen >= produced)
            || now_i > stop_after + Duration::from_secs(10)
        {
            break;
        }
        if !got {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    Ok((hist, seen))
}

fn pct(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return Value::Null;
    }
    json!({
        "samples": h.len(),
        "p50_us": h.value_at_quantile(0.5),
        "p99_us": h.value_at_quantile(0.99),
        "p999_us": h.value_at_quantile(0.999),
        "max_us": h.max(),
    })
}

fn ms(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_u64)
        .map_or_else(|| "-".into(), |us| format!("{:.2} ms", us as f64 / 1000.0))
}

/// Runs the Chariots mode and prints its report.
pub async fn run(conn: &Connection, plan: ChariotsPlan) -> anyhow::Result<()> {
    if plan.producers == 0 {
        bail!("--chariots needs at least one producer");
    }
    if plan.chain_depth == 0 {
        bail!("--chain-depth must be at least 1");
    }
    let plan = Arc::new(plan);
    let run = format!("{:x}", now_us());
    if plan.prefill_waiting > 0 {
        prefill(plan.addr, plan.prefill_waiting, &run).await?;
    }
    let start = Instant::now();
    // Unknown until the producers are done; the tailer keeps going until then.
    let total = Arc::new(AtomicU64::new(u64::MAX));
    let tailer = plan.remote.map(|remote| {
        tokio::spawn(tail(
            conn.clone(),
            remote,
            run.clone(),
            start + plan.duration,
            Arc::clone(&total),
        ))
    });
    let producers: Vec<_> = (0..plan.producers)
        .map(|id| tokio::spawn(produce(Arc::clone(&plan), id, run.clone(), start)))
        .collect();
    let mut latency = histogram()?;
    let (mut records, mut waited, mut errors, mut first_error) = (0u64, 0u64, 0u64, None);
    for p in producers {
        let s = p.await.context("a producer panicked")??;
        latency.add(&s.latency).context("merging histograms")?;
        records += s.records;
        waited += s.waited;
        errors += s.errors;
        first_error = first_error.or(s.first_error);
    }
    let secs = start.elapsed().as_secs_f64();
    total.store(records, Ordering::Release);
    let propagation = match tailer {
        Some(t) => Some(t.await.context("the tailer panicked")??),
        None => None,
    };
    let ack = pct(&latency);
    let prop = propagation.as_ref().map(|(h, seen)| (pct(h), *seen));
    let report = json!({
        "mode": "chariots",
        "producers": plan.producers,
        "chain_depth": plan.chain_depth,
        "child_first": plan.child_first,
        "target_rate": plan.rate,
        "prefilled_waiting": plan.prefill_waiting,
        "records": records,
        "queued_first": waited,
        "errors": errors,
        "first_error": first_error,
        "secs": secs,
        "records_per_sec": records as f64 / secs,
        "ack_latency": ack,
        "propagation": prop.as_ref().map(|(p, seen)| json!({"records": seen, "latency": p})),
    });
    if conn.json {
        crate::output::line(&report.to_string())?;
    } else {
        let mut text = format!(
            "chariots: {} producer(s), chains of {}, {:.0}% child-first, target {} records/s, {} waiting beside\n\
             posted {records} records in {secs:.2} s = {:.0} records/s ({waited} queued first, {errors} errors)\n\
             ack latency: p50 {}, p99 {}, p999 {}",
            plan.producers,
            plan.chain_depth,
            plan.child_first * 100.0,
            if plan.rate == 0 { "unlimited".to_string() } else { plan.rate.to_string() },
            plan.prefill_waiting,
            records as f64 / secs,
            ms(&ack, "p50_us"),
            ms(&ack, "p99_us"),
            ms(&ack, "p999_us"),
        );
        if let Some((p, seen)) = &prop {
            text.push_str(&format!(
                "\npropagation to the remote datacenter ({seen} records): p50 {}, p99 {}, p999 {}",
                ms(p, "p50_us"),
                ms(p, "p99_us"),
                ms(p, "p999_us"),
            ));
        }
        if let Some(e) = &first_error {
            text.push_str(&format!("\nfirst error: {e}"));
        }
        crate::output::line(&text)?;
    }
    Ok(())
}

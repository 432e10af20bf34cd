//! `nats-bench`: unbatched JetStream publishes of fixed-size records by N concurrent
//! producers, each on its own connection, each publish waiting for its `PubAck` (the
//! stream has stored the message) before the next: the same shape as `chariot bench
//! --batch-size 1`. Prints one JSON line: records/s and send-to-ack latency percentiles.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use clap::Parser;
use hdrhistogram::Histogram;
use serde_json::json;

#[derive(Parser)]
struct Args {
    /// NATS server address.
    #[arg(long, default_value = "127.0.0.1:4222")]
    server: String,
    /// Concurrent producers (one connection each).
    #[arg(long, default_value_t = 1)]
    producers: usize,
    /// Seconds to publish for.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Bytes per record.
    #[arg(long, default_value_t = 1024)]
    record_size: usize,
    /// Stream to create (file storage, the server's default sync) and publish to.
    #[arg(long, default_value = "BENCH")]
    stream: String,
}

struct Stats {
    records: u64,
    latency: Histogram<u64>,
}

async fn produce(args: Arc<Args>, id: usize, deadline: Instant) -> anyhow::Result<Stats> {
    let client = async_nats::connect(&args.server)
        .await
        .with_context(|| format!("cannot connect to NATS at {}", args.server))?;
    let js = jetstream::new(client);
    let subject = format!("{}.{id}", args.stream.to_lowercase());
    let payload = Bytes::from(vec![b'x'; args.record_size]);
    let mut stats = Stats {
        records: 0,
        latency: Histogram::new_with_bounds(1, 60_000_000, 3)?,
    };
    while Instant::now() < deadline {
        let sent = Instant::now();
        js.publish(subject.clone(), payload.clone())
            .await
            .context("publish")?
            .await
            .context("publish ack")?;
        stats
            .latency
            .record((sent.elapsed().as_micros() as u64).max(1))?;
        stats.records += 1;
    }
    Ok(stats)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Arc::new(Args::parse());
    let client = async_nats::connect(&args.server)
        .await
        .with_context(|| format!("cannot connect to NATS at {}", args.server))?;
    let js = jetstream::new(client);
    let _ = js.delete_stream(&args.stream).await;
    js.create_stream(stream::Config {
        name: args.stream.clone(),
        subjects: vec![format!("{}.>", args.stream.to_lowercase())],
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .context("create the stream")?;
    let start = Instant::now();
    let deadline = start + Duration::from_secs(args.duration);
    let tasks: Vec<_> = (0..args.producers)
        .map(|id| tokio::spawn(produce(Arc::clone(&args), id, deadline)))
        .collect();
    let mut records = 0;
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for t in tasks {
        let s = t.await.context("a producer panicked")??;
        records += s.records;
        latency.add(&s.latency)?;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({
            "producers": args.producers,
            "record_size": args.record_size,
            "records": records,
            "secs": secs,
            "records_per_sec": records as f64 / secs,
            "latency_us": {
                "p50": latency.value_at_quantile(0.5),
                "p99": latency.value_at_quantile(0.99),
                "p999": latency.value_at_quantile(0.999),
            },
        })
    );
    Ok(())
}

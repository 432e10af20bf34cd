//! The native TCP protocol: Rog's commands byte for byte, plus Chariot's extensions.
//!
//! One task per connection reads into a buffer, decodes every complete frame in it (by
//! declared lengths, never by read sizes), answers each in order, and writes the answers
//! back together. A connection may carry one request (Rog's clients) or many. A frame the
//! decoder rejects gets an error response in its command's error form, and the connection
//! is closed, because after a bad length nothing that follows can be trusted to be a frame.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use chariot_broker::{Broker, BrokerError, NewRecord};
use chariot_proto::{GroupOffset, Limits, LogInfo, PartitionInfo, Request, RequestKind, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::error_codes::wire_code;

/// Accepts native-protocol connections.
pub struct Listener {
    listener: TcpListener,
    broker: Arc<Broker>,
    limits: Limits,
    /// Bounds concurrent connections: past it, clients wait in the accept backlog
    /// instead of each costing a task and buffers.
    permits: Arc<Semaphore>,
    /// Flips to `true` when the server shuts down.
    stop: watch::Receiver<bool>,
}

impl Listener {
    /// A listener over a bound socket.
    pub fn new(
        listener: TcpListener,
        broker: Arc<Broker>,
        limits: Limits,
        max_connections: usize,
        stop: watch::Receiver<bool>,
    ) -> Self {
        Self {
            listener,
            broker,
            limits,
            permits: Arc::new(Semaphore::new(max_connections.max(1))),
            stop,
        }
    }

    /// Serves until shutdown, then gives open connections `drain` to finish.
    pub async fn run(mut self, drain: Duration) {
        let mut connections = JoinSet::new();
        loop {
            let permit = tokio::select! {
                p = Arc::clone(&self.permits).acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
                _ = self.stop.changed() => break,
            };
            let (socket, peer) = tokio::select! {
                r = self.listener.accept() => match r {
                    Ok(s) => s,
                    Err(e) => {
                        // Typically EMFILE: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = self.stop.changed() => break,
            };
            let _ = socket.set_nodelay(true);
            let conn = Connection {
                socket,
                broker: Arc::clone(&self.broker),
                limits: self.limits,
                stop: self.stop.clone(),
            };
            connections.spawn(async move {
                if let Err(e) = conn.serve().await {
                    tracing::debug!(%peer, error = %e, "connection closed");
                }
                drop(permit);
            });
            // Reap finished connections so the set does not grow without bound.
            while connections.try_join_next().is_some() {}
        }
        drop(self.listener);
        if tokio::time::timeout(drain, async {
            while connections.join_next().await.is_some() {}
        })
        .await
        .is_err()
        {
            tracing::warn!("closing connections still busy after the drain timeout");
            connections.abort_all();
        }
    }
}

struct Connection {
    socket: TcpStream,
    broker: Arc<Broker>,
    limits: Limits,
    stop: watch::Receiver<bool>,
}

impl Connection {
    async fn serve(mut self) -> std::io::Result<()> {
        let mut inbox = BytesMut::with_capacity(64 << 10);
        let mut outbox = BytesMut::with_capacity(4 << 10);
        loop {
            let mut close = false;
            loop {
                match Request::decode(&mut inbox, &self.limits) {
                    Ok(Some(request)) => {
                        let response = dispatch(&self.broker, request).await;
                        encode(&response, &mut outbox);
                    }
                    Ok(None) => break,
                    Err(e) => {
                        let kind = inbox.first().copied().and_then(RequestKind::from_command);
                        tracing::debug!(error = %e, "malformed frame");
                        encode(&Response::error(kind, e.code(), e.to_string()), &mut outbox);
                        close = true;
                        break;
                    }
                }
            }
            if !outbox.is_empty() {
                self.socket.write_all(&outbox).await?;
                outbox.clear();
            }
            if close || *self.stop.borrow() {
                return self.socket.shutdown().await;
            }
            let n = tokio::select! {
                r = self.socket.read_buf(&mut inbox) => r?,
                _ = self.stop.changed() => return self.socket.shutdown().await,
            };
            if n == 0 {
                // Peer closed. Bytes left over are a truncated frame: nothing of it was
                // applied, since only whole frames are dispatched.
                if !inbox.is_empty() {
                    tracing::debug!(bytes = inbox.len(), "peer closed mid-frame");
                }
                return Ok(());
            }
        }
    }
}

fn encode(response: &Response, out: &mut BytesMut) {
    if let Err(e) = response.encode(out) {
        // Only oversized fields can fail to encode; answer with a coded error instead.
        tracing::error!(error = %e, "cannot encode a response");
        let fallback = Response::error(None, e.code(), e.to_string());
        let _ = fallback.encode(out);
    }
}

fn err(kind: RequestKind, e: &BrokerError) -> Response {
    Response::error(Some(kind), wire_code(e), e.to_string())
}

async fn dispatch(broker: &Broker, request: Request) -> Response {
    let kind = request.kind();
    let result = match request {
        Request::CreateLog { log, partitions } => broker
            .create_log(&log, u32::from(partitions))
            .await
            .map(|()| Response::Success),
        Request::CreateLogExt { log, partitions } => broker
            .create_log(&log, partitions)
            .await
            .map(|()| Response::LogCreated { partitions }),
        Request::Publish {
            log,
            partition,
            data,
        } => broker
            .publish(&log, u32::from(partition), vec![NewRecord::value(data)])
            .await
            .map(|_| Response::Success),
        Request::Fetch {
            log,
            partition,
            group,
        } => broker
            .fetch(&log, u32::from(partition), &group)
            .map(|r| Response::Fetched {
                data: r.value.into(),
            }),
        Request::Ack {
            log,
            partition,
            group,
        } => broker
            .ack(&log, u32::from(partition), &group)
            .await
            .map(|_| Response::Success),
        Request::PublishBatch {
            log,
            partition,
            batch,
        } => broker
            .publish_batch(&log, partition, batch.to_vec())
            .await
            .map(|a| Response::BatchPublished {
                base_offset: a.base_offset,
                record_count: a.count,
            }),
        Request::PublishRecords {
            log,
            partition,
            records,
        } => {
            let now = chariot_broker::now_ms();
            let records = records
                .into_iter()
                .map(|value| NewRecord {
                    value,
                    timestamp: now,
                    ..NewRecord::default()
                })
                .collect();
            broker
                .publish(&log, partition, records)
                .await
                .map(|a| Response::RecordsPublished {
                    base_offset: a.base_offset,
                })
        }
        Request::ReadRange {
            log,
            partition,
            offset,
            max_bytes,
        } => broker
            .read_range(&log, partition, offset, max_bytes as usize)
            .map(|r| Response::Range {
                earliest_offset: r.earliest_offset,
                next_offset: r.next_offset,
                batches: r.batches.into(),
            }),
        Request::ListLogs => Ok(Response::Logs {
            logs: broker
                .list_logs()
                .into_iter()
                .map(|l| LogInfo {
                    name: l.name,
                    partitions: l.partitions,
                })
                .collect(),
        }),
        Request::DescribeLog { log } => {
            broker.describe_log(&log).map(|d| Response::LogDescription {
                partitions: d
                    .partitions
                    .into_iter()
                    .map(|p| PartitionInfo {
                        earliest_offset: p.earliest_offset,
                        next_offset: p.next_offset,
                        groups: p
                            .groups
                            .into_iter()
                            .map(|g| GroupOffset {
                                group: g.group,
                                committed_offset: g.offset,
                            })
                            .collect(),
                    })
                    .collect(),
            })
        }
    };
    result.unwrap_or_else(|e| err(kind, &e))
}

//! Tests of the client against a scripted server on a local port.
#![allow(clippy::indexing_slicing)]

use std::net::SocketAddr;

use chariot_log::{Record, RecordBatchBuilder};
use chariot_proto::{messages, ErrorCode, GroupOffset};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::*;

type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

/// What the fake server does after reading each request.
enum Reply {
    /// Answers with the response's encoding.
    With(Response),
    /// Answers with these bytes, written one at a time to exercise reassembly.
    Trickle(Vec<u8>),
    /// Answers with raw bytes.
    Raw(Vec<u8>),
    /// Closes the connection without answering.
    Hangup,
    /// Never answers.
    Silence,
}

/// A one-connection server: decodes each request with `chariot-proto`, answers per
/// the script, and returns the requests it saw.
async fn fake_server(
    script: Vec<Reply>,
) -> std::io::Result<(SocketAddr, JoinHandle<Vec<Request>>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let handle = tokio::spawn(async move {
        let mut seen = Vec::new();
        let Ok((mut socket, _)) = listener.accept().await else {
            return seen;
        };
        let mut buf = BytesMut::new();
        for reply in script {
            let request = loop {
                match Request::decode(&mut buf, &Limits::default()) {
                    Ok(Some(request)) => break request,
                    Ok(None) => {}
                    Err(_) => return seen,
                }
                match socket.read_buf(&mut buf).await {
                    Ok(0) | Err(_) => return seen,
                    Ok(_) => {}
                }
            };
            seen.push(request);
            let written = match reply {
                Reply::With(response) => {
                    let mut out = BytesMut::new();
                    if response.encode(&mut out).is_err() {
                        return seen;
                    }
                    socket.write_all(&out).await
                }
                Reply::Raw(bytes) => socket.write_all(&bytes).await,
                Reply::Trickle(bytes) => {
                    let mut result = Ok(());
                    for byte in bytes {
                        result = socket.write_all(&[byte]).await;
                        tokio::task::yield_now().await;
                    }
                    result
                }
                Reply::Hangup => return seen,
                Reply::Silence => {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    return seen;
                }
            };
            if written.is_err() {
                return seen;
            }
        }
        seen
    });
    Ok((addr, handle))
}

fn encoded(response: &Response) -> Vec<u8> {
    let mut out = BytesMut::new();
    assert!(response.encode(&mut out).is_ok());
    out.to_vec()
}

fn batch(values: &[&str]) -> RecordBatch {
    let mut builder = RecordBatchBuilder::new();
    for value in values {
        builder.push(&Record::value(value.as_bytes()));
    }
    builder.build()
}

#[tokio::test]
async fn rog_commands_round_trip() -> TestResult {
    let (addr, server) = fake_server(vec![
        Reply::With(Response::Success),
        Reply::With(Response::Success),
        Reply::With(Response::Fetched {
            data: Bytes::from_static(b"hi"),
        }),
        Reply::With(Response::Success),
        Reply::With(Response::RogError {
            message: messages::no_data(),
        }),
    ])
    .await?;
    let mut client = Client::connect(addr).await?;
    client.create_log("a", 2).await?;
    client.publish("a", 1, "hi").await?;
    assert_eq!(
        client.fetch("a", 1, "g").await?,
        Some(Bytes::from_static(b"hi"))
    );
    client.ack("a", 1, "g").await?;
    assert_eq!(client.fetch("a", 1, "g").await?, None);
    drop(client);
    let seen = server.await?;
    assert_eq!(
        seen,
        vec![
            Request::CreateLog {
                log: "a".into(),
                partitions: 2
            },
            Request::Publish {
                log: "a".into(),
                partition: 1,
                data: Bytes::from_static(b"hi")
            },
            Request::Fetch {
                log: "a".into(),
                partition: 1,
                group: "g".into()
            },
            Request::Ack {
                log: "a".into(),
                partition: 1,
                group: "g".into()
            },
            Request::Fetch {
                log: "a".into(),
                partition: 1,
                group: "g".into()
            },
        ]
    );
    Ok(())
}

#[tokio::test]
async fn extension_commands_round_trip() -> TestResult {
    let stored = {
        let mut b = batch(&["x", "y"]);
        b.set_base_offset(7);
        b
    };
    let second = {
        let mut b = batch(&["z"]);
        b.set_base_offset(9);
        b
    };
    let mut blob = stored.as_bytes().to_vec();
    blob.extend_from_slice(second.as_bytes());
    let partitions = vec![PartitionInfo {
        earliest_offset: 0,
        next_offset: 10,
        groups: vec![GroupOffset {
            group: "g".into(),
            committed_offset: 4,
        }],
    }];
    let (addr, server) = fake_server(vec![
        Reply::With(Response::BatchPublished {
            base_offset: 7,
            record_count: 2,
        }),
        Reply::With(Response::RecordsPublished { base_offset: 9 }),
        Reply::With(Response::Range {
            earliest_offset: 0,
            next_offset: 10,
            batches: Bytes::from(blob),
        }),
        Reply::With(Response::Logs {
            logs: vec![LogInfo {
                name: "a".into(),
                partitions: 3,
            }],
        }),
        Reply::With(Response::LogDescription {
            partitions: partitions.clone(),
        }),
    ])
    .await?;
    let mut client = Client::connect(addr).await?;
    assert_eq!(
        client.publish_batch("a", 2, batch(&["x", "y"])).await?,
        (7, 2)
    );
    assert_eq!(client.publish_records("a", 2, ["z"]).await?, 9);
    let range = client.read_range("a", 2, 8, 1024).await?;
    assert_eq!((range.earliest_offset, range.next_offset), (0, 10));
    assert_eq!(range.batches, vec![stored, second]);
    let values: Vec<(u64, &[u8])> = range.records_from(8).map(|r| (r.offset, r.value)).collect();
    assert_eq!(values, vec![(8, &b"y"[..]), (9, &b"z"[..])]);
    assert_eq!(client.list_logs().await?.len(), 1);
    assert_eq!(client.describe_log("a").await?, partitions);
    drop(client);
    let seen = server.await?;
    assert_eq!(
        seen.iter().map(Request::kind).collect::<Vec<_>>(),
        vec![
            RequestKind::PublishBatch,
            RequestKind::PublishRecords,
            RequestKind::ReadRange,
            RequestKind::ListLogs,
            RequestKind::DescribeLog
        ]
    );
    assert_eq!(
        seen[2],
        Request::ReadRange {
            log: "a".into(),
            partition: 2,
            offset: 8,
            max_bytes: 1024
        }
    );
    Ok(())
}

#[tokio::test]
async fn server_errors_keep_the_connection() -> TestResult {
    let (addr, _server) = fake_server(vec![
        Reply::With(Response::RogError {
            message: messages::unknown_log("nope"),
        }),
        Reply::With(Response::Error {
            code: ErrorCode::PartitionOutOfRange.as_u16(),
            message: messages::partition_out_of_range(9, "a", 1),
        }),
        Reply::With(Response::Error {
            code: 4242,
            message: "from the future".into(),
        }),
        Reply::With(Response::Logs { logs: vec![] }),
    ])
    .await?;
    let mut client = Client::connect(addr).await?;
    let e = client
        .publish("nope", 0, "x")
        .await
        .err()
        .ok_or("no error")?;
    assert_eq!(e.code(), Some(ErrorCode::UnknownLog));
    assert_eq!(e.to_string(), "No log registered with name nope");
    let e = client
        .read_range("a", 9, 0, 1)
        .await
        .err()
        .ok_or("no error")?;
    assert_eq!(e.code(), Some(ErrorCode::PartitionOutOfRange));
    assert!(matches!(e, ClientError::Server { code: Some(4), .. }));
    let e = client.list_logs().await.err().ok_or("no error")?;
    assert!(matches!(
        e,
        ClientError::Server {
            code: Some(4242),
            ..
        }
    ));
    assert_eq!(e.code(), None);
    assert!(client.list_logs().await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn split_responses_are_reassembled() -> TestResult {
    let fetched = Response::Fetched {
        data: Bytes::from_static(b"hello world"),
    };
    let (addr, _server) = fake_server(vec![
        Reply::Trickle(encoded(&fetched)),
        Reply::Trickle(encoded(&Response::Success)),
    ])
    .await?;
    let mut client = Client::connect(addr).await?;
    assert_eq!(
        client.fetch("a", 0, "g").await?.as_deref(),
        Some(&b"hello world"[..])
    );
    client.ack("a", 0, "g").await?;
    Ok(())
}

#[tokio::test]
async fn garbage_is_an_error_and_breaks_the_connection() -> TestResult {
    let (addr, _server) = fake_server(vec![Reply::Raw(vec![7, 7, 7])]).await?;
    let mut client = Client::connect(addr).await?;
    let e = client.publish("a", 0, "x").await.err().ok_or("no error")?;
    assert!(matches!(e, ClientError::Protocol(_)), "{e:?}");
    assert!(!e.keeps_connection());
    assert!(matches!(
        client.publish("a", 0, "x").await,
        Err(ClientError::Broken)
    ));
    Ok(())
}

#[tokio::test]
async fn hostile_lengths_are_refused_without_waiting() -> TestResult {
    // A fetch answer declaring a u64::MAX payload must fail at once, not allocate.
    let mut bytes = vec![0u8];
    bytes.extend_from_slice(&u64::MAX.to_be_bytes());
    let (addr, _server) = fake_server(vec![Reply::Raw(bytes)]).await?;
    let mut client = Client::connect(addr).await?;
    let e = client.fetch("a", 0, "g").await.err().ok_or("no error")?;
    assert!(matches!(e, ClientError::Protocol(_)), "{e:?}");
    Ok(())
}

#[tokio::test]
async fn trailing_bytes_break_the_connection() -> TestResult {
    let (addr, _server) = fake_server(vec![Reply::Raw(vec![0, 0])]).await?;
    let mut client = Client::connect(addr).await?;
    // One write of two bytes arrives in one read on loopback.
    let e = client.ack("a", 0, "g").await.err().ok_or("no error")?;
    assert!(matches!(e, ClientError::Protocol(_)), "{e:?}");
    assert!(matches!(
        client.ack("a", 0, "g").await,
        Err(ClientError::Broken)
    ));
    Ok(())
}

#[tokio::test]
async fn hangup_midway_is_closed() -> TestResult {
    let (addr, _server) = fake_server(vec![Reply::Hangup]).await?;
    let mut client = Client::connect(addr).await?;
    let e = client.list_logs().await.err().ok_or("no error")?;
    assert!(
        matches!(e, ClientError::Closed | ClientError::Io(_)),
        "{e:?}"
    );
    Ok(())
}

#[tokio::test]
async fn corrupt_batches_are_rejected() -> TestResult {
    let mut blob = batch(&["x"]).into_vec();
    if let Some(last) = blob.last_mut() {
        *last ^= 0xFF;
    }
    let mut short = batch(&["y"]).into_vec();
    short.truncate(short.len() - 1);
    let (addr, _server) = fake_server(vec![
        Reply::With(Response::Range {
            earliest_offset: 0,
            next_offset: 1,
            batches: Bytes::from(blob),
        }),
        Reply::With(Response::Range {
            earliest_offset: 0,
            next_offset: 1,
            batches: Bytes::from(short),
        }),
    ])
    .await?;
    let mut client = Client::connect(addr).await?;
    for _ in 0..2 {
        let e = client
            .read_range("a", 0, 0, 1)
            .await
            .err()
            .ok_or("no error")?;
        assert!(matches!(e, ClientError::InvalidBatch(_)), "{e:?}");
    }
    Ok(())
}

#[tokio::test]
async fn oversized_requests_are_refused_locally() -> TestResult {
    let (addr, server) = fake_server(vec![Reply::With(Response::Success)]).await?;
    let limits = Limits {
        max_record_size: 4,
        max_batch_size: 6,
        ..Limits::default()
    };
    let mut client = Client::connect(addr).await?.with_limits(limits);
    assert!(matches!(
        client.publish("a", 0, "12345").await,
        Err(ClientError::TooLarge { what: "record", .. })
    ));
    assert!(matches!(
        client.publish_records("a", 0, ["1234", "1234"]).await,
        Err(ClientError::TooLarge { .. })
    ));
    assert!(matches!(
        client.create_log(&"n".repeat(300), 1).await,
        Err(ClientError::Request(_))
    ));
    client.publish("a", 0, "1234").await?;
    drop(client);
    assert_eq!(server.await?.len(), 1);
    Ok(())
}

#[tokio::test]
async fn silence_times_out_and_breaks() -> TestResult {
    let (addr, _server) = fake_server(vec![Reply::Silence]).await?;
    let mut client = Client::connect(addr)
        .await?
        .with_timeout(Some(Duration::from_millis(50)));
    assert!(matches!(
        client.list_logs().await,
        Err(ClientError::Timeout(_))
    ));
    assert!(matches!(client.list_logs().await, Err(ClientError::Broken)));
    Ok(())
}

#[tokio::test]
async fn refused_connection_names_the_address() -> TestResult {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    drop(listener);
    let e = Client::connect(addr).await.err().ok_or("no error")?;
    assert!(e.to_string().contains(&addr.to_string()), "{e}");
    Ok(())
}

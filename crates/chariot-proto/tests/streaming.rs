//! Decoding from a byte stream: frames split across reads, frames back to back.

use bytes::{BufMut, Bytes, BytesMut};
use chariot_proto::{
    GroupOffset, Limits, LogInfo, PartitionInfo, ProtoError, Request, RequestKind, Response,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// One request of every kind, with non-trivial payloads.
fn sample_requests() -> Vec<Request> {
    vec![
        Request::CreateLog {
            log: "events.log".into(),
            partitions: 4,
        },
        Request::Publish {
            log: "events.log".into(),
            partition: 3,
            data: Bytes::from_static(b"hello"),
        },
        Request::Fetch {
            log: "events.log".into(),
            partition: 1,
            group: "billing".into(),
        },
        Request::Ack {
            log: "events.log".into(),
            partition: 1,
            group: "billing".into(),
        },
        Request::PublishBatch {
            log: "events.log".into(),
            partition: 70_000,
            batch: Bytes::from_static(&[9; 40]),
        },
        Request::PublishRecords {
            log: "events.log".into(),
            partition: 2,
            records: vec![
                Bytes::from_static(b"one"),
                Bytes::new(),
                Bytes::from_static(b"three"),
            ],
        },
        Request::ReadRange {
            log: "events.log".into(),
            partition: 0,
            offset: 1 << 40,
            max_bytes: 1 << 20,
        },
        Request::ListLogs,
        Request::DescribeLog {
            log: "events.log".into(),
        },
        Request::CreateLogExt {
            log: "events.log".into(),
            partitions: 1024,
        },
        Request::PublishRecordsAcks {
            acks: chariot_proto::ACKS_ALL,
            log: "events.log".into(),
            partition: 2,
            records: vec![Bytes::from_static(b"a"), Bytes::from_static(b"bc")],
        },
        Request::AckTo {
            log: "events.log".into(),
            partition: 3,
            group: "readers".into(),
            offset: 1 << 33,
        },
        Request::PublishBatchAcks {
            acks: chariot_proto::ACKS_ALL,
            log: "events.log".into(),
            partition: 5,
            batch: Bytes::from_static(&[7; 24]),
        },
    ]
}

/// Pairs of (the request kind answered, a response), covering every form.
fn sample_responses() -> Vec<(RequestKind, Response)> {
    vec![
        (RequestKind::CreateLog, Response::Success),
        (RequestKind::Publish, Response::Success),
        (RequestKind::Ack, Response::Success),
        (
            RequestKind::Fetch,
            Response::Fetched {
                data: Bytes::from_static(b"payload"),
            },
        ),
        (
            RequestKind::Fetch,
            Response::RogError {
                message: "No data left in the log to be read".into(),
            },
        ),
        (
            RequestKind::PublishBatch,
            Response::BatchPublished {
                base_offset: 42,
                record_count: 7,
            },
        ),
        (
            RequestKind::PublishRecords,
            Response::RecordsPublished { base_offset: 43 },
        ),
        (
            RequestKind::ReadRange,
            Response::Range {
                earliest_offset: 10,
                next_offset: 50,
                batches: Bytes::from_static(&[1, 2, 3, 4]),
            },
        ),
        (
            RequestKind::ListLogs,
            Response::Logs {
                logs: vec![
                    LogInfo {
                        name: "a".into(),
                        partitions: 1,
                    },
                    LogInfo {
                        name: "b".into(),
                        partitions: 9,
                    },
                ],
            },
        ),
        (
            RequestKind::DescribeLog,
            Response::LogDescription {
                partitions: vec![PartitionInfo {
                    earliest_offset: 0,
                    next_offset: 2,
                    groups: vec![
                        GroupOffset {
                            group: "g1".into(),
                            committed_offset: 1,
                        },
                        GroupOffset {
                            group: "g2".into(),
                            committed_offset: 2,
                        },
                    ],
                }],
            },
        ),
        (
            RequestKind::DescribeLog,
            Response::Error {
                code: 1,
                message: "No log registered with name x".into(),
            },
        ),
        (
            RequestKind::CreateLogExt,
            Response::LogCreated { partitions: 1024 },
        ),
        (
            RequestKind::PublishRecordsAcks,
            Response::RecordsPublished { base_offset: 44 },
        ),
        (
            RequestKind::AckTo,
            Response::GroupOffset { offset: 1 << 33 },
        ),
        (
            RequestKind::PublishBatchAcks,
            Response::BatchPublished {
                base_offset: 9,
                record_count: 2,
            },
        ),
    ]
}

#[test]
fn samples_cover_every_kind() {
    let requests: Vec<RequestKind> = sample_requests().iter().map(Request::kind).collect();
    assert_eq!(requests, RequestKind::ALL);
    for kind in RequestKind::ALL {
        assert!(
            sample_responses().iter().any(|(k, _)| *k == kind),
            "no response sample for {kind:?}"
        );
    }
}

#[test]
fn requests_split_byte_by_byte() -> TestResult {
    let limits = Limits::default();
    for request in sample_requests() {
        let mut encoded = BytesMut::new();
        request.encode(&mut encoded)?;
        let mut buf = BytesMut::new();
        let last = encoded.len() - 1;
        for (i, byte) in encoded.iter().enumerate() {
            buf.put_u8(*byte);
            let before = buf.clone();
            match Request::decode(&mut buf, &limits)? {
                None => {
                    assert!(i < last, "{request:?}: incomplete after its last byte");
                    assert_eq!(buf, before, "incomplete decode consumed bytes");
                }
                Some(decoded) => {
                    assert_eq!(i, last, "{request:?}: decoded after {} bytes", i + 1);
                    assert_eq!(decoded, request);
                    assert!(buf.is_empty());
                }
            }
        }
        assert!(buf.is_empty(), "{request:?} never decoded");
    }
    Ok(())
}

#[test]
fn responses_split_byte_by_byte() -> TestResult {
    let limits = Limits::default();
    for (kind, response) in sample_responses() {
        let mut encoded = BytesMut::new();
        response.encode(&mut encoded)?;
        let mut buf = BytesMut::new();
        let last = encoded.len() - 1;
        for (i, byte) in encoded.iter().enumerate() {
            buf.put_u8(*byte);
            match Response::decode(kind, &mut buf, &limits)? {
                None => assert!(i < last, "{response:?}: incomplete after its last byte"),
                Some(decoded) => {
                    assert_eq!(i, last, "{response:?}: decoded after {} bytes", i + 1);
                    assert_eq!(decoded, response);
                }
            }
        }
        assert!(buf.is_empty(), "{response:?} never decoded");
    }
    Ok(())
}

#[test]
fn pipelined_requests_decode_in_order() -> TestResult {
    let limits = Limits::default();
    let requests = sample_requests();
    let mut buf = BytesMut::new();
    for request in requests.iter().chain(requests.iter().rev()) {
        request.encode(&mut buf)?;
    }
    for expected in requests.iter().chain(requests.iter().rev()) {
        let decoded = Request::decode(&mut buf, &limits)?.ok_or("incomplete")?;
        assert_eq!(&decoded, expected);
    }
    assert!(buf.is_empty());
    assert_eq!(Request::decode(&mut buf, &limits)?, None);
    Ok(())
}

#[test]
fn two_frames_back_to_back_decode_as_two() -> TestResult {
    let limits = Limits::default();
    for request in sample_requests() {
        let mut buf = BytesMut::new();
        request.encode(&mut buf)?;
        request.encode(&mut buf)?;
        let first = Request::decode(&mut buf, &limits)?.ok_or("incomplete")?;
        let second = Request::decode(&mut buf, &limits)?.ok_or("incomplete")?;
        assert_eq!(first, request);
        assert_eq!(second, request);
        assert!(buf.is_empty());
    }
    Ok(())
}

#[test]
fn pipelined_responses_decode_in_order() -> TestResult {
    let limits = Limits::default();
    let responses = sample_responses();
    let mut buf = BytesMut::new();
    for (_, response) in &responses {
        response.encode(&mut buf)?;
    }
    for (kind, expected) in &responses {
        let decoded = Response::decode(*kind, &mut buf, &limits)?.ok_or("incomplete")?;
        assert_eq!(&decoded, expected);
    }
    assert!(buf.is_empty());
    Ok(())
}

#[test]
fn payloads_are_slices_of_the_input() -> TestResult {
    let mut buf = BytesMut::new();
    Request::Publish {
        log: "a".into(),
        partition: 0,
        data: Bytes::from_static(b"zero-copy"),
    }
    .encode(&mut buf)?;
    let input_range = buf.as_ptr_range();
    let Some(Request::Publish { data, .. }) = Request::decode(&mut buf, &Limits::default())? else {
        return Err("expected a publish".into());
    };
    assert!(input_range.contains(&data.as_ptr()), "payload was copied");
    Ok(())
}

#[test]
fn truncated_frames_are_incomplete_not_errors() -> TestResult {
    // Each of these is a strict prefix of a valid frame.
    let prefixes: [&[u8]; 6] = [
        &[],
        &[1],
        &[1, 0, 1, b'a', 0, 0, 0, 0, 0, 0, 0, 2, b'h'],
        &[2, 0, 1, b'a', 3, b'g'],
        &[0x10, 0, 0, 0],
        &[0x12, 0, 0, 0, 18, 1, b'a', 0, 0],
    ];
    for prefix in prefixes {
        let mut buf = BytesMut::from(prefix);
        assert_eq!(
            Request::decode(&mut buf, &Limits::default())?,
            None,
            "{prefix:?}"
        );
        assert_eq!(buf.as_ref(), prefix, "incomplete decode consumed bytes");
    }
    Ok(())
}

#[test]
fn errors_consume_nothing() {
    let mut buf = BytesMut::from(&[0x42, 1, 2, 3][..]);
    assert_eq!(
        Request::decode(&mut buf, &Limits::default()),
        Err(ProtoError::UnknownCommand(0x42))
    );
    assert_eq!(buf.as_ref(), &[0x42, 1, 2, 3]);
}

#[test]
fn error_after_a_good_frame_keeps_the_good_one() -> TestResult {
    let mut buf = BytesMut::new();
    Request::ListLogs.encode(&mut buf)?;
    buf.put_u8(0x99);
    assert_eq!(
        Request::decode(&mut buf, &Limits::default())?,
        Some(Request::ListLogs)
    );
    assert_eq!(
        Request::decode(&mut buf, &Limits::default()),
        Err(ProtoError::UnknownCommand(0x99))
    );
    Ok(())
}

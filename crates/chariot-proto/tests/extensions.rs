//! Chariot's extension commands (0x10–0x15), byte for byte.
//!
//! Expected bytes are written out by hand from the tables in
//! `docs/protocol.md`, never produced by the encoder under test.

use bytes::{Bytes, BytesMut};
use chariot_proto::{
    ErrorCode, GroupOffset, Limits, LogInfo, PartitionInfo, ProtoError, Request, RequestKind,
    Response,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn assert_request_bytes(request: &Request, bytes: &[u8]) -> TestResult {
    let mut dst = BytesMut::new();
    request.encode(&mut dst)?;
    assert_eq!(dst.as_ref(), bytes, "encoding {request:?}");
    let mut buf = BytesMut::from(bytes);
    let decoded = Request::decode(&mut buf, &Limits::default())?.ok_or("incomplete")?;
    assert_eq!(&decoded, request);
    assert!(buf.is_empty(), "leftover bytes {buf:?}");
    Ok(())
}

fn assert_response_bytes(kind: RequestKind, response: &Response, bytes: &[u8]) -> TestResult {
    let mut dst = BytesMut::new();
    response.encode(&mut dst)?;
    assert_eq!(dst.as_ref(), bytes, "encoding {response:?}");
    let mut buf = BytesMut::from(bytes);
    let decoded = Response::decode(kind, &mut buf, &Limits::default())?.ok_or("incomplete")?;
    assert_eq!(&decoded, response);
    assert!(buf.is_empty(), "leftover bytes {buf:?}");
    Ok(())
}

fn decode_request(bytes: &[u8], limits: &Limits) -> Result<Option<Request>, ProtoError> {
    Request::decode(&mut BytesMut::from(bytes), limits)
}

#[test]
fn publish_batch_bytes() -> TestResult {
    assert_request_bytes(
        &Request::PublishBatch {
            log: "a".into(),
            partition: 7,
            batch: Bytes::from_static(&[0xAA, 0xBB]),
        },
        &[
            0x10, // command
            0, 0, 0, 12, // body length
            1, b'a', // log name
            0, 0, 0, 7, // partition
            0, 0, 0, 2, 0xAA, 0xBB, // batch
        ],
    )
}

#[test]
fn publish_records_bytes() -> TestResult {
    assert_request_bytes(
        &Request::PublishRecords {
            log: "a".into(),
            partition: 1,
            records: vec![Bytes::from_static(b"x"), Bytes::new()],
        },
        &[
            0x11, // command
            0, 0, 0, 19, // body length
            1, b'a', // log name
            0, 0, 0, 1, // partition
            0, 0, 0, 2, // record count
            0, 0, 0, 1, b'x', // record 0
            0, 0, 0, 0, // record 1 (empty)
        ],
    )
}

#[test]
fn publish_records_acks_bytes() -> TestResult {
    assert_request_bytes(
        &Request::PublishRecordsAcks {
            acks: chariot_proto::ACKS_ALL,
            log: "a".into(),
            partition: 1,
            records: vec![Bytes::from_static(b"x")],
        },
        &[
            0x16, // command
            0, 0, 0, 16, // body length
            1,  // acks: all
            1, b'a', // log name
            0, 0, 0, 1, // partition
            0, 0, 0, 1, // record count
            0, 0, 0, 1, b'x', // record 0
        ],
    )
}

#[test]
fn publish_records_acks_refuses_an_unknown_acks_value() {
    let mut buf =
        bytes::BytesMut::from(&[0x16u8, 0, 0, 0, 12, 2, 1, b'a', 0, 0, 0, 1, 0, 0, 0, 0][..]);
    let before = buf.clone();
    let got = Request::decode(&mut buf, &chariot_proto::Limits::default());
    assert!(
        matches!(got, Err(chariot_proto::ProtoError::Malformed(_))),
        "{got:?}"
    );
    assert_eq!(buf, before, "nothing consumed");
}

#[test]
fn read_range_bytes() -> TestResult {
    assert_request_bytes(
        &Request::ReadRange {
            log: "a".into(),
            partition: 0,
            offset: 0x0102,
            max_bytes: 0x0001_0000,
        },
        &[
            0x12, // command
            0, 0, 0, 18, // body length
            1, b'a', // log name
            0, 0, 0, 0, // partition
            0, 0, 0, 0, 0, 0, 1, 2, // offset
            0, 1, 0, 0, // max bytes
        ],
    )
}

#[test]
fn list_logs_bytes() -> TestResult {
    assert_request_bytes(&Request::ListLogs, &[0x13, 0, 0, 0, 0])
}

#[test]
fn describe_log_bytes() -> TestResult {
    assert_request_bytes(
        &Request::DescribeLog { log: "ab".into() },
        &[0x14, 0, 0, 0, 3, 2, b'a', b'b'],
    )
}

#[test]
fn create_log_ext_bytes() -> TestResult {
    assert_request_bytes(
        &Request::CreateLogExt {
            log: "ab".into(),
            partitions: 1024,
        },
        &[0x15, 0, 0, 0, 7, 2, b'a', b'b', 0, 0, 4, 0],
    )
}

#[test]
fn log_created_bytes() -> TestResult {
    assert_response_bytes(
        RequestKind::CreateLogExt,
        &Response::LogCreated { partitions: 300 },
        &[0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 1, 44],
    )
}

#[test]
fn batch_published_bytes() -> TestResult {
    assert_response_bytes(
        RequestKind::PublishBatch,
        &Response::BatchPublished {
            base_offset: 5,
            record_count: 3,
        },
        &[
            0, // success
            0, 0, 0, 0, 0, 0, 0, 12, // body length
            0, 0, 0, 0, 0, 0, 0, 5, // base offset
            0, 0, 0, 3, // record count
        ],
    )
}

#[test]
fn records_published_bytes() -> TestResult {
    assert_response_bytes(
        RequestKind::PublishRecords,
        &Response::RecordsPublished {
            base_offset: 0x0102,
        },
        &[0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 1, 2],
    )
}

#[test]
fn range_bytes() -> TestResult {
    assert_response_bytes(
        RequestKind::ReadRange,
        &Response::Range {
            earliest_offset: 1,
            next_offset: 9,
            batches: Bytes::from_static(&[0xCC]),
        },
        &[
            0, // success
            0, 0, 0, 0, 0, 0, 0, 21, // body length
            0, 0, 0, 0, 0, 0, 0, 1, // earliest
            0, 0, 0, 0, 0, 0, 0, 9, // next
            0, 0, 0, 1, 0xCC, // batches
        ],
    )
}

#[test]
fn logs_bytes() -> TestResult {
    assert_response_bytes(
        RequestKind::ListLogs,
        &Response::Logs {
            logs: vec![
                LogInfo {
                    name: "a".into(),
                    partitions: 2,
                },
                LogInfo {
                    name: "bc".into(),
                    partitions: 1,
                },
            ],
        },
        &[
            0, // success
            0, 0, 0, 0, 0, 0, 0, 17, // body length
            0, 0, 0, 2, // log count
            1, b'a', 0, 0, 0, 2, // log 0
            2, b'b', b'c', 0, 0, 0, 1, // log 1
        ],
    )
}

#[test]
fn log_description_bytes() -> TestResult {
    assert_response_bytes(
        RequestKind::DescribeLog,
        &Response::LogDescription {
            partitions: vec![
                PartitionInfo {
                    earliest_offset: 0,
                    next_offset: 3,
                    groups: vec![GroupOffset {
                        group: "g".into(),
                        committed_offset: 2,
                    }],
                },
                PartitionInfo {
                    earliest_offset: 5,
                    next_offset: 5,
                    groups: vec![],
                },
            ],
        },
        &[
            0, // success
            0, 0, 0, 0, 0, 0, 0, 54, // body length
            0, 0, 0, 2, // partition count
            0, 0, 0, 0, 0, 0, 0, 0, // p0 earliest
            0, 0, 0, 0, 0, 0, 0, 3, // p0 next
            0, 0, 0, 1, // p0 group count
            1, b'g', 0, 0, 0, 0, 0, 0, 0, 2, // p0 group "g" at 2
            0, 0, 0, 0, 0, 0, 0, 5, // p1 earliest
            0, 0, 0, 0, 0, 0, 0, 5, // p1 next
            0, 0, 0, 0, // p1 group count
        ],
    )
}

#[test]
fn extension_error_bytes() -> TestResult {
    let response = Response::error(
        Some(RequestKind::ReadRange),
        ErrorCode::UnknownLog,
        "No log registered with name x",
    );
    let mut expected = vec![
        1, // error
        0, 0, 0, 0, 0, 0, 0, 31, // body length: code + 29 bytes of text
        0, 1, // code: unknown log
    ];
    expected.extend_from_slice(b"No log registered with name x");
    for kind in RequestKind::ALL.into_iter().filter(|k| k.is_extension()) {
        assert_response_bytes(kind, &response, &expected)?;
    }
    assert_eq!(response.error_code(), Some(ErrorCode::UnknownLog));
    Ok(())
}

#[test]
fn unknown_error_codes_still_decode() -> TestResult {
    let mut buf = BytesMut::from(&[1, 0, 0, 0, 0, 0, 0, 0, 3, 0x01, 0x00, b'!'][..]);
    let response = Response::decode(RequestKind::ListLogs, &mut buf, &Limits::default())?
        .ok_or("incomplete")?;
    assert_eq!(
        response,
        Response::Error {
            code: 256,
            message: "!".into()
        }
    );
    assert_eq!(response.error_code(), None);
    Ok(())
}

#[test]
fn error_body_without_a_code_is_malformed() {
    let mut buf = BytesMut::from(&[1, 0, 0, 0, 0, 0, 0, 0, 1, 0][..]);
    assert!(matches!(
        Response::decode(RequestKind::ListLogs, &mut buf, &Limits::default()),
        Err(ProtoError::Malformed(_))
    ));
}

#[test]
fn oversized_frame_is_rejected_from_the_header_alone() {
    let limits = Limits {
        max_frame_size: 64,
        ..Limits::default()
    };
    assert_eq!(
        decode_request(&[0x10, 0, 0, 0, 65], &limits),
        Err(ProtoError::FrameTooLarge {
            declared: 65,
            max: 64
        })
    );
    assert!(matches!(
        decode_request(&[0x11, 0xFF, 0xFF, 0xFF, 0xFF], &Limits::default()),
        Err(ProtoError::FrameTooLarge {
            declared: 0xFFFF_FFFF,
            ..
        })
    ));
    assert!(matches!(
        Response::decode(
            RequestKind::ReadRange,
            &mut BytesMut::from(&[0, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF][..]),
            &Limits::default()
        ),
        Err(ProtoError::FrameTooLarge { .. })
    ));
}

#[test]
fn oversized_batch_is_rejected_before_it_arrives() {
    let limits = Limits {
        max_batch_size: 4,
        ..Limits::default()
    };
    // Body declares 1000 bytes; only the batch length has arrived.
    let header = [0x10, 0, 0, 3, 0xE8, 1, b'a', 0, 0, 0, 0, 0, 0, 0, 5];
    assert_eq!(
        decode_request(&header, &limits),
        Err(ProtoError::BatchTooLarge {
            declared: 5,
            max: 4
        })
    );
    assert_eq!(
        ProtoError::BatchTooLarge {
            declared: 5,
            max: 4
        }
        .code(),
        ErrorCode::FrameTooLarge
    );
}

#[test]
fn oversized_record_in_publish_records_is_rejected() {
    let limits = Limits {
        max_record_size: 1,
        ..Limits::default()
    };
    let bytes = [
        0x11, 0, 0, 0, 16, 1, b'a', 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2,
    ];
    assert_eq!(
        decode_request(&bytes, &limits),
        Err(ProtoError::RecordTooLarge {
            declared: 2,
            max: 1
        })
    );
}

#[test]
fn publish_records_total_is_bounded_by_the_batch_limit() {
    let limits = Limits {
        max_batch_size: 2,
        ..Limits::default()
    };
    let bytes = [
        0x11, 0, 0, 0, 24, 1, b'a', 0, 0, 0, 0, 0, 0, 0, 3, // header, 3 records
        0, 0, 0, 1, b'x', // 1 byte so far
        0, 0, 0, 1, b'y', // 2 bytes so far
        0, 0, 0, 1, // would make 3
    ];
    assert_eq!(
        decode_request(&bytes, &limits),
        Err(ProtoError::BatchTooLarge {
            declared: 3,
            max: 2
        })
    );
}

#[test]
fn record_count_beyond_the_frame_is_malformed() {
    // Four billion records announced in a 10-byte body.
    let bytes = [
        0x11, 0, 0, 0, 10, 1, b'a', 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
    ];
    assert!(matches!(
        decode_request(&bytes, &Limits::default()),
        Err(ProtoError::Malformed(_))
    ));
}

#[test]
fn field_overrunning_the_declared_body_is_malformed() {
    // ReadRange whose body length (5) is too short for its fields; the bytes
    // after it belong to the next frame and must not be read as this one's.
    let mut bytes = vec![0x12, 0, 0, 0, 5, 1, b'a', 0, 0, 0];
    bytes.extend_from_slice(&[0x13, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert!(matches!(
        decode_request(&bytes, &Limits::default()),
        Err(ProtoError::Malformed(_))
    ));
}

#[test]
fn body_longer_than_its_fields_is_malformed() {
    let bytes = [0x14, 0, 0, 0, 4, 2, b'a', b'b', 0];
    assert!(matches!(
        decode_request(&bytes, &Limits::default()),
        Err(ProtoError::Malformed(_))
    ));
    let bytes = [0x13, 0, 0, 0, 1, 0];
    assert!(matches!(
        decode_request(&bytes, &Limits::default()),
        Err(ProtoError::Malformed(_))
    ));
}

#[test]
fn inner_length_past_the_body_is_malformed_before_the_body_arrives() {
    // A describe whose 1-byte body announces a 2-byte name: rejected at once,
    // without waiting for bytes that could only belong to the next frame.
    let bytes = [0x14, 0, 0, 0, 1, 2];
    assert!(matches!(
        decode_request(&bytes, &Limits::default()),
        Err(ProtoError::Malformed(_))
    ));
}

#[test]
fn responses_answer_only_their_kinds() {
    use RequestKind::*;
    let cases: [(Response, &[RequestKind]); 11] = [
        (Response::Success, &[CreateLog, Publish, Ack]),
        (Response::Fetched { data: Bytes::new() }, &[Fetch]),
        (
            Response::RogError {
                message: String::new(),
            },
            &[CreateLog, Publish, Fetch, Ack],
        ),
        (
            Response::BatchPublished {
                base_offset: 0,
                record_count: 0,
            },
            &[PublishBatch, PublishBatchAcks],
        ),
        (
            Response::RecordsPublished { base_offset: 0 },
            &[PublishRecords, PublishRecordsAcks],
        ),
        (
            Response::Range {
                earliest_offset: 0,
                next_offset: 0,
                batches: Bytes::new(),
            },
            &[ReadRange],
        ),
        (Response::Logs { logs: vec![] }, &[ListLogs]),
        (
            Response::LogDescription { partitions: vec![] },
            &[DescribeLog],
        ),
        (
            Response::Error {
                code: 1,
                message: String::new(),
            },
            &[
                PublishBatch,
                PublishRecords,
                ReadRange,
                ListLogs,
                DescribeLog,
                CreateLogExt,
                PublishRecordsAcks,
                AckTo,
                PublishBatchAcks,
            ],
        ),
        (Response::LogCreated { partitions: 1 }, &[CreateLogExt]),
        (Response::GroupOffset { offset: 3 }, &[AckTo]),
    ];
    for (response, kinds) in cases {
        for kind in RequestKind::ALL {
            assert_eq!(
                response.answers(kind),
                kinds.contains(&kind),
                "{response:?} answering {kind:?}"
            );
        }
    }
}

#[test]
fn proto_errors_map_to_wire_codes() {
    assert_eq!(ProtoError::Malformed("x").code(), ErrorCode::MalformedFrame);
    assert_eq!(
        ProtoError::FrameTooLarge {
            declared: 2,
            max: 1
        }
        .code(),
        ErrorCode::FrameTooLarge
    );
    assert_eq!(
        ProtoError::RecordTooLarge {
            declared: 2,
            max: 1
        }
        .code(),
        ErrorCode::RecordTooLarge
    );
    assert_eq!(
        ProtoError::UnknownFrameType(0).code(),
        ErrorCode::MalformedFrame
    );
}

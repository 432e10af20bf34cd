//! Rog's native protocol (commands 0–3), byte for byte.
//!
//! Expected bytes are written out by hand from the tables in
//! `docs/protocol.md`, never produced by the encoder under test.

use bytes::{Bytes, BytesMut};
use chariot_proto::{messages, ErrorCode, Limits, ProtoError, Request, RequestKind, Response};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn encode_request(request: &Request) -> Result<Vec<u8>, ProtoError> {
    let mut dst = BytesMut::new();
    request.encode(&mut dst)?;
    Ok(dst.to_vec())
}

fn encode_response(response: &Response) -> Result<Vec<u8>, ProtoError> {
    let mut dst = BytesMut::new();
    response.encode(&mut dst)?;
    Ok(dst.to_vec())
}

/// Checks both directions: the request encodes to `bytes`, and `bytes` decode
/// to the request, consuming all of them.
fn assert_request_bytes(request: &Request, bytes: &[u8]) -> TestResult {
    assert_eq!(encode_request(request)?, bytes, "encoding {request:?}");
    let mut buf = BytesMut::from(bytes);
    let decoded = Request::decode(&mut buf, &Limits::default())?.ok_or("incomplete")?;
    assert_eq!(&decoded, request);
    assert!(buf.is_empty(), "leftover bytes {buf:?}");
    Ok(())
}

fn assert_response_bytes(kind: RequestKind, response: &Response, bytes: &[u8]) -> TestResult {
    assert_eq!(encode_response(response)?, bytes, "encoding {response:?}");
    let mut buf = BytesMut::from(bytes);
    let decoded = Response::decode(kind, &mut buf, &Limits::default())?.ok_or("incomplete")?;
    assert_eq!(&decoded, response);
    assert!(buf.is_empty(), "leftover bytes {buf:?}");
    Ok(())
}

#[test]
fn create_log_bytes() -> TestResult {
    assert_request_bytes(
        &Request::CreateLog {
            log: "events".into(),
            partitions: 3,
        },
        &[0, 3, 6, b'e', b'v', b'e', b'n', b't', b's'],
    )
}

#[test]
fn create_log_with_zero_partitions_is_decodable() -> TestResult {
    // Rejecting zero is the server's job (with Rog's exact message), not a framing error.
    assert_request_bytes(
        &Request::CreateLog {
            log: "a".into(),
            partitions: 0,
        },
        &[0, 0, 1, b'a'],
    )
}

#[test]
fn publish_bytes() -> TestResult {
    assert_request_bytes(
        &Request::Publish {
            log: "a".into(),
            partition: 0,
            data: Bytes::from_static(b"hi"),
        },
        &[1, 0, 1, b'a', 0, 0, 0, 0, 0, 0, 0, 2, b'h', b'i'],
    )
}

#[test]
fn publish_empty_record_bytes() -> TestResult {
    assert_request_bytes(
        &Request::Publish {
            log: "a".into(),
            partition: 255,
            data: Bytes::new(),
        },
        &[1, 255, 1, b'a', 0, 0, 0, 0, 0, 0, 0, 0],
    )
}

#[test]
fn fetch_bytes_use_a_one_byte_group_length() -> TestResult {
    assert_request_bytes(
        &Request::Fetch {
            log: "a".into(),
            partition: 2,
            group: "g1".into(),
        },
        &[2, 2, 1, b'a', 2, b'g', b'1'],
    )
}

#[test]
fn ack_bytes() -> TestResult {
    assert_request_bytes(
        &Request::Ack {
            log: "a".into(),
            partition: 2,
            group: "g1".into(),
        },
        &[3, 2, 1, b'a', 2, b'g', b'1'],
    )
}

#[test]
fn utf8_names_are_counted_in_bytes() -> TestResult {
    assert_request_bytes(
        &Request::CreateLog {
            log: "é".into(),
            partitions: 1,
        },
        &[0, 1, 2, 0xC3, 0xA9],
    )
}

#[test]
fn success_is_a_single_zero_byte() -> TestResult {
    for kind in [
        RequestKind::CreateLog,
        RequestKind::Publish,
        RequestKind::Ack,
    ] {
        assert_response_bytes(kind, &Response::Success, &[0])?;
    }
    Ok(())
}

#[test]
fn fetch_success_bytes() -> TestResult {
    assert_response_bytes(
        RequestKind::Fetch,
        &Response::Fetched {
            data: Bytes::from_static(b"hi"),
        },
        &[0, 0, 0, 0, 0, 0, 0, 0, 2, b'h', b'i'],
    )
}

/// `0x01`, u64 length, then the text, as Rog's clients parse it.
fn rog_error_bytes(text: &str) -> Vec<u8> {
    let mut bytes = vec![1];
    bytes.extend_from_slice(&(text.len() as u64).to_be_bytes());
    bytes.extend_from_slice(text.as_bytes());
    bytes
}

#[test]
fn rog_error_bytes_by_hand() -> TestResult {
    let mut expected = vec![1, 0, 0, 0, 0, 0, 0, 0, 34];
    expected.extend_from_slice(b"No data left in the log to be read");
    assert_response_bytes(
        RequestKind::Fetch,
        &Response::error(
            Some(RequestKind::Fetch),
            ErrorCode::NoData,
            messages::no_data(),
        ),
        &expected,
    )
}

#[test]
fn every_rog_error_text_is_verbatim() -> TestResult {
    let cases = [
        (
            ErrorCode::InvalidPartitionCount,
            messages::invalid_partition_count(),
            "Number of partitions must be at least 1",
        ),
        (
            ErrorCode::LogAlreadyExists,
            messages::log_already_exists("events.log"),
            "Log events.log already exists",
        ),
        (
            ErrorCode::UnknownLog,
            messages::unknown_log("events.log"),
            "No log registered with name events.log",
        ),
        (
            ErrorCode::PartitionOutOfRange,
            messages::partition_out_of_range(10, "events.log", 3),
            "Trying to access partition 10 but log events.log has 3 partitions",
        ),
        (
            ErrorCode::NoData,
            messages::no_data(),
            "No data left in the log to be read",
        ),
    ];
    for (code, message, text) in cases {
        assert_eq!(message, text);
        for kind in [
            RequestKind::CreateLog,
            RequestKind::Publish,
            RequestKind::Fetch,
            RequestKind::Ack,
        ] {
            let response = Response::error(Some(kind), code, message.clone());
            assert_eq!(
                response,
                Response::RogError {
                    message: text.to_owned()
                }
            );
            assert_response_bytes(kind, &response, &rog_error_bytes(text))?;
        }
    }
    Ok(())
}

#[test]
fn rog_errors_carry_no_code() -> TestResult {
    // If a code were inserted, Rog clients would read its bytes as text.
    let bytes = encode_response(&Response::error(
        Some(RequestKind::Publish),
        ErrorCode::UnknownLog,
        "No log registered with name x",
    ))?;
    assert_eq!(bytes, rog_error_bytes("No log registered with name x"));
    Ok(())
}

#[test]
fn invalid_utf8_in_a_name_is_malformed() {
    let mut buf = BytesMut::from(&[0, 1, 1, 0xFF][..]);
    assert_eq!(
        Request::decode(&mut buf, &Limits::default()),
        Err(ProtoError::InvalidUtf8 { field: "log name" })
    );
    assert_eq!(buf.len(), 4, "errors consume nothing");
    assert_eq!(
        ProtoError::InvalidUtf8 { field: "log name" }.code(),
        ErrorCode::MalformedFrame
    );
}

#[test]
fn invalid_utf8_in_a_group_is_malformed() {
    let mut buf = BytesMut::from(&[2, 0, 1, b'a', 2, 0xC3, 0x28][..]);
    assert_eq!(
        Request::decode(&mut buf, &Limits::default()),
        Err(ProtoError::InvalidUtf8 {
            field: "group name"
        })
    );
}

#[test]
fn unknown_command_bytes_are_typed_errors() {
    for command in [0x04, 0x0F, 0x19, 0x30, 0xFF] {
        let mut buf = BytesMut::from(&[command, 0, 0][..]);
        let err = Request::decode(&mut buf, &Limits::default());
        assert_eq!(err, Err(ProtoError::UnknownCommand(command)));
        assert_eq!(buf.len(), 3);
        assert_eq!(
            ProtoError::UnknownCommand(command).code(),
            ErrorCode::UnknownCommand
        );
    }
}

#[test]
fn unknown_command_is_answered_in_the_coded_form() -> TestResult {
    let err = ProtoError::UnknownCommand(0x42);
    let response = Response::error(None, err.code(), err.to_string());
    assert_eq!(response.error_code(), Some(ErrorCode::UnknownCommand));
    let bytes = encode_response(&response)?;
    assert_eq!(
        bytes.get(..11),
        Some(&[1, 0, 0, 0, 0, 0, 0, 0, 27, 0, 10][..])
    );
    Ok(())
}

#[test]
fn oversized_publish_is_rejected_from_the_header_alone() {
    // Length 1 MiB + 1, and not a single payload byte has arrived.
    let mut buf = BytesMut::from(&[1, 0, 1, b'a', 0, 0, 0, 0, 0, 0x10, 0, 1][..]);
    assert_eq!(
        Request::decode(&mut buf, &Limits::default()),
        Err(ProtoError::RecordTooLarge {
            declared: 1024 * 1024 + 1,
            max: 1024 * 1024
        })
    );
    assert_eq!(buf.len(), 12);
}

#[test]
fn hostile_u64_length_does_not_allocate_or_wait() {
    let mut buf = BytesMut::from(
        &[
            1, 0, 1, b'a', 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
        ][..],
    );
    assert!(matches!(
        Request::decode(&mut buf, &Limits::default()),
        Err(ProtoError::RecordTooLarge {
            declared: u64::MAX,
            ..
        })
    ));
}

#[test]
fn record_exactly_at_the_limit_is_accepted() -> TestResult {
    let limits = Limits {
        max_record_size: 3,
        ..Limits::default()
    };
    let mut buf = BytesMut::from(&[1, 0, 1, b'a', 0, 0, 0, 0, 0, 0, 0, 3, 7, 8, 9][..]);
    let request = Request::decode(&mut buf, &limits)?.ok_or("incomplete")?;
    assert_eq!(
        request,
        Request::Publish {
            log: "a".into(),
            partition: 0,
            data: Bytes::from_static(&[7, 8, 9])
        }
    );
    Ok(())
}

#[test]
fn oversized_fetch_payload_is_rejected_by_the_client() {
    let limits = Limits {
        max_record_size: 1,
        ..Limits::default()
    };
    let mut buf = BytesMut::from(&[0, 0, 0, 0, 0, 0, 0, 0, 2][..]);
    assert_eq!(
        Response::decode(RequestKind::Fetch, &mut buf, &limits),
        Err(ProtoError::RecordTooLarge {
            declared: 2,
            max: 1
        })
    );
}

#[test]
fn oversized_rog_error_message_is_rejected() {
    let limits = Limits {
        max_frame_size: 8,
        ..Limits::default()
    };
    let mut buf = BytesMut::from(&[1, 0, 0, 0, 0, 0, 0, 0, 9][..]);
    assert_eq!(
        Response::decode(RequestKind::CreateLog, &mut buf, &limits),
        Err(ProtoError::FrameTooLarge {
            declared: 9,
            max: 8
        })
    );
}

#[test]
fn unknown_response_status_is_malformed() {
    for kind in RequestKind::ALL {
        let mut buf = BytesMut::from(&[2][..]);
        assert!(matches!(
            Response::decode(kind, &mut buf, &Limits::default()),
            Err(ProtoError::Malformed(_))
        ));
    }
}

#[test]
fn names_longer_than_255_bytes_cannot_be_encoded() {
    let mut dst = BytesMut::from(&b"earlier frame"[..]);
    let request = Request::Fetch {
        log: "a".into(),
        partition: 0,
        group: "g".repeat(256),
    };
    assert_eq!(
        request.encode(&mut dst),
        Err(ProtoError::FieldTooLong {
            field: "group name",
            len: 256,
            max: 255
        })
    );
    assert_eq!(dst.as_ref(), b"earlier frame", "nothing half-written");
}

#[test]
fn kinds_round_trip_their_command_bytes() {
    for kind in RequestKind::ALL {
        assert_eq!(RequestKind::from_command(kind.command()), Some(kind));
    }
    let commands: Vec<u8> = RequestKind::ALL.iter().map(|k| k.command()).collect();
    assert_eq!(
        commands,
        [0x00, 0x01, 0x02, 0x03, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18]
    );
    assert!(!RequestKind::Ack.is_extension());
    assert!(RequestKind::PublishBatch.is_extension());
}

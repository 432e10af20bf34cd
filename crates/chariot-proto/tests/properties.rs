//! Property tests: round trips for arbitrary frames, and the decoder contract
//! (no panics, nothing consumed unless a whole frame decodes, canonical
//! encodings) for arbitrary and mutated input.

use bytes::{Bytes, BytesMut};
use chariot_proto::chariots::{Frame, FrameType};
use chariot_proto::{
    GroupOffset, Limits, LogInfo, PartitionInfo, ProtoError, Request, RequestKind, Response,
};
use proptest::prelude::*;

/// Names are at most 255 bytes; up to 63 chars of up to 4 bytes each fits.
fn name() -> impl Strategy<Value = String> {
    prop_oneof!["[a-z0-9._-]{0,16}", ".{0,63}"]
}

fn blob() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..64).prop_map(Bytes::from)
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        (name(), any::<u8>()).prop_map(|(log, partitions)| Request::CreateLog { log, partitions }),
        (name(), any::<u8>(), blob()).prop_map(|(log, partition, data)| Request::Publish {
            log,
            partition,
            data
        }),
        (name(), any::<u8>(), name()).prop_map(|(log, partition, group)| Request::Fetch {
            log,
            partition,
            group
        }),
        (name(), any::<u8>(), name()).prop_map(|(log, partition, group)| Request::Ack {
            log,
            partition,
            group
        }),
        (name(), any::<u32>(), blob()).prop_map(|(log, partition, batch)| {
            Request::PublishBatch {
                log,
                partition,
                batch,
            }
        }),
        (0u8..=1, name(), any::<u32>(), blob()).prop_map(|(acks, log, partition, batch)| {
            Request::PublishBatchAcks {
                acks,
                log,
                partition,
                batch,
            }
        }),
        (
            name(),
            any::<u32>(),
            proptest::collection::vec(blob(), 0..8)
        )
            .prop_map(|(log, partition, records)| Request::PublishRecords {
                log,
                partition,
                records
            }),
        (name(), any::<u32>(), any::<u64>(), any::<u32>()).prop_map(
            |(log, partition, offset, max_bytes)| Request::ReadRange {
                log,
                partition,
                offset,
                max_bytes
            }
        ),
        Just(Request::ListLogs),
        name().prop_map(|log| Request::DescribeLog { log }),
        (name(), any::<u32>())
            .prop_map(|(log, partitions)| Request::CreateLogExt { log, partitions }),
        (name(), any::<u32>(), name(), any::<u64>()).prop_map(|(log, partition, group, offset)| {
            Request::AckTo {
                log,
                partition,
                group,
                offset,
            }
        }),
    ]
}

fn partition_info() -> impl Strategy<Value = PartitionInfo> {
    (
        any::<u64>(),
        any::<u64>(),
        proptest::collection::vec(
            (name(), any::<u64>()).prop_map(|(group, committed_offset)| GroupOffset {
                group,
                committed_offset,
            }),
            0..4,
        ),
    )
        .prop_map(|(earliest_offset, next_offset, groups)| PartitionInfo {
            earliest_offset,
            next_offset,
            groups,
        })
}

fn rog_kind() -> impl Strategy<Value = RequestKind> {
    prop_oneof![
        Just(RequestKind::CreateLog),
        Just(RequestKind::Publish),
        Just(RequestKind::Fetch),
        Just(RequestKind::Ack),
    ]
}

fn extension_kind() -> impl Strategy<Value = RequestKind> {
    prop_oneof![
        Just(RequestKind::PublishBatch),
        Just(RequestKind::PublishRecords),
        Just(RequestKind::ReadRange),
        Just(RequestKind::ListLogs),
        Just(RequestKind::DescribeLog),
        Just(RequestKind::CreateLogExt),
        Just(RequestKind::AckTo),
        Just(RequestKind::PublishBatchAcks),
    ]
}

fn any_kind() -> impl Strategy<Value = RequestKind> {
    proptest::sample::select(RequestKind::ALL.to_vec())
}

/// A response together with the kind of request it answers.
fn response() -> impl Strategy<Value = (RequestKind, Response)> {
    prop_oneof![
        prop_oneof![
            Just(RequestKind::CreateLog),
            Just(RequestKind::Publish),
            Just(RequestKind::Ack)
        ]
        .prop_map(|kind| (kind, Response::Success)),
        blob().prop_map(|data| (RequestKind::Fetch, Response::Fetched { data })),
        (rog_kind(), ".{0,40}").prop_map(|(kind, message)| (kind, Response::RogError { message })),
        (any::<u64>(), any::<u32>()).prop_map(|(base_offset, record_count)| (
            RequestKind::PublishBatch,
            Response::BatchPublished {
                base_offset,
                record_count
            }
        )),
        any::<u64>().prop_map(|base_offset| (
            RequestKind::PublishRecords,
            Response::RecordsPublished { base_offset }
        )),
        (any::<u64>(), any::<u64>(), blob()).prop_map(|(earliest_offset, next_offset, batches)| (
            RequestKind::ReadRange,
            Response::Range {
                earliest_offset,
                next_offset,
                batches
            }
        )),
        proptest::collection::vec(
            (name(), any::<u32>()).prop_map(|(name, partitions)| LogInfo { name, partitions }),
            0..6
        )
        .prop_map(|logs| (RequestKind::ListLogs, Response::Logs { logs })),
        proptest::collection::vec(partition_info(), 0..4).prop_map(|partitions| (
            RequestKind::DescribeLog,
            Response::LogDescription { partitions }
        )),
        any::<u32>().prop_map(|partitions| (
            RequestKind::CreateLogExt,
            Response::LogCreated { partitions }
        )),
        any::<u64>().prop_map(|offset| (RequestKind::AckTo, Response::GroupOffset { offset })),
        (extension_kind(), any::<u16>(), ".{0,40}")
            .prop_map(|(kind, code, message)| (kind, Response::Error { code, message })),
    ]
}

fn chariots_frame() -> impl Strategy<Value = Frame> {
    (
        prop_oneof![
            Just(FrameType::Record),
            Just(FrameType::Records),
            Just(FrameType::Ack)
        ],
        blob(),
    )
        .prop_map(|(frame_type, payload)| Frame {
            frame_type,
            payload,
        })
}

/// Small limits, so that random lengths hit them often.
fn tight_limits() -> Limits {
    Limits {
        max_record_size: 16,
        max_batch_size: 32,
        max_frame_size: 48,
    }
}

/// Input that looks like the start of a request often enough to reach deep
/// into the decoders: a real command byte (usually) followed by random bytes.
fn request_like_bytes() -> impl Strategy<Value = Vec<u8>> {
    (
        prop_oneof![
            3 => any_kind().prop_map(RequestKind::command),
            1 => any::<u8>(),
        ],
        proptest::collection::vec(any::<u8>(), 0..96),
    )
        .prop_map(|(first, rest)| {
            let mut bytes = vec![first];
            bytes.extend(rest);
            bytes
        })
}

fn fail(err: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(err.to_string())
}

fn encode_request(request: &Request) -> Result<BytesMut, TestCaseError> {
    let mut buf = BytesMut::new();
    request.encode(&mut buf).map_err(fail)?;
    Ok(buf)
}

/// The decoder contract on arbitrary input: no panic; on `None` or an error,
/// nothing consumed; on success, the consumed bytes are exactly the value's
/// own encoding (so the format has one encoding per value).
fn check_contract<T, D, E>(input: &[u8], decode: D, encode: E) -> Result<(), TestCaseError>
where
    D: FnOnce(&mut BytesMut) -> Result<Option<T>, ProtoError>,
    E: FnOnce(&T, &mut BytesMut) -> Result<(), ProtoError>,
{
    let mut buf = BytesMut::from(input);
    match decode(&mut buf) {
        Ok(Some(value)) => {
            let consumed = input.len() - buf.len();
            let mut reencoded = BytesMut::new();
            encode(&value, &mut reencoded).map_err(fail)?;
            prop_assert_eq!(Some(reencoded.as_ref()), input.get(..consumed));
        }
        Ok(None) | Err(_) => prop_assert_eq!(buf.as_ref(), input),
    }
    Ok(())
}

proptest! {
    #[test]
    fn requests_round_trip(request in request()) {
        let mut buf = encode_request(&request)?;
        buf.extend_from_slice(b"next");
        let decoded = Request::decode(&mut buf, &Limits::default()).map_err(fail)?;
        prop_assert_eq!(decoded, Some(request));
        prop_assert_eq!(buf.as_ref(), b"next");
    }

    #[test]
    fn responses_round_trip((kind, response) in response()) {
        prop_assert!(response.answers(kind));
        let mut buf = BytesMut::new();
        response.encode(&mut buf).map_err(fail)?;
        buf.extend_from_slice(b"next");
        let decoded = Response::decode(kind, &mut buf, &Limits::default()).map_err(fail)?;
        prop_assert_eq!(decoded, Some(response));
        prop_assert_eq!(buf.as_ref(), b"next");
    }

    #[test]
    fn chariots_frames_round_trip(frame in chariots_frame()) {
        let mut buf = BytesMut::new();
        frame.encode(&mut buf).map_err(fail)?;
        buf.extend_from_slice(b"next");
        let decoded = Frame::decode(&mut buf, &Limits::default()).map_err(fail)?;
        prop_assert_eq!(decoded, Some(frame));
        prop_assert_eq!(buf.as_ref(), b"next");
    }

    #[test]
    fn every_proper_prefix_is_incomplete(request in request()) {
        let encoded = encode_request(&request)?;
        for cut in 0..encoded.len() {
            let mut buf = BytesMut::from(encoded.get(..cut).unwrap_or_default());
            prop_assert_eq!(Request::decode(&mut buf, &Limits::default()).map_err(fail)?, None);
            prop_assert_eq!(buf.len(), cut);
        }
    }

    #[test]
    fn arbitrary_chunking_decodes_the_same_stream(
        requests in proptest::collection::vec(request(), 1..6),
        chunk_sizes in proptest::collection::vec(1usize..16, 1..64),
    ) {
        let mut stream = BytesMut::new();
        for request in &requests {
            request.encode(&mut stream).map_err(fail)?;
        }
        let mut buf = BytesMut::new();
        let mut decoded = Vec::new();
        let mut sizes = chunk_sizes.iter().cycle();
        while !stream.is_empty() {
            let size = sizes.next().copied().unwrap_or(1).min(stream.len());
            buf.extend_from_slice(&stream.split_to(size));
            while let Some(request) = Request::decode(&mut buf, &Limits::default()).map_err(fail)? {
                decoded.push(request);
            }
        }
        prop_assert_eq!(decoded, requests);
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn random_bytes_never_break_the_request_decoder(input in request_like_bytes()) {
        for limits in [Limits::default(), tight_limits()] {
            check_contract(&input, |buf| Request::decode(buf, &limits), Request::encode)?;
        }
    }

    #[test]
    fn random_bytes_never_break_the_response_decoder(
        kind in any_kind(),
        input in proptest::collection::vec(any::<u8>(), 0..96),
    ) {
        for limits in [Limits::default(), tight_limits()] {
            check_contract(&input, |buf| Response::decode(kind, buf, &limits), Response::encode)?;
        }
    }

    #[test]
    fn random_bytes_never_break_the_chariots_decoder(
        input in proptest::collection::vec(any::<u8>(), 0..96),
    ) {
        for limits in [Limits::default(), tight_limits()] {
            check_contract(&input, |buf| Frame::decode(buf, &limits), Frame::encode)?;
        }
    }

    #[test]
    fn mutated_requests_never_break_the_decoder(
        request in request(),
        position in any::<prop::sample::Index>(),
        value in any::<u8>(),
        truncate in any::<prop::sample::Index>(),
    ) {
        let mut bytes = encode_request(&request)?.to_vec();
        let at = position.index(bytes.len().max(1));
        if let Some(byte) = bytes.get_mut(at) {
            *byte = value;
        }
        let keep = truncate.index(bytes.len() + 1);
        bytes.truncate(keep.max(bytes.len() / 2));
        for limits in [Limits::default(), tight_limits()] {
            check_contract(&bytes, |buf| Request::decode(buf, &limits), Request::encode)?;
        }
    }

    #[test]
    fn mutated_responses_never_break_the_decoder(
        (kind, response) in response(),
        position in any::<prop::sample::Index>(),
        value in any::<u8>(),
    ) {
        let mut buf = BytesMut::new();
        response.encode(&mut buf).map_err(fail)?;
        let mut bytes = buf.to_vec();
        let at = position.index(bytes.len().max(1));
        if let Some(byte) = bytes.get_mut(at) {
            *byte = value;
        }
        for limits in [Limits::default(), tight_limits()] {
            check_contract(&bytes, |buf| Response::decode(kind, buf, &limits), Response::encode)?;
        }
    }
}

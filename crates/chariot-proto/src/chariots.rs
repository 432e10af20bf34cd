//! Framing of the gochariots-compatible record port.
//!
//! A frame is a big-endian `u32` length (which counts the type byte), one type
//! byte and a payload. Payloads are JSON, but parsing them is the broker's job:
//! this module only finds frame boundaries, so the JSON parser never sees a
//! partial or oversized document.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::ProtoError;
use crate::limits::Limits;
use crate::wire::{encode_atomically, len32, settle, take_frame, Parse, Reader, Span};

/// FNV-1a, 64 bits: the hash gochariots gives a tag, computed over the UTF-8 bytes of
/// `key:value`. Clients compute it for their dependencies (`prehash`), so it lives with
/// the protocol rather than in the broker.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The hash of one tag.
pub fn tag_hash(key: &str, value: &str) -> u64 {
    fnv1a64(format!("{key}:{value}").as_bytes())
}

/// What a Chariots frame carries; the discriminant is the type byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameType {
    /// `'r'` (114), client to server: one JSON record.
    Record = b'r',
    /// `'s'` (115), client to server: a JSON array of records.
    Records = b's',
    /// `'a'` (97), server to client: acknowledgment of one received frame,
    /// with a JSON payload produced by the broker.
    Ack = b'a',
    /// `'p'` (112), datacenter to datacenter: a JSON batch of records propagated
    /// from their origin, in TOId order (Chariot's extension of the framing).
    Propagate = b'p',
}

impl FrameType {
    /// The type byte on the wire.
    pub const fn byte(self) -> u8 {
        self as u8
    }

    /// The frame type for a type byte, if known.
    pub const fn from_byte(byte: u8) -> Option<FrameType> {
        match byte {
            b'r' => Some(FrameType::Record),
            b's' => Some(FrameType::Records),
            b'a' => Some(FrameType::Ack),
            b'p' => Some(FrameType::Propagate),
            _ => None,
        }
    }
}

/// One Chariots frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// What the payload is.
    pub frame_type: FrameType,
    /// The payload, unparsed.
    pub payload: Bytes,
}

/// Bytes before the payload: the length field and the type byte.
pub const HEADER_LEN: usize = 4 + 1;

impl Frame {
    /// The acknowledgment the server sends back for one received frame.
    pub fn ack(payload: Bytes) -> Frame {
        Frame {
            frame_type: FrameType::Ack,
            payload,
        }
    }

    /// Decodes the frame at the front of `buf`.
    ///
    /// Same contract as [`Request::decode`](crate::Request::decode): `Ok(None)`
    /// and `Err` consume nothing; `Ok(Some)` consumes exactly one frame. The
    /// declared length is checked against [`Limits::max_frame_size`] as soon as
    /// the four length bytes are in, and the type byte as soon as it arrives.
    /// All three types decode (so a Rust client can read acks); a broker should
    /// treat an `'a'` frame from a client as a protocol error.
    pub fn decode(buf: &mut BytesMut, limits: &Limits) -> Result<Option<Frame>, ProtoError> {
        let mut reader = Reader::new(buf);
        let Some((frame_type, payload)) = settle(parse(&mut reader, limits))? else {
            return Ok(None);
        };
        let Some(frame) = take_frame(buf, reader.position()) else {
            return Ok(None);
        };
        Ok(Some(Frame {
            frame_type,
            payload: payload.cut(&frame)?,
        }))
    }

    /// Appends the frame's wire form to `dst`.
    ///
    /// Fails only if the payload is too long for the `u32` length, in which
    /// case `dst` is left as it was.
    pub fn encode(&self, dst: &mut BytesMut) -> Result<(), ProtoError> {
        encode_atomically(dst, |dst| {
            let len = self
                .payload
                .len()
                .checked_add(1)
                .ok_or(ProtoError::FieldTooLong {
                    field: "Chariots payload",
                    len: self.payload.len(),
                    max: u64::from(u32::MAX - 1),
                })?;
            dst.put_u32(len32("Chariots payload", len)?);
            dst.put_u8(self.frame_type.byte());
            dst.put_slice(&self.payload);
            Ok(())
        })
    }
}

fn parse(r: &mut Reader<'_>, limits: &Limits) -> Parse<(FrameType, Span)> {
    let len = limits.check_frame(u64::from(r.u32()?))?;
    let payload_len = len.checked_sub(1).ok_or(ProtoError::Malformed(
        "Chariots frame length must count the type byte",
    ))?;
    r.enter(len)?;
    let byte = r.u8()?;
    let frame_type = FrameType::from_byte(byte).ok_or(ProtoError::UnknownFrameType(byte))?;
    let payload = r.span(payload_len)?;
    r.finish()?;
    Ok((frame_type, payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn fnv_check_value_from_the_gochariots_docs() {
        assert_eq!(fnv1a64(b"k1:v1"), 9_489_172_654_252_433_228);
        assert_eq!(tag_hash("k1", "v1"), 9_489_172_654_252_433_228);
    }

    #[test]
    fn record_frame_bytes() -> TestResult {
        let mut dst = BytesMut::new();
        Frame {
            frame_type: FrameType::Record,
            payload: Bytes::from_static(b"{}"),
        }
        .encode(&mut dst)?;
        assert_eq!(dst.as_ref(), &[0, 0, 0, 3, b'r', b'{', b'}']);
        Ok(())
    }

    #[test]
    fn ack_frame_bytes() -> TestResult {
        let mut dst = BytesMut::new();
        Frame::ack(Bytes::from_static(b"[1]")).encode(&mut dst)?;
        assert_eq!(dst.as_ref(), &[0, 0, 0, 4, 97, b'[', b'1', b']']);
        Ok(())
    }

    #[test]
    fn decodes_batch_frame_and_leaves_the_rest() -> TestResult {
        let mut buf = BytesMut::from(&[0, 0, 0, 3, 115, b'[', b']', 0, 0][..]);
        let frame = Frame::decode(&mut buf, &Limits::default())?.ok_or("incomplete")?;
        assert_eq!(frame.frame_type, FrameType::Records);
        assert_eq!(frame.payload.as_ref(), b"[]");
        assert_eq!(buf.as_ref(), &[0, 0]);
        Ok(())
    }

    #[test]
    fn empty_payload_is_allowed() -> TestResult {
        let mut buf = BytesMut::from(&[0, 0, 0, 1, b'r'][..]);
        let frame = Frame::decode(&mut buf, &Limits::default())?.ok_or("incomplete")?;
        assert!(frame.payload.is_empty());
        assert!(buf.is_empty());
        Ok(())
    }

    #[test]
    fn split_frame_waits_for_every_byte() -> TestResult {
        let mut encoded = BytesMut::new();
        Frame {
            frame_type: FrameType::Record,
            payload: Bytes::from_static(br#"{"k":1}"#),
        }
        .encode(&mut encoded)?;
        let mut buf = BytesMut::new();
        let last = encoded.len().saturating_sub(1);
        for (i, byte) in encoded.iter().enumerate() {
            buf.put_u8(*byte);
            let decoded = Frame::decode(&mut buf, &Limits::default())?;
            assert_eq!(decoded.is_some(), i == last, "after byte {i}");
        }
        assert!(buf.is_empty());
        Ok(())
    }

    #[test]
    fn zero_length_is_malformed() {
        let mut buf = BytesMut::from(&[0, 0, 0, 0, b'r'][..]);
        assert!(matches!(
            Frame::decode(&mut buf, &Limits::default()),
            Err(ProtoError::Malformed(_))
        ));
        assert_eq!(buf.len(), 5);
    }

    #[test]
    fn oversized_length_is_rejected_from_the_header_alone() {
        let limits = Limits {
            max_frame_size: 100,
            ..Limits::default()
        };
        let mut buf = BytesMut::from(&[0, 0, 0, 101][..]);
        assert_eq!(
            Frame::decode(&mut buf, &limits),
            Err(ProtoError::FrameTooLarge {
                declared: 101,
                max: 100
            })
        );
        let mut buf = BytesMut::from(&[0xFF, 0xFF, 0xFF, 0xFF][..]);
        assert!(matches!(
            Frame::decode(&mut buf, &Limits::default()),
            Err(ProtoError::FrameTooLarge { .. })
        ));
    }

    #[test]
    fn unknown_type_is_rejected_before_the_payload() {
        let mut buf = BytesMut::from(&[0, 0, 0, 50, b'x'][..]);
        assert_eq!(
            Frame::decode(&mut buf, &Limits::default()),
            Err(ProtoError::UnknownFrameType(b'x'))
        );
    }
}

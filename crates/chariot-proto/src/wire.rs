//! Primitive reads and writes shared by every codec.
//!
//! Decoding is a single pass over the borrowed input that records *where*
//! payloads are ([`Span`]s) instead of copying them. Only once a whole frame is
//! known to be present and valid does the caller split it off the buffer,
//! freeze it and cut the spans out as zero-copy [`Bytes`]. That ordering is
//! what lets every decoder leave the buffer untouched on both "incomplete" and
//! "malformed".

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::ProtoError;
use crate::limits::widen;

/// Why a parse stopped early.
#[derive(Debug)]
pub(crate) enum Stop {
    /// The input ends before the frame does; try again with more bytes.
    Incomplete,
    /// The frame is invalid no matter what bytes follow.
    Invalid(ProtoError),
}

impl From<ProtoError> for Stop {
    fn from(err: ProtoError) -> Self {
        Stop::Invalid(err)
    }
}

pub(crate) type Parse<T> = Result<T, Stop>;

/// Maps a parse outcome onto the public decoder contract.
pub(crate) fn settle<T>(outcome: Parse<T>) -> Result<Option<T>, ProtoError> {
    match outcome {
        Ok(value) => Ok(Some(value)),
        Err(Stop::Incomplete) => Ok(None),
        Err(Stop::Invalid(err)) => Err(err),
    }
}

/// Byte range of a payload inside the frame being decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    start: usize,
    end: usize,
}

impl Span {
    /// The payload as a zero-copy slice of the frozen frame.
    pub(crate) fn cut(self, frame: &Bytes) -> Result<Bytes, ProtoError> {
        if self.start <= self.end && self.end <= frame.len() {
            Ok(frame.slice(self.start..self.end))
        } else {
            // Spans come from a parse of these very bytes, so this is a bug in
            // this crate; report it rather than panic in a server.
            Err(ProtoError::Malformed(
                "internal error: payload outside its frame",
            ))
        }
    }
}

/// Removes the first `len` bytes of `buf` as an immutable, shareable frame.
pub(crate) fn take_frame(buf: &mut BytesMut, len: usize) -> Option<Bytes> {
    (len <= buf.len()).then(|| buf.split_to(len).freeze())
}

/// A cursor over the bytes received so far.
///
/// Running out of input is [`Stop::Incomplete`]. Inside a length-prefixed frame
/// (after [`Reader::enter`]) reading past the declared end is instead
/// malformed, even if more bytes are buffered: they belong to the next frame.
/// Checking the declared end first means a lying inner length is rejected as
/// soon as it is read, without waiting for bytes that will never come.
pub(crate) struct Reader<'a> {
    input: &'a [u8],
    pos: usize,
    end: Option<usize>,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(input: &'a [u8]) -> Self {
        Reader {
            input,
            pos: 0,
            end: None,
        }
    }

    /// Bytes consumed so far; after a complete parse, the frame length.
    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    /// Declares that the next `len` bytes are the rest of the frame.
    pub(crate) fn enter(&mut self, len: usize) -> Parse<()> {
        let end = self
            .pos
            .checked_add(len)
            .ok_or(ProtoError::Malformed("frame length overflows"))?;
        if self.end.is_some_and(|outer| end > outer) {
            return Err(ProtoError::Malformed("length exceeds the enclosing frame").into());
        }
        self.end = Some(end);
        Ok(())
    }

    /// Bytes left before the declared end, if inside a frame.
    pub(crate) fn remaining_in_frame(&self) -> Option<usize> {
        self.end.map(|end| end.saturating_sub(self.pos))
    }

    /// Checks that the body was consumed exactly; returns the frame length.
    pub(crate) fn finish(&self) -> Parse<usize> {
        match self.end {
            Some(end) if end != self.pos => {
                Err(ProtoError::Malformed("trailing bytes after the last field").into())
            }
            _ => Ok(self.pos),
        }
    }

    pub(crate) fn span(&mut self, len: usize) -> Parse<Span> {
        let end = self
            .pos
            .checked_add(len)
            .ok_or(ProtoError::Malformed("field length overflows"))?;
        if self.end.is_some_and(|frame_end| end > frame_end) {
            return Err(ProtoError::Malformed("field extends past the end of its frame").into());
        }
        if end > self.input.len() {
            return Err(Stop::Incomplete);
        }
        let span = Span {
            start: self.pos,
            end,
        };
        self.pos = end;
        Ok(span)
    }

    pub(crate) fn bytes(&mut self, len: usize) -> Parse<&'a [u8]> {
        let span = self.span(len)?;
        self.input.get(span.start..span.end).ok_or(Stop::Incomplete)
    }

    fn array<const N: usize>(&mut self) -> Parse<[u8; N]> {
        let bytes = self.bytes(N)?;
        bytes.try_into().map_err(|_| Stop::Incomplete)
    }

    pub(crate) fn u8(&mut self) -> Parse<u8> {
        self.array().map(u8::from_be_bytes)
    }

    pub(crate) fn u16(&mut self) -> Parse<u16> {
        self.array().map(u16::from_be_bytes)
    }

    pub(crate) fn u32(&mut self) -> Parse<u32> {
        self.array().map(u32::from_be_bytes)
    }

    pub(crate) fn u64(&mut self) -> Parse<u64> {
        self.array().map(u64::from_be_bytes)
    }

    /// A UTF-8 string of `len` bytes.
    pub(crate) fn string(&mut self, len: usize, field: &'static str) -> Parse<String> {
        let bytes = self.bytes(len)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| ProtoError::InvalidUtf8 { field }.into())
    }

    /// A UTF-8 string prefixed by a one-byte length (names and groups).
    pub(crate) fn string8(&mut self, field: &'static str) -> Parse<String> {
        let len = self.u8()?;
        self.string(usize::from(len), field)
    }

    /// Rejects a count of items that could not fit in the rest of the frame.
    ///
    /// Returns a safe capacity to preallocate: a hostile count cannot make the
    /// decoder reserve more entries than the declared frame could hold.
    pub(crate) fn count(&mut self, min_item_len: usize) -> Parse<usize> {
        let count = self.u32()?;
        let count = usize::try_from(count)
            .map_err(|_| ProtoError::Malformed("item count does not fit in memory"))?;
        let room = self.remaining_in_frame().unwrap_or(0);
        match count.checked_mul(min_item_len) {
            Some(needed) if needed <= room => Ok(count),
            _ => Err(ProtoError::Malformed("item count exceeds what the frame can hold").into()),
        }
    }
}

/// Writes a string with a one-byte length prefix.
pub(crate) fn put_string8(
    dst: &mut BytesMut,
    field: &'static str,
    value: &str,
) -> Result<(), ProtoError> {
    let len = u8::try_from(value.len()).map_err(|_| ProtoError::FieldTooLong {
        field,
        len: value.len(),
        max: u64::from(u8::MAX),
    })?;
    dst.put_u8(len);
    dst.put_slice(value.as_bytes());
    Ok(())
}

/// Writes bytes with a four-byte length prefix.
pub(crate) fn put_bytes32(
    dst: &mut BytesMut,
    field: &'static str,
    value: &[u8],
) -> Result<(), ProtoError> {
    dst.put_u32(len32(field, value.len())?);
    dst.put_slice(value);
    Ok(())
}

/// Writes bytes with an eight-byte length prefix.
pub(crate) fn put_bytes64(dst: &mut BytesMut, value: &[u8]) {
    dst.put_u64(widen(value.len()));
    dst.put_slice(value);
}

pub(crate) fn len32(field: &'static str, len: usize) -> Result<u32, ProtoError> {
    u32::try_from(len).map_err(|_| ProtoError::FieldTooLong {
        field,
        len,
        max: u64::from(u32::MAX),
    })
}

/// Width of a length prefix written before its body is known.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Width {
    U32,
    U64,
}

/// A length prefix reserved before the body is written and patched after, so
/// bodies (which may embed large blobs) are written once, straight into `dst`.
struct LengthSlot {
    at: usize,
    width: Width,
}

impl LengthSlot {
    fn reserve(dst: &mut BytesMut, width: Width) -> LengthSlot {
        let at = dst.len();
        match width {
            Width::U32 => dst.put_u32(0),
            Width::U64 => dst.put_u64(0),
        }
        LengthSlot { at, width }
    }

    fn fill(self, dst: &mut BytesMut) -> Result<(), ProtoError> {
        let (size, field_max) = match self.width {
            Width::U32 => (4, u64::from(u32::MAX)),
            Width::U64 => (8, u64::MAX),
        };
        let body_start = self.at.saturating_add(size);
        let body_len = dst.len().saturating_sub(body_start);
        let too_long = ProtoError::FieldTooLong {
            field: "frame body",
            len: body_len,
            max: field_max,
        };
        let slot = dst
            .get_mut(self.at..body_start)
            .ok_or(ProtoError::Malformed(
                "internal error: length slot outside buffer",
            ))?;
        match self.width {
            Width::U32 => {
                let len = u32::try_from(body_len).map_err(|_| too_long)?;
                slot.copy_from_slice(&len.to_be_bytes());
            }
            Width::U64 => {
                let len = u64::try_from(body_len).map_err(|_| too_long)?;
                slot.copy_from_slice(&len.to_be_bytes());
            }
        }
        Ok(())
    }
}

/// Writes a length-prefixed frame body produced by `body`.
pub(crate) fn put_frame(
    dst: &mut BytesMut,
    width: Width,
    body: impl FnOnce(&mut BytesMut) -> Result<(), ProtoError>,
) -> Result<(), ProtoError> {
    let slot = LengthSlot::reserve(dst, width);
    body(dst)?;
    slot.fill(dst)
}

/// Runs an encoder, undoing any partial write if it fails, so a failed encode
/// never leaves half a frame in a buffer that is about to be sent.
pub(crate) fn encode_atomically(
    dst: &mut BytesMut,
    write: impl FnOnce(&mut BytesMut) -> Result<(), ProtoError>,
) -> Result<(), ProtoError> {
    let start = dst.len();
    let result = write(dst);
    if result.is_err() {
        dst.truncate(start);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_big_endian() -> Result<(), Box<dyn std::error::Error>> {
        let input = [0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07];
        let mut r = Reader::new(&input);
        assert_eq!(r.u8().ok(), Some(0x01));
        assert_eq!(r.u16().ok(), Some(0x0203));
        assert_eq!(r.u32().ok(), Some(0x0405_0607));
        assert!(matches!(r.u8(), Err(Stop::Incomplete)));
        Ok(())
    }

    #[test]
    fn overrunning_a_frame_is_malformed_not_incomplete() {
        let input = [0u8; 16];
        let mut r = Reader::new(&input);
        assert!(r.enter(2).is_ok());
        // Plenty of bytes are buffered, but they are not part of this frame.
        assert!(matches!(
            r.u32(),
            Err(Stop::Invalid(ProtoError::Malformed(_)))
        ));
    }

    #[test]
    fn short_bodies_are_trailing_bytes() {
        let input = [0u8; 4];
        let mut r = Reader::new(&input);
        assert!(r.enter(4).is_ok());
        assert!(r.u16().is_ok());
        assert!(matches!(
            r.finish(),
            Err(Stop::Invalid(ProtoError::Malformed(_)))
        ));
    }

    #[test]
    fn hostile_counts_are_rejected() {
        // Count 0xFFFF_FFFF in a 4-byte body: cannot possibly fit.
        let input = [0xFF, 0xFF, 0xFF, 0xFF];
        let mut r = Reader::new(&input);
        assert!(r.enter(4).is_ok());
        assert!(matches!(
            r.count(1),
            Err(Stop::Invalid(ProtoError::Malformed(_)))
        ));
    }

    #[test]
    fn failed_encodes_leave_no_partial_frame() {
        let mut dst = BytesMut::from(&b"prev"[..]);
        let long = "x".repeat(300);
        let result = encode_atomically(&mut dst, |dst| {
            dst.put_u8(9);
            put_string8(dst, "log name", &long)
        });
        assert!(matches!(
            result,
            Err(ProtoError::FieldTooLong { len: 300, .. })
        ));
        assert_eq!(&dst[..], b"prev");
    }

    #[test]
    fn length_slot_is_patched() {
        let mut dst = BytesMut::new();
        let slot = LengthSlot::reserve(&mut dst, Width::U32);
        dst.put_slice(b"abc");
        assert!(slot.fill(&mut dst).is_ok());
        assert_eq!(&dst[..], &[0, 0, 0, 3, b'a', b'b', b'c']);
    }
}

//! The record batch: the unit that travels from producer to disk and back unchanged.
//!
//! A batch is one contiguous byte buffer whose layout is the same on the wire and on disk
//! (see `docs/format.md`), so a batch received over the network is appended after a
//! validation pass and two in-place header writes (base offset, leader term), never re-encoded.
//!
//! The base offset, stamped by the log on append, sits *before* the CRC field and is not
//! covered by it, so assigning offsets never recomputes a checksum; recovery checks it
//! against the dense offset sequence instead. Everything else (leader term, flags,
//! timestamps, producer id, records) is covered: a flipped bit anywhere is detected.

use crate::error::BatchError;

/// Bytes of the fixed header that precedes the records.
pub const HEADER_LEN: usize = 58;
/// Bytes of a batch before its `batch_length` field ends (base offset + length).
pub const LENGTH_PREFIX: usize = 12;
/// The only batch format version this build reads and writes.
pub const MAGIC: u8 = 1;
/// Flag bit of a batch written by `repair` in place of damaged bytes: its records are
/// placeholders for offsets whose records were lost, so the offsets stay dense and are
/// never handed to new records. Clients never set it (the broker refuses such batches).
pub const FLAG_LOST: u8 = 0x01;
/// Bytes of the smallest record (no key, empty value, no header).
pub const MIN_RECORD_LEN: usize = RECORD_FIXED;

const BASE_OFFSET: usize = 0;
const BATCH_LENGTH: usize = 8;
const CRC: usize = 12;
const CRC_START: usize = 16;
const MAGIC_AT: usize = 16;
const FLAGS: usize = 17;
const LEADER_TERM: usize = 18;
const RECORD_COUNT: usize = 26;
const FIRST_TIMESTAMP: usize = 30;
const MAX_TIMESTAMP: usize = 38;
const PRODUCER_ID: usize = 46;
const BASE_SEQUENCE: usize = 54;

/// Fixed bytes of one record: length, timestamp delta, key length, value length, header count.
const RECORD_FIXED: usize = 4 + 4 + 4 + 4 + 2;

fn get_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn get_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn get_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

fn put(b: &mut [u8], at: usize, v: &[u8]) {
    if let Some(dst) = b.get_mut(at..at + v.len()) {
        dst.copy_from_slice(v);
    }
}

/// The decoded fixed header of a batch, as read from disk or the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the first record; assigned by the log on append.
    pub base_offset: u64,
    /// Bytes following the `batch_length` field; the whole batch is `12 + batch_length` bytes.
    pub batch_length: u32,
    /// CRC32C of every byte from the magic byte to the end of the batch.
    pub crc: u32,
    /// Format version.
    pub magic: u8,
    /// Reserved attribute bits; 0 today.
    pub flags: u8,
    /// Term (epoch) of the leader that appended the batch; 0 on a single node.
    pub leader_term: u64,
    /// Number of records in the batch (at least 1).
    pub record_count: u32,
    /// Producer timestamp of the first record, milliseconds since the Unix epoch.
    pub first_timestamp: i64,
    /// Largest producer timestamp in the batch; retention by age uses it.
    pub max_timestamp: i64,
    /// Idempotent producer id, or -1.
    pub producer_id: i64,
    /// Sequence number of the first record for that producer, or -1.
    pub base_sequence: i32,
}

impl BatchHeader {
    /// Parses the fixed header from the first [`HEADER_LEN`] bytes of `b`.
    pub fn parse(b: &[u8]) -> Result<Self, BatchError> {
        if b.len() < HEADER_LEN {
            return Err(BatchError::Truncated {
                needed: HEADER_LEN,
                available: b.len(),
            });
        }
        let u64_at = |at| get_u64(b, at).unwrap_or_default();
        let u32_at = |at| get_u32(b, at).unwrap_or_default();
        Ok(Self {
            base_offset: u64_at(BASE_OFFSET),
            batch_length: u32_at(BATCH_LENGTH),
            leader_term: u64_at(LEADER_TERM),
            magic: b.get(MAGIC_AT).copied().unwrap_or_default(),
            crc: u32_at(CRC),
            flags: b.get(FLAGS).copied().unwrap_or_default(),
            record_count: u32_at(RECORD_COUNT),
            first_timestamp: u64_at(FIRST_TIMESTAMP) as i64,
            max_timestamp: u64_at(MAX_TIMESTAMP) as i64,
            producer_id: u64_at(PRODUCER_ID) as i64,
            base_sequence: u32_at(BASE_SEQUENCE) as i32,
        })
    }

    /// Total size of the batch in bytes, header included.
    pub fn total_len(&self) -> u64 {
        LENGTH_PREFIX as u64 + u64::from(self.batch_length)
    }

    /// Offset one past the last record of the batch.
    pub fn next_offset(&self) -> u64 {
        self.base_offset + u64::from(self.record_count)
    }

    /// Whether the batch stands for records lost to damage ([`FLAG_LOST`]).
    pub fn is_lost(&self) -> bool {
        self.flags & FLAG_LOST != 0
    }
}

/// One header of a record: Chariot's tags are record headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Header name (UTF-8 on the wire is not enforced by the log).
    pub key: Vec<u8>,
    /// Header value.
    pub value: Vec<u8>,
}

/// A record as a producer builds it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    /// Optional key.
    pub key: Option<Vec<u8>>,
    /// Value bytes.
    pub value: Vec<u8>,
    /// Headers (tags), in order.
    pub headers: Vec<Header>,
    /// Producer timestamp in milliseconds since the Unix epoch.
    pub timestamp: i64,
}

impl Record {
    /// A record with only a value and timestamp 0 (the builder's timestamp applies).
    pub fn value(value: impl Into<Vec<u8>>) -> Self {
        Self {
            value: value.into(),
            ..Self::default()
        }
    }
}

/// A record as read from a batch, borrowing the batch's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordView<'a> {
    /// Logical offset of the record.
    pub offset: u64,
    /// Producer timestamp, milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// Optional key.
    pub key: Option<&'a [u8]>,
    /// Value bytes.
    pub value: &'a [u8],
    /// Headers (tags), in order.
    pub headers: Vec<(&'a [u8], &'a [u8])>,
}

/// Builds a batch; the result is ready to append and to send over the wire.
#[derive(Debug, Default)]
pub struct RecordBatchBuilder {
    buf: Vec<u8>,
    count: u32,
    first_timestamp: Option<i64>,
    max_timestamp: i64,
    producer_id: i64,
    base_sequence: i32,
}

impl RecordBatchBuilder {
    /// An empty builder with no producer id.
    pub fn new() -> Self {
        Self::with_capacity(0)
    }

    /// An empty builder whose buffer can hold `bytes` without reallocating.
    pub fn with_capacity(bytes: usize) -> Self {
        let mut buf = Vec::with_capacity(HEADER_LEN + bytes);
        buf.resize(HEADER_LEN, 0);
        Self {
            buf,
            count: 0,
            first_timestamp: None,
            max_timestamp: i64::MIN,
            producer_id: -1,
            base_sequence: -1,
        }
    }

    /// Marks the batch as coming from an idempotent producer.
    pub fn producer(mut self, producer_id: i64, base_sequence: i32) -> Self {
        self.producer_id = producer_id;
        self.base_sequence = base_sequence;
        self
    }

    /// Number of records pushed so far.
    pub fn len(&self) -> u32 {
        self.count
    }

    /// True if no record was pushed.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes the batch would have if built now.
    pub fn size(&self) -> usize {
        self.buf.len()
    }

    /// Appends a record given by its parts.
    pub fn push_parts(
        &mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: &[u8],
        headers: &[(&[u8], &[u8])],
    ) {
        let first = *self.first_timestamp.get_or_insert(timestamp);
        self.max_timestamp = self.max_timestamp.max(timestamp);
        let body_len = 4
            + 4
            + key.map_or(0, <[u8]>::len)
            + 4
            + value.len()
            + 2
            + headers
                .iter()
                .map(|(k, v)| 2 + k.len() + 4 + v.len())
                .sum::<usize>();
        let b = &mut self.buf;
        b.reserve(4 + body_len);
        b.extend_from_slice(&(body_len as u32).to_be_bytes());
        let delta = timestamp
            .saturating_sub(first)
            .clamp(0, i64::from(u32::MAX)) as u32;
        b.extend_from_slice(&delta.to_be_bytes());
        match key {
            Some(k) => {
                b.extend_from_slice(&(k.len() as i32).to_be_bytes());
                b.extend_from_slice(k);
            }
            None => b.extend_from_slice(&(-1i32).to_be_bytes()),
        }
        b.extend_from_slice(&(value.len() as u32).to_be_bytes());
        b.extend_from_slice(value);
        b.extend_from_slice(&(headers.len() as u16).to_be_bytes());
        for (k, v) in headers {
            b.extend_from_slice(&(k.len() as u16).to_be_bytes());
            b.extend_from_slice(k);
            b.extend_from_slice(&(v.len() as u32).to_be_bytes());
            b.extend_from_slice(v);
        }
        self.count += 1;
    }

    /// Appends a record.
    pub fn push(&mut self, record: &Record) {
        let headers: Vec<(&[u8], &[u8])> = record
            .headers
            .iter()
            .map(|h| (h.key.as_slice(), h.value.as_slice()))
            .collect();
        self.push_parts(
            record.timestamp,
            record.key.as_deref(),
            &record.value,
            &headers,
        );
    }

    /// Finishes the header and checksum. An empty builder yields a batch the log refuses
    /// with [`crate::LogError::EmptyBatch`].
    pub fn build(mut self) -> RecordBatch {
        let len = self.buf.len();
        let b = &mut self.buf;
        put(
            b,
            BATCH_LENGTH,
            &((len - LENGTH_PREFIX) as u32).to_be_bytes(),
        );
        put(b, MAGIC_AT, &[MAGIC]);
        put(b, FLAGS, &[0]);
        put(b, RECORD_COUNT, &self.count.to_be_bytes());
        let first = self.first_timestamp.unwrap_or(0);
        let max = if self.count == 0 {
            0
        } else {
            self.max_timestamp
        };
        put(b, FIRST_TIMESTAMP, &first.to_be_bytes());
        put(b, MAX_TIMESTAMP, &max.to_be_bytes());
        put(b, PRODUCER_ID, &self.producer_id.to_be_bytes());
        put(b, BASE_SEQUENCE, &self.base_sequence.to_be_bytes());
        let crc = crc32c::crc32c(b.get(CRC_START..).unwrap_or_default());
        put(b, CRC, &crc.to_be_bytes());
        RecordBatch { buf: self.buf }
    }
}

/// A whole, structurally valid batch in its wire and disk layout.
///
/// Invariant: a `RecordBatch` value always has a correct length field, magic and CRC, and
/// its records walk exactly to the end of the buffer; only [`RecordBatchBuilder::build`] of
/// an empty builder yields one with zero records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordBatch {
    buf: Vec<u8>,
}

impl RecordBatch {
    /// Validates `buf` as exactly one batch (length, magic, CRC, record structure).
    pub fn from_vec(buf: Vec<u8>) -> Result<Self, BatchError> {
        validate(&buf)?;
        Ok(Self { buf })
    }

    /// The batch's bytes, as written to disk.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Consumes the batch, returning its bytes.
    pub fn into_vec(self) -> Vec<u8> {
        self.buf
    }

    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// True if the batch carries no records.
    pub fn is_empty(&self) -> bool {
        self.record_count() == 0
    }

    /// The decoded fixed header.
    pub fn header(&self) -> BatchHeader {
        BatchHeader::parse(&self.buf).unwrap_or(BatchHeader {
            base_offset: 0,
            batch_length: 0,
            leader_term: 0,
            magic: 0,
            crc: 0,
            flags: 0,
            record_count: 0,
            first_timestamp: 0,
            max_timestamp: 0,
            producer_id: -1,
            base_sequence: -1,
        })
    }

    /// Number of records.
    pub fn record_count(&self) -> u32 {
        get_u32(&self.buf, RECORD_COUNT).unwrap_or(0)
    }

    /// Offset of the first record (meaningful once appended).
    pub fn base_offset(&self) -> u64 {
        get_u64(&self.buf, BASE_OFFSET).unwrap_or(0)
    }

    /// Stamps the base offset; not covered by the CRC, so no re-checksum is needed.
    pub fn set_base_offset(&mut self, offset: u64) {
        put(&mut self.buf, BASE_OFFSET, &offset.to_be_bytes());
    }

    /// Stamps the leader term and re-checksums (only if it changes: a single node keeps
    /// term 0, which the builder already wrote).
    pub fn set_leader_term(&mut self, term: u64) {
        if self.header().leader_term == term {
            return;
        }
        put(&mut self.buf, LEADER_TERM, &term.to_be_bytes());
        let crc = crc32c::crc32c(self.buf.get(CRC_START..).unwrap_or_default());
        put(&mut self.buf, CRC, &crc.to_be_bytes());
    }

    /// The records, in offset order.
    pub fn records(&self) -> Records<'_> {
        Records::new(&self.buf)
    }

    /// Whether the batch stands for records lost to damage ([`FLAG_LOST`]).
    pub fn is_lost(&self) -> bool {
        self.buf.get(FLAGS).is_some_and(|f| f & FLAG_LOST != 0)
    }

    /// A batch of exactly `len` bytes holding `count` placeholder records from `base`,
    /// flagged [`FLAG_LOST`], to overwrite `len` damaged bytes in place. `None` if
    /// `count` is 0 or the records do not fit (each takes [`MIN_RECORD_LEN`] bytes; the
    /// last one's value is zero padding up to `len`).
    pub fn lost_placeholder(base: u64, count: u32, len: usize, timestamp: i64) -> Option<Self> {
        let fixed = HEADER_LEN.checked_add((count as usize).checked_mul(RECORD_FIXED)?)?;
        let padding = len.checked_sub(fixed)?;
        if count == 0 || padding > u32::MAX as usize {
            return None;
        }
        let mut b = RecordBatchBuilder::with_capacity(len - HEADER_LEN);
        for _ in 1..count {
            b.push_parts(timestamp, None, &[], &[]);
        }
        b.push_parts(timestamp, None, &vec![0; padding], &[]);
        let mut batch = b.build();
        put(&mut batch.buf, FLAGS, &[FLAG_LOST]);
        let crc = crc32c::crc32c(batch.buf.get(CRC_START..).unwrap_or_default());
        put(&mut batch.buf, CRC, &crc.to_be_bytes());
        batch.set_base_offset(base);
        Some(batch)
    }
}

/// Iterator over the records of one validated batch.
#[derive(Debug)]
pub struct Records<'a> {
    buf: &'a [u8],
    pos: usize,
    next_offset: u64,
    first_timestamp: i64,
    remaining: u32,
}

impl<'a> Records<'a> {
    fn new(buf: &'a [u8]) -> Self {
        let h = BatchHeader::parse(buf).ok();
        Self {
            buf,
            pos: HEADER_LEN,
            next_offset: h.map_or(0, |h| h.base_offset),
            first_timestamp: h.map_or(0, |h| h.first_timestamp),
            remaining: h.map_or(0, |h| h.record_count),
        }
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = RecordView<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        let (view, end) = parse_record(self.buf, self.pos)?;
        self.pos = end;
        self.remaining -= 1;
        let offset = self.next_offset;
        self.next_offset += 1;
        Some(RecordView {
            offset,
            timestamp: self.first_timestamp.saturating_add(view.timestamp),
            ..view
        })
    }
}

/// Parses the record starting at `pos`; returns it (offset 0, timestamp = delta) and the
/// position just after it, or `None` if it does not fit its declared length.
fn parse_record(buf: &[u8], pos: usize) -> Option<(RecordView<'_>, usize)> {
    let len = get_u32(buf, pos)? as usize;
    let end = pos.checked_add(4)?.checked_add(len)?;
    let body = buf.get(pos + 4..end)?;
    if len < RECORD_FIXED - 4 {
        return None;
    }
    let mut at = 0usize;
    let delta = get_u32(body, at)?;
    at += 4;
    let key_len = get_u32(body, at)? as i32;
    at += 4;
    let key = if key_len < 0 {
        if key_len != -1 {
            return None;
        }
        None
    } else {
        let k = body.get(at..at.checked_add(key_len as usize)?)?;
        at += key_len as usize;
        Some(k)
    };
    let value_len = get_u32(body, at)? as usize;
    at += 4;
    let value = body.get(at..at.checked_add(value_len)?)?;
    at += value_len;
    let header_count = get_u16(body, at)?;
    at += 2;
    let mut headers = Vec::with_capacity(usize::from(header_count));
    for _ in 0..header_count {
        let kl = usize::from(get_u16(body, at)?);
        at += 2;
        let k = body.get(at..at.checked_add(kl)?)?;
        at += kl;
        let vl = get_u32(body, at)? as usize;
        at += 4;
        let v = body.get(at..at.checked_add(vl)?)?;
        at += vl;
        headers.push((k, v));
    }
    if at != body.len() {
        return None;
    }
    Some((
        RecordView {
            offset: 0,
            timestamp: i64::from(delta),
            key,
            value,
            headers,
        },
        end,
    ))
}

/// Checks that `buf` is exactly one well-formed batch: length field, magic, CRC, and a
/// record walk that consumes exactly `record_count` records and every byte.
pub fn validate(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    let h = BatchHeader::parse(buf)?;
    if h.total_len() != buf.len() as u64 {
        return Err(BatchError::LengthMismatch {
            declared: h.total_len(),
            actual: buf.len() as u64,
        });
    }
    validate_crc(&h, buf)?;
    validate_records(&h, buf)?;
    Ok(h)
}

/// Checks magic and checksum only; used on the read path where the structure was
/// already validated at append time and only media corruption can intervene.
pub fn validate_crc(h: &BatchHeader, buf: &[u8]) -> Result<(), BatchError> {
    if h.magic != MAGIC {
        return Err(BatchError::BadMagic(h.magic));
    }
    let computed = crc32c::crc32c(buf.get(CRC_START..).unwrap_or_default());
    if computed != h.crc {
        return Err(BatchError::CrcMismatch {
            stored: h.crc,
            computed,
        });
    }
    Ok(())
}

fn validate_records(h: &BatchHeader, buf: &[u8]) -> Result<(), BatchError> {
    let mut pos = HEADER_LEN;
    for i in 0..h.record_count {
        match parse_record(buf, pos) {
            Some((_, end)) => pos = end,
            None => return Err(BatchError::BadRecord { index: i }),
        }
    }
    if pos != buf.len() {
        return Err(BatchError::TrailingBytes {
            count: buf.len() - pos,
        });
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn sample() -> RecordBatch {
        let mut b = RecordBatchBuilder::new();
        b.push(&Record {
            key: Some(b"k".to_vec()),
            value: b"hello".to_vec(),
            headers: vec![Header {
                key: b"k1".to_vec(),
                value: b"v1".to_vec(),
            }],
            timestamp: 1000,
        });
        b.push(&Record {
            key: None,
            value: vec![],
            headers: vec![],
            timestamp: 1005,
        });
        b.build()
    }

    #[test]
    fn build_then_validate_round_trips() {
        let b = sample();
        let h = validate(b.as_bytes()).map_err(|e| e.to_string());
        assert_eq!(h.map(|h| h.record_count), Ok(2));
        let recs: Vec<_> = b.records().collect();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].key, Some(&b"k"[..]));
        assert_eq!(recs[0].value, b"hello");
        assert_eq!(recs[0].headers, vec![(&b"k1"[..], &b"v1"[..])]);
        assert_eq!(recs[0].timestamp, 1000);
        assert_eq!(recs[1].key, None);
        assert_eq!(recs[1].timestamp, 1005);
        assert_eq!(recs[1].offset, 1);
        assert_eq!(b.header().max_timestamp, 1005);
    }

    #[test]
    fn stamping_offset_and_term_keeps_crc_valid() {
        let mut b = sample();
        b.set_base_offset(42);
        b.set_leader_term(7);
        let h = validate(b.as_bytes()).map_err(|e| e.to_string());
        assert_eq!(h.map(|h| (h.base_offset, h.leader_term)), Ok((42, 7)));
        assert_eq!(
            b.records().map(|r| r.offset).collect::<Vec<_>>(),
            vec![42, 43]
        );
    }

    #[test]
    fn every_single_byte_flip_in_the_crc_range_is_detected() {
        let b = sample();
        for i in CRC..b.len() {
            let mut bytes = b.as_bytes().to_vec();
            bytes[i] ^= 0x20;
            assert!(validate(&bytes).is_err(), "flip at {i} went unnoticed");
        }
    }

    #[test]
    fn truncated_and_extended_buffers_are_rejected() {
        let b = sample();
        for cut in 0..b.len() {
            assert!(validate(&b.as_bytes()[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = b.as_bytes().to_vec();
        longer.push(0);
        assert!(matches!(
            validate(&longer),
            Err(BatchError::LengthMismatch { .. })
        ));
    }

    #[test]
    fn a_lost_placeholder_fills_exactly_its_bytes() {
        for (count, len) in [(1u32, 58 + 18), (1, 500), (3, 58 + 54), (10, 4096)] {
            let p = RecordBatch::lost_placeholder(7, count, len, 99);
            let p = p.unwrap_or_else(|| panic!("{count} records in {len} bytes"));
            assert_eq!(p.len(), len);
            let h = validate(p.as_bytes()).map_err(|e| e.to_string());
            assert_eq!(
                h.map(|h| (h.base_offset, h.next_offset())),
                Ok((7, 7 + u64::from(count)))
            );
            assert!(p.is_lost() && p.header().is_lost());
        }
        assert!(RecordBatch::lost_placeholder(0, 2, 58 + 35, 0).is_none());
        assert!(RecordBatch::lost_placeholder(0, 0, 100, 0).is_none());
        assert!(!sample().is_lost());
    }

    #[test]
    fn record_walk_mismatching_count_is_rejected() {
        let b = sample();
        let mut bytes = b.as_bytes().to_vec();
        bytes[RECORD_COUNT + 3] = 3;
        let crc = crc32c::crc32c(&bytes[CRC_START..]);
        bytes[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(
            validate(&bytes),
            Err(BatchError::BadRecord { index: 2 })
        ));
    }
}

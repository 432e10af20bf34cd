//! Size limits the decoders enforce before trusting a declared length.

use crate::error::ProtoError;

/// Default [`Limits::max_record_size`]: 1 MiB.
pub const DEFAULT_MAX_RECORD_SIZE: usize = 1024 * 1024;

/// Default [`Limits::max_batch_size`]: 8 MiB.
pub const DEFAULT_MAX_BATCH_SIZE: usize = 8 * 1024 * 1024;

/// Default [`Limits::max_frame_size`]: a full batch plus 64 KiB of headroom, so
/// a maximum-size batch always fits in a frame together with its headers.
pub const DEFAULT_MAX_FRAME_SIZE: usize = DEFAULT_MAX_BATCH_SIZE + 64 * 1024;

/// Most records one request may carry (publish-records, an HTTP publish, a Chariots
/// `'s'` frame): what a server holds per record is a fixed size larger than the record's
/// wire form can be, so this bounds what a request of tiny records costs next to its
/// bytes. Client-built batches (publish-batch) are stored as they came and have only
/// their byte limit.
pub const MAX_RECORDS_PER_REQUEST: usize = 10_000;

/// Upper bounds on declared lengths.
///
/// Every length read off the wire is compared with these limits as soon as it
/// has been read, before the bytes it announces have arrived, so a hostile or
/// corrupt length prefix is rejected without allocating or waiting for it.
/// The limits bound how much a single connection can make its peer buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest single record value: Rog publish data, Rog fetch payloads and each
    /// value of a publish-records request.
    pub max_record_size: usize,
    /// Largest record batch blob in a publish-batch request, and largest total
    /// of the values in one publish-records request.
    pub max_batch_size: usize,
    /// Largest declared length of any length-prefixed frame: the body of an
    /// extension request or response, a Rog error message, and a Chariots
    /// record frame.
    pub max_frame_size: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_record_size: DEFAULT_MAX_RECORD_SIZE,
            max_batch_size: DEFAULT_MAX_BATCH_SIZE,
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
        }
    }
}

impl Limits {
    pub(crate) fn check_record(&self, declared: u64) -> Result<usize, ProtoError> {
        within(declared, self.max_record_size).ok_or(ProtoError::RecordTooLarge {
            declared,
            max: widen(self.max_record_size),
        })
    }

    pub(crate) fn check_batch(&self, declared: u64) -> Result<usize, ProtoError> {
        within(declared, self.max_batch_size).ok_or(ProtoError::BatchTooLarge {
            declared,
            max: widen(self.max_batch_size),
        })
    }

    pub(crate) fn check_frame(&self, declared: u64) -> Result<usize, ProtoError> {
        within(declared, self.max_frame_size).ok_or(ProtoError::FrameTooLarge {
            declared,
            max: widen(self.max_frame_size),
        })
    }
}

/// The declared length as a `usize`, if it is at most `max`.
fn within(declared: u64, max: usize) -> Option<usize> {
    usize::try_from(declared).ok().filter(|&len| len <= max)
}

pub(crate) fn widen(len: usize) -> u64 {
    // Lossless on every target Rust supports today (usize is at most 64 bits);
    // saturating keeps this total without a cast.
    u64::try_from(len).unwrap_or(u64::MAX)
}

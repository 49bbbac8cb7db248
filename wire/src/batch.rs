//! Record batches (`docs/protocol.md` §6): the unit of append, storage and fetch.
//!
//! A batch is a fixed 56-byte header followed by an opaque payload, with a CRC32C over both
//! that the writer computes once and every later hop checks: data node on APPEND, reader after
//! FETCH. [`BatchBuilder`] makes one; [`BatchView`] is a validated zero-copy view over
//! [`Bytes`]; [`BatchIter`] walks several batches back to back (an APPEND or FETCH payload) and
//! stops at the first bad one without panicking.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::ErrorCode;
use crate::types::{Epoch, Offset, RangeIndex, StreamId};

/// First byte of every batch.
pub const BATCH_MAGIC: u8 = 0xEB;
/// Batch format version.
pub const BATCH_VERSION: u8 = 1;
/// Size of the fixed batch header.
pub const BATCH_HEADER_BYTES: usize = 56;
/// Byte range of the CRC field inside the header.
const CRC_FIELD: std::ops::Range<usize> = 4..8;

/// Why bytes are not a valid record batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BatchError {
    /// The bytes end before the batch does.
    Truncated {
        /// Bytes the batch needs (header, or header and payload).
        needed: usize,
        /// Bytes available.
        available: usize,
    },
    /// The first byte is not [`BATCH_MAGIC`].
    BadMagic {
        /// What was found.
        found: u8,
    },
    /// A batch format this version does not read.
    UnsupportedVersion {
        /// The version found.
        found: u8,
    },
    /// The CRC32C does not match header and payload: the data is corrupt.
    CrcMismatch {
        /// CRC carried by the batch.
        expected: u32,
        /// CRC computed over the bytes.
        actual: u32,
    },
    /// A field is invalid (zero records, offsets overflow, reserved bits set, records do not
    /// fill the payload, a batch too large to encode).
    Malformed {
        /// What is wrong.
        reason: &'static str,
    },
}

impl BatchError {
    /// The error code to answer with: a bad batch is [`ErrorCode::CorruptedData`].
    pub fn error_code(&self) -> ErrorCode {
        ErrorCode::CorruptedData
    }
}

impl fmt::Display for BatchError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BatchError::Truncated { needed, available } => write!(
                formatter,
                "truncated record batch: needs {needed} bytes, {available} available"
            ),
            BatchError::BadMagic { found } => write!(
                formatter,
                "bad record batch magic: expected {BATCH_MAGIC:#04x}, found {found:#04x}"
            ),
            BatchError::UnsupportedVersion { found } => write!(
                formatter,
                "unsupported record batch version {found}, this side reads {BATCH_VERSION}"
            ),
            BatchError::CrcMismatch { expected, actual } => write!(
                formatter,
                "record batch CRC32C mismatch: batch carries {expected:#010x}, contents give \
                 {actual:#010x}; the data is corrupt"
            ),
            BatchError::Malformed { reason } => {
                write!(formatter, "malformed record batch: {reason}")
            }
        }
    }
}

impl std::error::Error for BatchError {}

/// The decoded fixed header of a batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatchHeader {
    /// Reserved flag bits; 0 in this version.
    pub flags: u16,
    /// CRC32C over the header without this field, then the payload.
    pub crc32c: u32,
    /// The stream.
    pub stream_id: StreamId,
    /// The writer's epoch.
    pub epoch: Epoch,
    /// First offset covered.
    pub base_offset: Offset,
    /// Writer's clock, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// The range.
    pub range_index: RangeIndex,
    /// Offsets covered, at least 1.
    pub record_count: u32,
    /// Payload bytes after the header.
    pub payload_length: u32,
}

impl BatchHeader {
    /// One past the last offset covered (validated not to overflow when parsed or built).
    pub fn next_offset(&self) -> Offset {
        Offset(
            self.base_offset
                .0
                .saturating_add(u64::from(self.record_count)),
        )
    }

    /// Whole batch size: header plus payload.
    pub fn batch_len(&self) -> usize {
        BATCH_HEADER_BYTES + self.payload_length as usize
    }

    /// Parses and checks the fixed header at the start of `bytes` (not the CRC, which needs the
    /// payload).
    pub fn parse(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
        let Some(raw) = bytes.first_chunk::<BATCH_HEADER_BYTES>() else {
            return Err(BatchError::Truncated {
                needed: BATCH_HEADER_BYTES,
                available: bytes.len(),
            });
        };
        if raw[0] != BATCH_MAGIC {
            return Err(BatchError::BadMagic { found: raw[0] });
        }
        if raw[1] != BATCH_VERSION {
            return Err(BatchError::UnsupportedVersion { found: raw[1] });
        }
        let u16_at = |at: usize| u16::from_le_bytes([raw[at], raw[at + 1]]);
        let u32_at =
            |at: usize| u32::from_le_bytes([raw[at], raw[at + 1], raw[at + 2], raw[at + 3]]);
        let u64_at = |at: usize| u64::from(u32_at(at)) | (u64::from(u32_at(at + 4)) << 32);
        let header = BatchHeader {
            flags: u16_at(2),
            crc32c: u32_at(4),
            stream_id: StreamId(u64_at(8)),
            epoch: Epoch(u64_at(16)),
            base_offset: Offset(u64_at(24)),
            timestamp_ms: u64_at(32),
            range_index: RangeIndex(u32_at(40)),
            record_count: u32_at(44),
            payload_length: u32_at(48),
        };
        if header.flags != 0 {
            return Err(BatchError::Malformed {
                reason: "reserved flag bits set",
            });
        }
        if u32_at(52) != 0 {
            return Err(BatchError::Malformed {
                reason: "reserved field is not zero",
            });
        }
        if header.record_count == 0 {
            return Err(BatchError::Malformed {
                reason: "a batch covers at least one offset",
            });
        }
        if header
            .base_offset
            .checked_add(u64::from(header.record_count))
            .is_none()
        {
            return Err(BatchError::Malformed {
                reason: "base_offset + record_count overflows the offset space",
            });
        }
        Ok(header)
    }

    /// Writes the header (with `self.crc32c` as is) into `out`.
    fn write(&self, out: &mut [u8; BATCH_HEADER_BYTES]) {
        let mut cursor = &mut out[..];
        cursor.put_u8(BATCH_MAGIC);
        cursor.put_u8(BATCH_VERSION);
        cursor.put_u16_le(self.flags);
        cursor.put_u32_le(self.crc32c);
        cursor.put_u64_le(self.stream_id.0);
        cursor.put_u64_le(self.epoch.0);
        cursor.put_u64_le(self.base_offset.0);
        cursor.put_u64_le(self.timestamp_ms);
        cursor.put_u32_le(self.range_index.0);
        cursor.put_u32_le(self.record_count);
        cursor.put_u32_le(self.payload_length);
        cursor.put_u32_le(0);
        debug_assert!(cursor.is_empty());
    }
}

/// CRC32C of a batch: header bytes 0..4, then 8..56 (the CRC field left out), then payload.
pub fn batch_crc(header: &[u8; BATCH_HEADER_BYTES], payload: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&header[..CRC_FIELD.start]);
    let crc = crc32c::crc32c_append(crc, &header[CRC_FIELD.end..]);
    crc32c::crc32c_append(crc, payload)
}

/// Builds one batch. Records pushed with [`BatchBuilder::push_record`] are framed as `u32
/// length` + bytes (the SDK convention, read back by [`BatchView::records`]);
/// [`BatchBuilder::finish_with_payload`] takes an opaque payload instead.
#[derive(Clone, Debug)]
pub struct BatchBuilder {
    header: BatchHeader,
    buf: BytesMut,
}

impl BatchBuilder {
    /// A builder for a batch starting at `base_offset`, timestamped now.
    pub fn new(
        stream_id: StreamId,
        range_index: RangeIndex,
        epoch: Epoch,
        base_offset: Offset,
    ) -> BatchBuilder {
        let timestamp_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_millis() as u64);
        let mut buf = BytesMut::with_capacity(BATCH_HEADER_BYTES + 256);
        buf.put_bytes(0, BATCH_HEADER_BYTES);
        BatchBuilder {
            header: BatchHeader {
                stream_id,
                range_index,
                epoch,
                base_offset,
                timestamp_ms,
                ..BatchHeader::default()
            },
            buf,
        }
    }

    /// Sets the timestamp (milliseconds since the Unix epoch).
    pub fn timestamp_ms(mut self, timestamp_ms: u64) -> BatchBuilder {
        self.header.timestamp_ms = timestamp_ms;
        self
    }

    /// Records pushed so far.
    pub fn record_count(&self) -> u32 {
        self.header.record_count
    }

    /// Payload bytes so far (records with their length prefixes).
    pub fn payload_len(&self) -> usize {
        self.buf.len() - BATCH_HEADER_BYTES
    }

    /// Appends one record.
    pub fn push_record(&mut self, record: &[u8]) -> Result<(), BatchError> {
        let too_large = BatchError::Malformed {
            reason: "batch payload would exceed 4 GiB or 2^32 records",
        };
        let record_length = u32::try_from(record.len()).map_err(|_| too_large.clone())?;
        let new_payload_len = self.payload_len() + 4 + record.len();
        if u32::try_from(new_payload_len).is_err() || self.header.record_count == u32::MAX {
            return Err(too_large);
        }
        self.buf.put_u32_le(record_length);
        self.buf.put_slice(record);
        self.header.record_count += 1;
        Ok(())
    }

    /// The finished batch: header, records, CRC.
    pub fn finish(mut self) -> Result<Bytes, BatchError> {
        let record_count = self.header.record_count;
        let payload_length = self.payload_len();
        self.seal(record_count, payload_length)?;
        Ok(self.buf.freeze())
    }

    /// A batch whose payload is `payload`, opaque, covering `record_count` offsets. Records
    /// pushed before are discarded.
    pub fn finish_with_payload(
        mut self,
        record_count: u32,
        payload: &[u8],
    ) -> Result<Bytes, BatchError> {
        self.buf.truncate(BATCH_HEADER_BYTES);
        self.buf.reserve(payload.len());
        self.buf.put_slice(payload);
        self.seal(record_count, payload.len())?;
        Ok(self.buf.freeze())
    }

    fn seal(&mut self, record_count: u32, payload_length: usize) -> Result<(), BatchError> {
        if record_count == 0 {
            return Err(BatchError::Malformed {
                reason: "a batch covers at least one offset",
            });
        }
        if self
            .header
            .base_offset
            .checked_add(u64::from(record_count))
            .is_none()
        {
            return Err(BatchError::Malformed {
                reason: "base_offset + record_count overflows the offset space",
            });
        }
        self.header.record_count = record_count;
        self.header.payload_length =
            u32::try_from(payload_length).map_err(|_| BatchError::Malformed {
                reason: "batch payload exceeds 4 GiB",
            })?;
        self.header.crc32c = 0;
        let (head, payload) = self.buf.split_at_mut(BATCH_HEADER_BYTES);
        let head: &mut [u8; BATCH_HEADER_BYTES] =
            head.try_into().map_err(|_| BatchError::Malformed {
                reason: "internal: header space missing",
            })?;
        self.header.write(head);
        self.header.crc32c = batch_crc(head, payload);
        head[CRC_FIELD].copy_from_slice(&self.header.crc32c.to_le_bytes());
        Ok(())
    }
}

/// One validated batch: its header, and the whole batch as a zero-copy [`Bytes`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchView {
    header: BatchHeader,
    bytes: Bytes,
}

impl BatchView {
    /// Checks that `bytes` is exactly one valid batch, CRC included.
    pub fn parse(bytes: Bytes) -> Result<BatchView, BatchError> {
        let view = BatchView::parse_unverified(bytes)?;
        view.verify_crc()?;
        Ok(view)
    }

    /// Like [`BatchView::parse`] but without the CRC check (for bytes whose CRC was checked
    /// before, e.g. by the data node when it stored them).
    pub fn parse_unverified(bytes: Bytes) -> Result<BatchView, BatchError> {
        let header = BatchHeader::parse(&bytes)?;
        if bytes.len() < header.batch_len() {
            return Err(BatchError::Truncated {
                needed: header.batch_len(),
                available: bytes.len(),
            });
        }
        if bytes.len() > header.batch_len() {
            return Err(BatchError::Malformed {
                reason: "bytes after the batch's payload",
            });
        }
        Ok(BatchView { header, bytes })
    }

    /// Recomputes the CRC and compares it with the header's.
    pub fn verify_crc(&self) -> Result<(), BatchError> {
        let head: &[u8; BATCH_HEADER_BYTES] =
            self.bytes.first_chunk().ok_or(BatchError::Truncated {
                needed: BATCH_HEADER_BYTES,
                available: self.bytes.len(),
            })?;
        let actual = batch_crc(head, &self.bytes[BATCH_HEADER_BYTES..]);
        if actual != self.header.crc32c {
            return Err(BatchError::CrcMismatch {
                expected: self.header.crc32c,
                actual,
            });
        }
        Ok(())
    }

    /// The decoded header.
    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    /// The whole batch, header included, as received (what is stored and sent on).
    pub fn as_bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The payload, zero-copy.
    pub fn payload(&self) -> Bytes {
        self.bytes.slice(BATCH_HEADER_BYTES..)
    }

    /// The records of a payload built with [`BatchBuilder::push_record`].
    pub fn records(&self) -> RecordIter {
        RecordIter {
            payload: self.payload(),
            remaining: self.header.record_count,
            failed: false,
        }
    }

    /// A copy of this batch moved to another range and epoch (used when a writer re-sends
    /// unacknowledged batches to the next range after sealing), with a new CRC.
    pub fn restamp(&self, range_index: RangeIndex, epoch: Epoch) -> Bytes {
        let mut header = self.header;
        header.range_index = range_index;
        header.epoch = epoch;
        let mut head = [0; BATCH_HEADER_BYTES];
        header.write(&mut head);
        let payload = &self.bytes[BATCH_HEADER_BYTES..];
        let crc = batch_crc(&head, payload);
        head[CRC_FIELD].copy_from_slice(&crc.to_le_bytes());
        let mut out = BytesMut::with_capacity(self.bytes.len());
        out.put_slice(&head);
        out.put_slice(payload);
        out.freeze()
    }
}

/// Walks batches back to back in a payload, zero-copy. Yields `Err` once at the first bad batch
/// and then stops.
#[derive(Clone, Debug)]
pub struct BatchIter {
    rest: Bytes,
    verify_crc: bool,
    failed: bool,
}

impl BatchIter {
    /// Iterates and CRC-checks every batch in `payload`.
    pub fn new(payload: Bytes) -> BatchIter {
        BatchIter {
            rest: payload,
            verify_crc: true,
            failed: false,
        }
    }

    /// Iterates without CRC checks (headers still validated).
    pub fn unverified(payload: Bytes) -> BatchIter {
        BatchIter {
            verify_crc: false,
            ..BatchIter::new(payload)
        }
    }

    /// Bytes not yet walked.
    pub fn remaining(&self) -> &Bytes {
        &self.rest
    }
}

impl Iterator for BatchIter {
    type Item = Result<BatchView, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.rest.is_empty() {
            return None;
        }
        let result = BatchHeader::parse(&self.rest).and_then(|header| {
            if self.rest.len() < header.batch_len() {
                return Err(BatchError::Truncated {
                    needed: header.batch_len(),
                    available: self.rest.len(),
                });
            }
            let view = BatchView {
                header,
                bytes: self.rest.split_to(header.batch_len()),
            };
            if self.verify_crc {
                view.verify_crc()?;
            }
            Ok(view)
        });
        self.failed = result.is_err();
        Some(result)
    }
}

impl std::iter::FusedIterator for BatchIter {}

/// Records of a batch payload framed as `u32 length` + bytes. Yields `Err` once if the records
/// do not fill the payload exactly, or their number differs from the header's count.
#[derive(Clone, Debug)]
pub struct RecordIter {
    payload: Bytes,
    remaining: u32,
    failed: bool,
}

impl Iterator for RecordIter {
    type Item = Result<Bytes, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        if self.remaining == 0 {
            if self.payload.is_empty() {
                return None;
            }
            self.failed = true;
            return Some(Err(BatchError::Malformed {
                reason: "bytes after the last record",
            }));
        }
        let Some(length) = self
            .payload
            .first_chunk::<4>()
            .map(|raw| u32::from_le_bytes(*raw))
        else {
            self.failed = true;
            return Some(Err(BatchError::Malformed {
                reason: "fewer records than the header's record_count",
            }));
        };
        let length = length as usize;
        if self.payload.len() - 4 < length {
            self.failed = true;
            return Some(Err(BatchError::Malformed {
                reason: "record length runs past the payload",
            }));
        }
        self.remaining -= 1;
        let _ = self.payload.split_to(4);
        Some(Ok(self.payload.split_to(length)))
    }
}

impl std::iter::FusedIterator for RecordIter {}

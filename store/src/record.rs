//! The WAL record: a 48-byte header and a payload, padded to 8 bytes.
//!
//! ```text
//! offset size field
//!      0    4 crc32c, seeded with the segment's start position, over bytes 4..48+payload_len
//!      4    4 payload_len  (u32, little-endian, like every field)
//!      8    1 kind         (1 append, 2 trim, 3 delete, 4 segment padding, 5 page padding,
//!                          6 group start)
//!      9    3 reserved, zero
//!     12    4 count        (records in the batch; 0 for other kinds)
//!     16    8 position     (this record's own WAL position)
//!     24    8 stream_id
//!     32    4 range_index
//!     36    4 header_crc   (format 2: crc32c, same seed, over bytes 4..36 and 40..48; format 1
//!                          wrote zero here)
//!     40    8 offset       (append: base offset; trim: new start offset; group start: the
//!                          synced position; otherwise 0)
//!     48    . payload      (append: the batch bytes as given), then zeros to a multiple of 8
//! ```
//!
//! The checksum's seed is the segment's identity (its start position) and the header repeats the
//! record's own position, so a record left behind in a recycled segment file (written when the
//! file had another name) can never validate at its new position.
//!
//! The header checksum lets recovery tell a record whose payload is damaged (its header still
//! says exactly which batch it is, so the batch stays indexed and its reads fail as corrupt) from
//! one whose header is damaged too. A *group start* record opens every group written by format
//! 2: its `offset` field is the synced position when the group was submitted (everything
//! before it was durable then; 0 when unknown, as with `sync: never`). Recovery uses these
//! claims to tell damage in acknowledged data from a torn tail.

use crate::{Offset, RangeIndex, RangeKey, StreamId, WalPosition};

/// Bytes of a record header.
pub const HEADER_BYTES: usize = 48;
/// Every record starts at a multiple of this.
pub const RECORD_ALIGN: u64 = 8;

/// What a record means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordKind {
    /// A batch appended to a range.
    Append = 1,
    /// A range's start offset moved forward.
    Trim = 2,
    /// A range was deleted.
    Delete = 3,
    /// Nothing more in this segment: the log continues at the next segment's start.
    Padding = 4,
    /// Filler up to a page boundary (its payload is zeros): the next record starts there.
    PagePadding = 5,
    /// Opens a group; its `offset` is the synced position when the group was submitted.
    GroupStart = 6,
}

impl RecordKind {
    fn from_u8(value: u8) -> Option<RecordKind> {
        match value {
            1 => Some(RecordKind::Append),
            2 => Some(RecordKind::Trim),
            3 => Some(RecordKind::Delete),
            4 => Some(RecordKind::Padding),
            5 => Some(RecordKind::PagePadding),
            6 => Some(RecordKind::GroupStart),
            _ => None,
        }
    }
}

/// A decoded header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    pub kind: RecordKind,
    pub payload_len: u32,
    pub count: u32,
    pub position: WalPosition,
    pub range: RangeKey,
    pub offset: Offset,
}

impl RecordHeader {
    /// The header of the group start record at `position`: everything before `synced` was
    /// durable when the group was submitted (0: unknown).
    pub fn group_start(position: WalPosition, synced: WalPosition) -> RecordHeader {
        debug_assert!(
            synced <= position,
            "a group cannot vouch for bytes after it"
        );
        RecordHeader {
            kind: RecordKind::GroupStart,
            payload_len: 0,
            count: 0,
            position,
            range: RangeKey::default(),
            offset: Offset(synced),
        }
    }

    /// For a group start record: the position below which the log was durable when the group
    /// was submitted, if it says (a claim past the record itself is never believed).
    pub fn synced_claim(&self) -> Option<WalPosition> {
        let synced = self.offset.0;
        (self.kind == RecordKind::GroupStart && synced > 0 && synced <= self.position)
            .then_some(synced)
    }
}

/// Total bytes a record with `payload_len` payload bytes occupies in the WAL.
pub fn record_length(payload_len: usize) -> u64 {
    (HEADER_BYTES as u64 + payload_len as u64).next_multiple_of(RECORD_ALIGN)
}

fn checksum(segment_start: WalPosition, body: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&segment_start.to_le_bytes()), body)
}

/// The header checksum: bytes 4..36 and 40..48 of the header, seeded like the record's.
fn header_checksum(segment_start: WalPosition, header: &[u8]) -> u32 {
    let seeded = crc32c::crc32c(&segment_start.to_le_bytes());
    crc32c::crc32c_append(
        crc32c::crc32c_append(seeded, &header[4..36]),
        &header[40..48],
    )
}

/// Writes header and payload into `target` (exactly `record_length(payload.len())` bytes).
pub fn encode(
    target: &mut [u8],
    segment_start: WalPosition,
    header: &RecordHeader,
    payload: &[u8],
) {
    let total = record_length(payload.len()) as usize;
    assert_eq!(target.len(), total, "record target has the wrong size");
    debug_assert_eq!(header.payload_len as usize, payload.len());
    debug_assert_eq!(header.position % RECORD_ALIGN, 0);
    target[4..8].copy_from_slice(&header.payload_len.to_le_bytes());
    target[8] = header.kind as u8;
    target[9..12].fill(0);
    target[12..16].copy_from_slice(&header.count.to_le_bytes());
    target[16..24].copy_from_slice(&header.position.to_le_bytes());
    target[24..32].copy_from_slice(&header.range.stream_id.0.to_le_bytes());
    target[32..36].copy_from_slice(&header.range.range_index.0.to_le_bytes());
    target[40..48].copy_from_slice(&header.offset.0.to_le_bytes());
    let header_crc = header_checksum(segment_start, &target[..HEADER_BYTES]);
    target[36..40].copy_from_slice(&header_crc.to_le_bytes());
    target[HEADER_BYTES..HEADER_BYTES + payload.len()].copy_from_slice(payload);
    target[HEADER_BYTES + payload.len()..].fill(0);
    let crc = checksum(segment_start, &target[4..HEADER_BYTES + payload.len()]);
    target[0..4].copy_from_slice(&crc.to_le_bytes());
}

/// Why bytes at a position are not a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// Fewer bytes than a header (or than the header's length) are available.
    Truncated,
    /// The header does not describe a record at this position (zeros, stale data, garbage).
    BadHeader,
    /// The header is plausible but the checksum does not match.
    BadChecksum,
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    let mut raw = [0u8; 4];
    raw.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(raw)
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(raw)
}

/// Cheap pre-check used when searching for valid records after damage: the header names this
/// very position.
pub fn names_position(bytes: &[u8], position: WalPosition) -> bool {
    bytes.len() >= HEADER_BYTES && read_u64(bytes, 16) == position
}

/// Decodes and verifies the record starting at `bytes[0]`, which sits at WAL `position` in the
/// segment starting at `segment_start` and ending at `segment_end`.
pub fn decode(
    bytes: &[u8],
    segment_start: WalPosition,
    segment_end: WalPosition,
    position: WalPosition,
) -> Result<RecordHeader, Invalid> {
    if bytes.len() < HEADER_BYTES {
        return Err(Invalid::Truncated);
    }
    let payload_len = read_u32(bytes, 4);
    let kind = RecordKind::from_u8(bytes[8]).ok_or(Invalid::BadHeader)?;
    if read_u64(bytes, 16) != position || bytes[9..12] != [0, 0, 0] {
        return Err(Invalid::BadHeader);
    }
    let total = record_length(payload_len as usize);
    if kind != RecordKind::Padding && position + total > segment_end {
        return Err(Invalid::BadHeader);
    }
    let checked_len = HEADER_BYTES + payload_len as usize;
    if bytes.len() < checked_len {
        return Err(Invalid::Truncated);
    }
    if checksum(segment_start, &bytes[4..checked_len]) != read_u32(bytes, 0) {
        return Err(Invalid::BadChecksum);
    }
    Ok(header_fields(bytes, position, kind, payload_len))
}

/// The header at `bytes[0]` if its own checksum verifies (format 2) and it describes a record
/// at `position` that fits its segment, whatever state its payload is in. Recovery uses it to
/// name the batch a damaged record holds; never to serve data.
pub fn decode_header(
    bytes: &[u8],
    segment_start: WalPosition,
    segment_end: WalPosition,
    position: WalPosition,
) -> Option<RecordHeader> {
    if bytes.len() < HEADER_BYTES
        || read_u32(bytes, 36) != header_checksum(segment_start, &bytes[..HEADER_BYTES])
        || read_u64(bytes, 16) != position
        || bytes[9..12] != [0, 0, 0]
    {
        return None;
    }
    let kind = RecordKind::from_u8(bytes[8])?;
    let payload_len = read_u32(bytes, 4);
    if kind != RecordKind::Padding && position + record_length(payload_len as usize) > segment_end {
        return None;
    }
    Some(header_fields(bytes, position, kind, payload_len))
}

fn header_fields(
    bytes: &[u8],
    position: WalPosition,
    kind: RecordKind,
    payload_len: u32,
) -> RecordHeader {
    RecordHeader {
        kind,
        payload_len,
        count: read_u32(bytes, 12),
        position,
        range: RangeKey {
            stream_id: StreamId(read_u64(bytes, 24)),
            range_index: RangeIndex(read_u32(bytes, 32)),
        },
        offset: Offset(read_u64(bytes, 40)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(position: WalPosition, payload_len: u32) -> RecordHeader {
        RecordHeader {
            kind: RecordKind::Append,
            payload_len,
            count: 3,
            position,
            range: RangeKey {
                stream_id: StreamId(7),
                range_index: RangeIndex(2),
            },
            offset: Offset(100),
        }
    }

    #[test]
    fn round_trip_and_every_flipped_bit_is_rejected() {
        let payload = b"hello batch";
        let position = 4096 + 64;
        let mut bytes = vec![0u8; record_length(payload.len()) as usize];
        encode(
            &mut bytes,
            4096,
            &header(position, payload.len() as u32),
            payload,
        );
        let decoded = decode(&bytes, 4096, 1 << 20, position).unwrap();
        assert_eq!(decoded, header(position, payload.len() as u32));
        assert_eq!(&bytes[HEADER_BYTES..HEADER_BYTES + payload.len()], payload);
        for bit in 0..(HEADER_BYTES + payload.len()) * 8 {
            let mut damaged = bytes.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(
                decode(&damaged, 4096, 1 << 20, position).is_err(),
                "bit {bit}"
            );
        }
    }

    #[test]
    fn a_record_from_a_recycled_segment_does_not_validate() {
        let payload = [9u8; 100];
        let mut bytes = vec![0u8; record_length(payload.len()) as usize];
        encode(&mut bytes, 0, &header(64, 100), &payload);
        // The same file renamed to start at 1 MiB: same bytes, different identity.
        assert!(decode(&bytes, 1 << 20, 2 << 20, (1 << 20) + 64).is_err());
        assert!(decode(&bytes, 0, 1 << 20, 64).is_ok());
    }

    #[test]
    fn a_damaged_payload_leaves_the_header_readable_a_damaged_header_does_not() {
        let payload = [3u8; 200];
        let position = 4096 + 64;
        let mut bytes = vec![0u8; record_length(payload.len()) as usize];
        encode(&mut bytes, 4096, &header(position, 200), &payload);
        assert_eq!(
            decode_header(&bytes, 4096, 1 << 20, position),
            Some(header(position, 200))
        );
        let mut payload_damaged = bytes.clone();
        payload_damaged[HEADER_BYTES + 17] ^= 0x10;
        assert_eq!(
            decode(&payload_damaged, 4096, 1 << 20, position),
            Err(Invalid::BadChecksum)
        );
        assert_eq!(
            decode_header(&payload_damaged, 4096, 1 << 20, position),
            Some(header(position, 200))
        );
        for bit in 4 * 8..HEADER_BYTES * 8 {
            let mut damaged = bytes.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(
                decode_header(&damaged, 4096, 1 << 20, position),
                None,
                "bit {bit}"
            );
        }
        // A format 1 header (zero where the header checksum goes) is never trusted alone.
        let mut format_1 = bytes.clone();
        format_1[36..40].fill(0);
        assert_eq!(decode_header(&format_1, 4096, 1 << 20, position), None);
    }

    #[test]
    fn group_start_claims_only_what_lies_before_it() {
        let start = RecordHeader::group_start(8192, 4096);
        assert_eq!(start.synced_claim(), Some(4096));
        let mut bytes = vec![0u8; HEADER_BYTES];
        encode(&mut bytes, 0, &start, &[]);
        assert_eq!(
            decode(&bytes, 0, 1 << 20, 8192).unwrap().synced_claim(),
            Some(4096)
        );
        assert_eq!(RecordHeader::group_start(8192, 0).synced_claim(), None);
        let mut beyond = start;
        beyond.offset = Offset(9000);
        assert_eq!(beyond.synced_claim(), None);
        assert_eq!(header(8192, 0).synced_claim(), None);
    }

    #[test]
    fn zeros_are_not_a_record() {
        assert_eq!(decode(&[0u8; 64], 0, 4096, 0), Err(Invalid::BadHeader));
        assert_eq!(decode(&[0u8; 10], 0, 4096, 0), Err(Invalid::Truncated));
    }
}

//! One record of a segment, encoded and decoded without I/O.
//!
//! ```text
//! offset size field
//!  0      4   length: payload bytes, little-endian, at most MAX_RECORD_BYTES
//!  4      4   crc32c over index (8 bytes LE) ‖ length (4 bytes LE) ‖ payload
//!  8      8   index, little-endian, from 1, dense
//! 16 length   payload
//! ```
//!
//! The checksum covers the index and the length, so a record can only validate at its own
//! index and a flipped length bit is caught, not followed. Zeros never form a record: index 0
//! is never assigned and recovery also checks each index against the one it expects.

/// Header bytes before the payload.
pub const RECORD_HEADER_BYTES: usize = 16;

/// Largest payload a record may carry (1 MiB). A format constant, not an option: a reader
/// must never disagree with the writer about which lengths are plausible.
pub const MAX_RECORD_BYTES: usize = 1 << 20;

/// Bytes a record with `payload_len` bytes of payload takes on disk.
pub(crate) fn encoded_len(payload_len: usize) -> usize {
    RECORD_HEADER_BYTES + payload_len
}

fn checksum(index: u64, length: u32, payload: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&index.to_le_bytes());
    let crc = crc32c::crc32c_append(crc, &length.to_le_bytes());
    crc32c::crc32c_append(crc, payload)
}

/// Appends the record for `index` to `buffer`.
pub(crate) fn encode_into(buffer: &mut Vec<u8>, index: u64, payload: &[u8]) {
    assert!(index >= 1, "record indexes start at 1");
    assert!(payload.len() <= MAX_RECORD_BYTES, "record too large");
    let start = buffer.len();
    let length = payload.len() as u32;
    buffer.extend_from_slice(&length.to_le_bytes());
    buffer.extend_from_slice(&checksum(index, length, payload).to_le_bytes());
    buffer.extend_from_slice(&index.to_le_bytes());
    buffer.extend_from_slice(payload);
    debug_assert_eq!(buffer.len() - start, encoded_len(payload.len()));
    debug_assert_eq!(
        decode(&buffer[start..]).map(|record| record.index),
        Ok(index)
    );
}

/// A record that validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Decoded<'a> {
    pub index: u64,
    pub payload: &'a [u8],
}

impl Decoded<'_> {
    pub fn encoded_len(&self) -> usize {
        encoded_len(self.payload.len())
    }
}

/// Why the bytes at some offset are not a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Damage {
    /// Fewer than 16 bytes left.
    ShortHeader { available: usize },
    /// A length over `MAX_RECORD_BYTES`.
    LengthTooLarge { length: u32 },
    /// The payload runs past the end of the bytes.
    ShortPayload { length: u32, available: usize },
    /// The checksum does not match.
    Checksum { stored: u32, computed: u32 },
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Damage::ShortHeader { available } => write!(
                f,
                "a record header needs {RECORD_HEADER_BYTES} bytes, only {available} remain"
            ),
            Damage::LengthTooLarge { length } => write!(
                f,
                "record length {length} exceeds the limit of {MAX_RECORD_BYTES} bytes"
            ),
            Damage::ShortPayload { length, available } => write!(
                f,
                "record length {length} but only {available} payload bytes remain"
            ),
            Damage::Checksum { stored, computed } => write!(
                f,
                "checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"
            ),
        }
    }
}

/// Decodes the record at the start of `bytes`. Never panics, whatever the bytes.
pub(crate) fn decode(bytes: &[u8]) -> Result<Decoded<'_>, Damage> {
    let Some(header) = bytes.get(..RECORD_HEADER_BYTES) else {
        return Err(Damage::ShortHeader {
            available: bytes.len(),
        });
    };
    let field =
        |at: usize| -> [u8; 4] { [header[at], header[at + 1], header[at + 2], header[at + 3]] };
    let length = u32::from_le_bytes(field(0));
    let stored = u32::from_le_bytes(field(4));
    let mut index_bytes = [0u8; 8];
    index_bytes.copy_from_slice(&header[8..16]);
    let index = u64::from_le_bytes(index_bytes);
    if length as usize > MAX_RECORD_BYTES {
        return Err(Damage::LengthTooLarge { length });
    }
    let rest = &bytes[RECORD_HEADER_BYTES..];
    let Some(payload) = rest.get(..length as usize) else {
        return Err(Damage::ShortPayload {
            length,
            available: rest.len(),
        });
    };
    let computed = checksum(index, length, payload);
    if computed != stored {
        return Err(Damage::Checksum { stored, computed });
    }
    Ok(Decoded { index, payload })
}

/// The first offset at or after `from` where a valid record with an index above
/// `last_good_index` starts, if any, with that index. Recovery uses it to tell a torn tail
/// (nothing valid follows the damage) from damage inside the log (something does). Every byte
/// offset is tried, since the damage may have destroyed the length that said where the next
/// record begins; the index and length checks reject almost every offset before the checksum.
pub(crate) fn find_valid_record_after(
    bytes: &[u8],
    from: usize,
    last_good_index: u64,
) -> Option<(usize, u64)> {
    let mut offset = from;
    while offset + RECORD_HEADER_BYTES <= bytes.len() {
        let mut index_bytes = [0u8; 8];
        index_bytes.copy_from_slice(&bytes[offset + 8..offset + 16]);
        let index = u64::from_le_bytes(index_bytes);
        // A later record's index is above the last good one, and by no more than the number of
        // records that could fit in between.
        let most_records = ((bytes.len() - offset) / RECORD_HEADER_BYTES) as u64 + 1;
        if index > last_good_index && index - last_good_index <= most_records {
            if let Ok(record) = decode(&bytes[offset..]) {
                return Some((offset, record.index));
            }
        }
        offset += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn zeros_are_never_a_record() {
        assert_eq!(
            decode(&[0u8; 64]),
            Err(Damage::Checksum {
                stored: 0,
                computed: checksum(0, 0, &[])
            })
        );
        assert!(checksum(0, 0, &[]) != 0);
        assert_eq!(find_valid_record_after(&[0u8; 4096], 0, 0), None);
    }

    #[test]
    fn every_flipped_bit_is_rejected() {
        let mut buffer = Vec::new();
        encode_into(&mut buffer, 42, b"create stream 7 with 3 replicas");
        for bit in 0..buffer.len() * 8 {
            let mut damaged = buffer.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            match decode(&damaged) {
                Err(_) => {}
                // A flipped length bit that shortens the record must still fail the checksum.
                Ok(record) => panic!("bit {bit} flipped, still decoded index {}", record.index),
            }
        }
    }

    #[test]
    fn a_record_validates_only_at_its_own_index() {
        let mut buffer = Vec::new();
        encode_into(&mut buffer, 5, b"payload");
        // Rewrite the index field: the checksum covers it.
        buffer[8..16].copy_from_slice(&6u64.to_le_bytes());
        assert!(matches!(decode(&buffer), Err(Damage::Checksum { .. })));
    }

    proptest! {
        #[test]
        fn round_trip(index in 1u64.., payload in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let mut buffer = vec![0xEE; 3];
            encode_into(&mut buffer, index, &payload);
            let record = decode(&buffer[3..]).unwrap();
            prop_assert_eq!(record.index, index);
            prop_assert_eq!(record.payload, &payload[..]);
            prop_assert_eq!(record.encoded_len(), buffer.len() - 3);
            // Any strict prefix is damage, never a record.
            for cut in 0..buffer.len() - 3 {
                prop_assert!(decode(&buffer[3..3 + cut]).is_err());
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512), last in any::<u64>()) {
            let _ = decode(&bytes);
            let _ = find_valid_record_after(&bytes, 0, last);
        }
    }
}

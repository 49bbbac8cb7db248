//! The little-endian byte helpers shared by command and snapshot encodings, and the one error a
//! decode of either can return.
//!
//! Encoding never fails: every field has a fixed width or a `u32` length prefix, so any value a
//! caller can build encodes, and decodes back to itself. Validation of values (an R of 40, an
//! address of a megabyte) is `PmState::apply`'s job, which rejects them as commands; the log
//! must be able to hold and replay whatever the daemon wrote. Decoding reads only through
//! [`Reader`], which checks the remaining length before every read and before every allocation,
//! so malformed input is an error, never a panic or a huge allocation.

use std::fmt;

use ids::{Epoch, NodeId, Offset, RangeIndex, RangeKey, StreamId};

/// Why bytes could not be decoded into a command or a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The input ended inside `field`.
    Truncated {
        field: &'static str,
        needed: usize,
        remaining: usize,
    },
    /// The first byte names a format version this build does not know.
    UnsupportedVersion { found: u8, supported: u8 },
    /// The command tag is not one of [`crate::state::Command`]'s.
    UnknownCommand { tag: u8 },
    /// `field` holds a value outside its domain (a flag that is neither 0 nor 1, a node state
    /// that does not exist).
    InvalidValue { field: &'static str, value: u64 },
    /// A string field is not UTF-8.
    InvalidUtf8 { field: &'static str },
    /// Bytes were left after the last field.
    TrailingBytes { count: usize },
    /// A snapshot does not start with the snapshot magic.
    NotASnapshot,
    /// A snapshot decoded but describes a state that breaks an invariant of `PmState`.
    Inconsistent(String),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated {
                field,
                needed,
                remaining,
            } => write!(
                formatter,
                "input ends inside {field}: {needed} more bytes expected, {remaining} left"
            ),
            DecodeError::UnsupportedVersion { found, supported } => write!(
                formatter,
                "format version {found} is not supported (this build reads version {supported}); \
                 upgrade the placement manager"
            ),
            DecodeError::UnknownCommand { tag } => {
                write!(formatter, "unknown command tag {tag}")
            }
            DecodeError::InvalidValue { field, value } => {
                write!(
                    formatter,
                    "{field} holds {value}, which is not a valid value"
                )
            }
            DecodeError::InvalidUtf8 { field } => write!(formatter, "{field} is not UTF-8"),
            DecodeError::TrailingBytes { count } => {
                write!(formatter, "{count} bytes left after the last field")
            }
            DecodeError::NotASnapshot => {
                write!(formatter, "input does not start with the PM snapshot magic")
            }
            DecodeError::Inconsistent(reason) => {
                write!(
                    formatter,
                    "snapshot describes an inconsistent state: {reason}"
                )
            }
        }
    }
}

impl std::error::Error for DecodeError {}

/// Appends fields to a byte vector.
#[derive(Debug, Default)]
pub(crate) struct Writer {
    bytes: Vec<u8>,
}

impl Writer {
    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
    pub(crate) fn u8(&mut self, value: u8) {
        self.bytes.push(value);
    }
    pub(crate) fn u32(&mut self, value: u32) {
        self.bytes.extend_from_slice(&value.to_le_bytes());
    }
    pub(crate) fn u64(&mut self, value: u64) {
        self.bytes.extend_from_slice(&value.to_le_bytes());
    }
    pub(crate) fn bytes(&mut self, value: &[u8]) {
        self.bytes.extend_from_slice(value);
    }
    pub(crate) fn bool(&mut self, value: bool) {
        self.u8(u8::from(value));
    }
    pub(crate) fn length(&mut self, length: usize) {
        let length = u32::try_from(length).expect("a PM record holds fewer than 2^32 items");
        self.u32(length);
    }
    pub(crate) fn string(&mut self, value: &str) {
        self.length(value.len());
        self.bytes(value.as_bytes());
    }
    pub(crate) fn option_u8(&mut self, value: Option<u8>) {
        self.bool(value.is_some());
        if let Some(value) = value {
            self.u8(value);
        }
    }
    pub(crate) fn option_u64(&mut self, value: Option<u64>) {
        self.bool(value.is_some());
        if let Some(value) = value {
            self.u64(value);
        }
    }
    pub(crate) fn stream(&mut self, stream: StreamId) {
        self.u64(stream.0);
    }
    pub(crate) fn node(&mut self, node: NodeId) {
        self.u32(node.0);
    }
    pub(crate) fn offset(&mut self, offset: Offset) {
        self.u64(offset.0);
    }
    pub(crate) fn epoch(&mut self, epoch: Epoch) {
        self.u64(epoch.0);
    }
    pub(crate) fn range_key(&mut self, key: RangeKey) {
        self.stream(key.stream_id);
        self.u32(key.range_index.0);
    }
    pub(crate) fn nodes(&mut self, nodes: &[NodeId]) {
        self.length(nodes.len());
        for &node in nodes {
            self.node(node);
        }
    }
}

/// Reads fields from a byte slice; every read checks the remaining length first.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes }
    }

    fn take(&mut self, field: &'static str, count: usize) -> Result<&'a [u8], DecodeError> {
        if self.bytes.len() < count {
            return Err(DecodeError::Truncated {
                field,
                needed: count,
                remaining: self.bytes.len(),
            });
        }
        let (taken, rest) = self.bytes.split_at(count);
        self.bytes = rest;
        Ok(taken)
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(field, 1)?[0])
    }
    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        let bytes = self.take(field, 4)?;
        Ok(u32::from_le_bytes(bytes.try_into().expect("took 4 bytes")))
    }
    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        let bytes = self.take(field, 8)?;
        Ok(u64::from_le_bytes(bytes.try_into().expect("took 8 bytes")))
    }
    pub(crate) fn bytes(
        &mut self,
        field: &'static str,
        count: usize,
    ) -> Result<&'a [u8], DecodeError> {
        self.take(field, count)
    }
    pub(crate) fn bool(&mut self, field: &'static str) -> Result<bool, DecodeError> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(DecodeError::InvalidValue {
                field,
                value: u64::from(other),
            }),
        }
    }
    /// A `u32` count of items of `item_bytes` each, checked against the bytes left so that a
    /// corrupt count cannot make the caller allocate more than the input could hold.
    pub(crate) fn length(
        &mut self,
        field: &'static str,
        item_bytes: usize,
    ) -> Result<usize, DecodeError> {
        let count = self.u32(field)? as usize;
        let needed = count.saturating_mul(item_bytes.max(1));
        if needed > self.bytes.len() {
            return Err(DecodeError::Truncated {
                field,
                needed,
                remaining: self.bytes.len(),
            });
        }
        Ok(count)
    }
    pub(crate) fn string(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let length = self.length(field, 1)?;
        let bytes = self.take(field, length)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::InvalidUtf8 { field })
    }
    pub(crate) fn option_u8(&mut self, field: &'static str) -> Result<Option<u8>, DecodeError> {
        Ok(if self.bool(field)? {
            Some(self.u8(field)?)
        } else {
            None
        })
    }
    pub(crate) fn option_u64(&mut self, field: &'static str) -> Result<Option<u64>, DecodeError> {
        Ok(if self.bool(field)? {
            Some(self.u64(field)?)
        } else {
            None
        })
    }
    pub(crate) fn stream(&mut self, field: &'static str) -> Result<StreamId, DecodeError> {
        self.u64(field).map(StreamId)
    }
    pub(crate) fn node(&mut self, field: &'static str) -> Result<NodeId, DecodeError> {
        self.u32(field).map(NodeId)
    }
    pub(crate) fn offset(&mut self, field: &'static str) -> Result<Offset, DecodeError> {
        self.u64(field).map(Offset)
    }
    pub(crate) fn epoch(&mut self, field: &'static str) -> Result<Epoch, DecodeError> {
        self.u64(field).map(Epoch)
    }
    pub(crate) fn range_key(&mut self, field: &'static str) -> Result<RangeKey, DecodeError> {
        let stream = self.stream(field)?;
        let index = self.u32(field)?;
        Ok(RangeKey::new(stream, RangeIndex(index)))
    }
    pub(crate) fn nodes(&mut self, field: &'static str) -> Result<Vec<NodeId>, DecodeError> {
        let count = self.length(field, 4)?;
        (0..count).map(|_| self.node(field)).collect()
    }

    /// Fails unless every byte was read.
    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes {
                count: self.bytes.len(),
            })
        }
    }
}

//! The identifiers every crate of the project speaks of, defined once.
//!
//! `wire` encodes them, `store` keys its index by them, the data node, the placement manager and
//! the client pass them around. This crate sits below all of them and knows no protocol, disk
//! format or runtime: a newtype per concept, so a range index cannot be passed where an offset
//! is expected, and one `Display` per type, so every log line and error names a range the same
//! way (`stream/index`).

use std::fmt;

/// Identifies a stream; assigned by the placement manager.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(pub u64);

/// Position of a range within its stream: 0, 1, 2, ...
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RangeIndex(pub u32);

/// A record's position in its stream. Offsets are dense per stream. `u64::MAX` is reserved as
/// "absent" on the wire, so the largest valid offset is [`Offset::MAX`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Offset(pub u64);

/// Writer epoch: raising it fences every older writer of a stream. `u64::MAX` is reserved as
/// "absent" on the wire, so the largest valid epoch is [`Epoch::MAX`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Epoch(pub u64);

/// Identifies a data node; allocated once by the placement manager (ALLOCATE_ID).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u32);

/// Names a range: its stream and its index in that stream. Displayed as `stream/index`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RangeKey {
    pub stream_id: StreamId,
    pub range_index: RangeIndex,
}

impl Offset {
    /// The largest offset that can be sent (`u64::MAX` means "absent" on the wire).
    pub const MAX: Offset = Offset(u64::MAX - 1);

    /// `self + count`, or `None` if that would overflow the valid offset space.
    pub fn checked_add(self, count: u64) -> Option<Offset> {
        self.0
            .checked_add(count)
            .filter(|&value| value <= Offset::MAX.0)
            .map(Offset)
    }

    /// Offsets from `earlier` up to `self`; zero when `earlier` is not below `self`.
    pub fn saturating_distance_from(self, earlier: Offset) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

/// `offset + count`: the offset `count` records later. Callers add counts that a batch or an
/// index already holds, so the sum stays below [`Offset::MAX`]; use [`Offset::checked_add`] on
/// counts that came from the network.
impl std::ops::Add<u64> for Offset {
    type Output = Offset;

    fn add(self, count: u64) -> Offset {
        Offset(self.0 + count)
    }
}

impl std::ops::AddAssign<u64> for Offset {
    fn add_assign(&mut self, count: u64) {
        self.0 += count;
    }
}

impl Epoch {
    /// The largest epoch that can be sent (`u64::MAX` means "absent" on the wire).
    pub const MAX: Epoch = Epoch(u64::MAX - 1);
}

impl RangeIndex {
    /// The index of the range after this one, or `None` past the last possible index.
    pub fn next(self) -> Option<RangeIndex> {
        self.0.checked_add(1).map(RangeIndex)
    }
}

impl RangeKey {
    pub fn new(stream_id: StreamId, range_index: RangeIndex) -> RangeKey {
        RangeKey {
            stream_id,
            range_index,
        }
    }
}

macro_rules! into_inner {
    ($($name:ident: $inner:ty),*) => {$(
        impl From<$name> for $inner {
            fn from(value: $name) -> $inner {
                value.0
            }
        }
    )*};
}
into_inner!(StreamId: u64, RangeIndex: u32, Offset: u64, Epoch: u64, NodeId: u32);

macro_rules! display_inner {
    ($($name:ident),*) => {$(
        impl fmt::Display for $name {
            fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, formatter)
            }
        }
    )*};
}
display_inner!(StreamId, RangeIndex, Offset, Epoch, NodeId);

impl fmt::Display for RangeKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}/{}", self.stream_id, self.range_index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_key_displays_as_stream_slash_index() {
        let key = RangeKey::new(StreamId(42), RangeIndex(7));
        assert_eq!(key.to_string(), "42/7");
        assert_eq!(format!("range {key} is sealed"), "range 42/7 is sealed");
    }

    #[test]
    fn offsets_stop_below_the_absent_marker() {
        assert_eq!(Offset(5).checked_add(3), Some(Offset(8)));
        assert_eq!(Offset::MAX.checked_add(1), None);
        assert_eq!(Offset(u64::MAX - 2).checked_add(1), Some(Offset::MAX));
        assert_eq!(Offset(9).saturating_distance_from(Offset(4)), 5);
        assert_eq!(Offset(4).saturating_distance_from(Offset(9)), 0);
    }

    #[test]
    fn range_keys_order_by_stream_then_index() {
        let mut keys = [
            RangeKey::new(StreamId(2), RangeIndex(0)),
            RangeKey::new(StreamId(1), RangeIndex(3)),
            RangeKey::new(StreamId(1), RangeIndex(1)),
        ];
        keys.sort();
        let shown: Vec<String> = keys.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["1/1", "1/3", "2/0"]);
        assert_eq!(RangeIndex(u32::MAX).next(), None);
        assert_eq!(RangeIndex(3).next(), Some(RangeIndex(4)));
    }
}

//! The record of one range as the node keeps it (what the WAL cannot tell: that a range exists,
//! even empty, its start, its epoch, whether it is sealed and where, R and A, and the confirmed
//! offset as of the last clean shutdown), its 64-byte encoding, and the *old* layout that kept
//! one file per range.
//!
//! The records now live in the range catalog's log (`catalog/`), which uses the encoding below
//! for each of its entries. Data directories written by earlier versions hold one file per
//! range under `<data-dir>/ranges/`, named `<stream>-<index>.range`, each written with
//! `runtime::fs::write_file_durably`; [`LegacyRangeFiles`] reads them once at start so the
//! catalog can migrate them (see `catalog/mod.rs`).
//!
//! Encoding (little endian, 64 bytes):
//!
//! | bytes | field |
//! |---|---|
//! | 0..8 | magic `ESRANGE2` |
//! | 8..16 | stream id |
//! | 16..24 | range index |
//! | 24..32 | epoch |
//! | 32..40 | start offset |
//! | 40 | flags: bit 0 = sealed |
//! | 41 | R the range was created with (0 = unknown) |
//! | 42 | A the range was created with (0 = unknown) |
//! | 43 | reserved, 0 |
//! | 44..52 | end offset (0 unless sealed) |
//! | 52..60 | confirmed offset (the start when unknown) |
//! | 60..64 | CRC32C of bytes 0..60 |
//!
//! Bytes 41..43 were zero before ranges carried R and A, so older records read back as
//! "unknown". Every record carries a CRC32C, so a damaged one stops the node with its place
//! instead of resurrecting a wrong range.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use ids::{Epoch, Offset, RangeIndex, RangeKey, StreamId};

const MAGIC: &[u8; 8] = b"ESRANGE2";
/// Bytes of one encoded record.
pub const RECORD_BYTES: usize = 64;
const FILE_SIZE: usize = RECORD_BYTES;
const CRC_AT: usize = 60;
const FLAG_SEALED: u8 = 1;
const SUFFIX: &str = ".range";
const TEMP_SUFFIX: &str = ".range.tmp";

/// The file holding range `key`: `<stream>-<index>.range` (a file name cannot hold the `/` of
/// the range's display form).
pub fn file_name(key: RangeKey) -> String {
    format!("{}-{}{SUFFIX}", key.stream_id, key.range_index)
}

/// What is persisted about one range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RangeRecord {
    pub key: RangeKey,
    pub epoch: Epoch,
    pub start: Offset,
    /// `Some(end)` once sealed.
    pub end: Option<Offset>,
    /// Highest offset the writer confirmed, as last persisted; the start when unknown.
    pub confirmed: Offset,
    /// R given by the CREATE_RANGE that created the range; 0 = unknown.
    pub replica_count_target: u8,
    /// A given by the CREATE_RANGE that created the range; 0 = unknown.
    pub ack_count: u8,
}

impl RangeRecord {
    /// The 64-byte encoding (see the module header).
    pub fn encode(&self) -> [u8; FILE_SIZE] {
        let mut bytes = [0u8; FILE_SIZE];
        bytes[0..8].copy_from_slice(MAGIC);
        bytes[8..16].copy_from_slice(&self.key.stream_id.0.to_le_bytes());
        bytes[16..24].copy_from_slice(&u64::from(self.key.range_index.0).to_le_bytes());
        bytes[24..32].copy_from_slice(&self.epoch.0.to_le_bytes());
        bytes[32..40].copy_from_slice(&self.start.0.to_le_bytes());
        let flags = if self.end.is_some() { FLAG_SEALED } else { 0 };
        bytes[40] = flags;
        bytes[41] = self.replica_count_target;
        bytes[42] = self.ack_count;
        bytes[44..52].copy_from_slice(&self.end.map_or(0, |end| end.0).to_le_bytes());
        bytes[52..60].copy_from_slice(&self.confirmed.0.to_le_bytes());
        let checksum = crc32c::crc32c(&bytes[0..CRC_AT]);
        bytes[CRC_AT..FILE_SIZE].copy_from_slice(&checksum.to_le_bytes());
        bytes
    }

    /// Decodes and checks a 64-byte record; the error says what is wrong.
    pub fn decode(bytes: &[u8]) -> Result<RangeRecord, String> {
        if bytes.len() != FILE_SIZE {
            return Err(format!("expected {FILE_SIZE} bytes, found {}", bytes.len()));
        }
        if &bytes[0..8] != MAGIC {
            return Err("expected magic ESRANGE2".to_string());
        }
        let stored = u32::from_le_bytes(bytes[CRC_AT..FILE_SIZE].try_into().expect("4 bytes"));
        let computed = crc32c::crc32c(&bytes[0..CRC_AT]);
        if stored != computed {
            return Err(format!(
                "checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"
            ));
        }
        let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        let flags = bytes[40];
        if flags & !FLAG_SEALED != 0 {
            return Err(format!("unknown flags {flags:#x}"));
        }
        if bytes[43] != 0 {
            return Err(format!("reserved byte 43 is {:#x}, expected 0", bytes[43]));
        }
        let range_index = u32::try_from(word(16)).map_err(|_| {
            format!(
                "range index {} does not fit the protocol's 32 bits",
                word(16)
            )
        })?;
        let record = RangeRecord {
            key: RangeKey::new(StreamId(word(8)), RangeIndex(range_index)),
            epoch: Epoch(word(24)),
            start: Offset(word(32)),
            end: (flags & FLAG_SEALED != 0).then(|| Offset(word(44))),
            confirmed: Offset(word(52)),
            replica_count_target: bytes[41],
            ack_count: bytes[42],
        };
        if record.confirmed < record.start {
            return Err(format!(
                "confirmed offset {} below start {}",
                record.confirmed, record.start
            ));
        }
        if let Some(end) = record.end {
            if end < record.start {
                return Err(format!("end {end} below start {}", record.start));
            }
        }
        Ok(record)
    }

    fn file_name(&self) -> String {
        file_name(self.key)
    }
}

/// A range file, or the catalog log, that could not be read back.
#[derive(Debug)]
pub struct CatalogError {
    pub path: PathBuf,
    pub reason: String,
}

impl fmt::Display for CatalogError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "range catalog file {}: {} (restore the range from a replica, or remove the file to \
             forget what it holds)",
            self.path.display(),
            self.reason
        )
    }
}

impl std::error::Error for CatalogError {}

/// The one-file-per-range layout of `<data-dir>/ranges/` written by earlier versions: read at
/// start for the migration into the catalog log. [`LegacyRangeFiles::save`] remains for tests
/// that build an old data directory.
#[derive(Debug, Clone)]
pub struct LegacyRangeFiles {
    directory: PathBuf,
}

impl LegacyRangeFiles {
    /// Opens (creating if needed) `<data_dir>/ranges` and removes leftover temporary files.
    pub fn open(data_dir: &Path) -> io::Result<LegacyRangeFiles> {
        let directory = data_dir.join("ranges");
        if !directory.is_dir() {
            runtime::durable::create_dir_all(&directory)?;
            runtime::durable::sync_directory(data_dir)?;
        }
        for entry in fs::read_dir(&directory)? {
            let entry = entry?;
            if entry.file_name().to_string_lossy().ends_with(TEMP_SUFFIX) {
                runtime::durable::remove_file(&entry.path())?;
            }
        }
        Ok(LegacyRangeFiles { directory })
    }

    /// Every persisted range, sorted by stream and index.
    pub fn load(&self) -> Result<Vec<RangeRecord>, CatalogError> {
        let fail = |path: &Path, reason: String| CatalogError {
            path: path.to_path_buf(),
            reason,
        };
        let entries = fs::read_dir(&self.directory)
            .map_err(|error| fail(&self.directory, error.to_string()))?;
        let mut records = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|error| fail(&self.directory, error.to_string()))?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.ends_with(SUFFIX) {
                continue;
            }
            // A range file has a fixed size: refuse a larger one before reading it into memory.
            let size = entry
                .metadata()
                .map_err(|error| fail(&path, error.to_string()))?
                .len();
            if size != FILE_SIZE as u64 {
                return Err(fail(
                    &path,
                    format!("expected {FILE_SIZE} bytes, found {size}"),
                ));
            }
            let bytes = fs::read(&path).map_err(|error| fail(&path, error.to_string()))?;
            let record = RangeRecord::decode(&bytes).map_err(|reason| fail(&path, reason))?;
            if record.file_name() != name {
                return Err(fail(&path, format!("holds range {}", record.key)));
            }
            records.push(record);
        }
        records.sort_by_key(|record| record.key);
        Ok(records)
    }

    /// Writes `record` durably, replacing any earlier version of the same range.
    pub fn save(&self, record: &RangeRecord) -> io::Result<()> {
        let path = self.directory.join(record.file_name());
        runtime::fs::write_file_durably(&path, &record.encode())
    }

    /// The directory the files are in.
    pub fn directory(&self) -> &Path {
        &self.directory
    }

    /// Deletes the file of range `key` durably (the directory is synced, so the range does not
    /// come back after a crash). A missing file is not an error: removing is idempotent.
    pub fn remove(&self, key: RangeKey) -> io::Result<()> {
        let path = self.directory.join(file_name(key));
        match runtime::durable::remove_file(&path) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(error),
        }
        // Synced even when the file was already gone: an earlier removal may have been
        // interrupted before its directory sync.
        runtime::fs::sync_directory(&self.directory)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_record(stream_id: u64, range_index: u32) -> RangeRecord {
        RangeRecord {
            key: RangeKey::new(StreamId(stream_id), RangeIndex(range_index)),
            epoch: Epoch(3),
            start: Offset(100),
            end: None,
            confirmed: Offset(100),
            replica_count_target: 3,
            ack_count: 2,
        }
    }

    #[test]
    fn saved_ranges_load_back_after_reopen() {
        let data = tempfile::tempdir().unwrap();
        let catalog = LegacyRangeFiles::open(data.path()).unwrap();
        assert!(catalog.load().unwrap().is_empty());
        catalog.save(&open_record(7, 1)).unwrap();
        catalog.save(&open_record(2, 0)).unwrap();
        let sealed = RangeRecord {
            end: Some(Offset(150)),
            epoch: Epoch(4),
            ..open_record(7, 1)
        };
        catalog.save(&sealed).unwrap();

        let reopened = LegacyRangeFiles::open(data.path()).unwrap();
        assert_eq!(reopened.load().unwrap(), vec![open_record(2, 0), sealed]);
    }

    #[test]
    fn removed_range_is_gone_after_reopen_and_removing_again_succeeds() {
        let data = tempfile::tempdir().unwrap();
        let catalog = LegacyRangeFiles::open(data.path()).unwrap();
        catalog.save(&open_record(7, 1)).unwrap();
        catalog.save(&open_record(7, 2)).unwrap();
        catalog.remove(open_record(7, 1).key).unwrap();
        catalog.remove(open_record(7, 1).key).unwrap();
        let reopened = LegacyRangeFiles::open(data.path()).unwrap();
        assert_eq!(reopened.load().unwrap(), vec![open_record(7, 2)]);
    }

    #[test]
    fn file_without_replication_counts_reads_them_as_unknown() {
        // Files written before R and A were recorded hold zeros in bytes 41..43.
        let data = tempfile::tempdir().unwrap();
        let catalog = LegacyRangeFiles::open(data.path()).unwrap();
        let old = RangeRecord {
            replica_count_target: 0,
            ack_count: 0,
            ..open_record(5, 0)
        };
        catalog.save(&old).unwrap();
        assert_eq!(catalog.load().unwrap(), vec![old]);
    }

    #[test]
    fn leftover_temp_file_is_ignored_and_removed() {
        let data = tempfile::tempdir().unwrap();
        let catalog = LegacyRangeFiles::open(data.path()).unwrap();
        catalog.save(&open_record(1, 0)).unwrap();
        // The temporary file a crash in `save` leaves: the one `write_file_durably` writes.
        assert_eq!(
            TEMP_SUFFIX,
            format!("{SUFFIX}{}", runtime::fs::TEMPORARY_SUFFIX)
        );
        let temp = data.path().join("ranges/1-0.range.tmp");
        fs::write(&temp, b"half").unwrap();
        let reopened = LegacyRangeFiles::open(data.path()).unwrap();
        assert!(!temp.exists());
        assert_eq!(reopened.load().unwrap(), vec![open_record(1, 0)]);
    }

    #[test]
    fn damaged_file_is_an_error_naming_it() {
        let data = tempfile::tempdir().unwrap();
        let catalog = LegacyRangeFiles::open(data.path()).unwrap();
        catalog.save(&open_record(9, 2)).unwrap();
        let path = data.path().join("ranges/9-2.range");
        let mut bytes = fs::read(&path).unwrap();
        bytes[30] ^= 0x01;
        fs::write(&path, &bytes).unwrap();
        let error = catalog.load().unwrap_err();
        assert_eq!(error.path, path);
        assert!(error.to_string().contains("checksum mismatch"), "{error}");

        fs::write(&path, b"short").unwrap();
        assert!(catalog
            .load()
            .unwrap_err()
            .reason
            .contains("expected 64 bytes"));
    }

    #[test]
    fn range_index_beyond_32_bits_is_an_error() {
        let data = tempfile::tempdir().unwrap();
        let catalog = LegacyRangeFiles::open(data.path()).unwrap();
        catalog.save(&open_record(3, 0)).unwrap();
        // Hand-made file whose range index field holds 2^32: no protocol range has that index.
        let mut bytes = open_record(3, 0).encode();
        bytes[16..24].copy_from_slice(&(1u64 << 32).to_le_bytes());
        let checksum = crc32c::crc32c(&bytes[0..CRC_AT]);
        bytes[CRC_AT..FILE_SIZE].copy_from_slice(&checksum.to_le_bytes());
        fs::write(data.path().join("ranges/3-0.range"), bytes).unwrap();
        let error = catalog.load().unwrap_err();
        assert!(error.reason.contains("does not fit"), "{error}");
    }

    #[test]
    fn file_under_the_wrong_name_is_an_error() {
        let data = tempfile::tempdir().unwrap();
        let catalog = LegacyRangeFiles::open(data.path()).unwrap();
        catalog.save(&open_record(1, 0)).unwrap();
        fs::rename(
            data.path().join("ranges/1-0.range"),
            data.path().join("ranges/1-5.range"),
        )
        .unwrap();
        assert!(catalog
            .load()
            .unwrap_err()
            .reason
            .contains("holds range 1/0"));
    }

    #[test]
    fn encoding_is_stable() {
        let record = RangeRecord {
            key: RangeKey::new(StreamId(1), RangeIndex(2)),
            epoch: Epoch(3),
            start: Offset(4),
            end: Some(Offset(5)),
            confirmed: Offset(5),
            replica_count_target: 3,
            ack_count: 2,
        };
        let bytes = record.encode();
        assert_eq!(&bytes[0..8], b"ESRANGE2");
        assert_eq!(bytes[8], 1);
        assert_eq!(bytes[16], 2);
        assert_eq!(bytes[40], 1, "sealed flag");
        assert_eq!((bytes[41], bytes[42]), (3, 2), "R and A");
        assert_eq!(bytes[44], 5);
        assert_eq!(bytes[52], 5, "confirmed offset");
        assert_eq!(RangeRecord::decode(&bytes).unwrap(), record);
    }
}

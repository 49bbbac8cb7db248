//! CPU time and resident memory of a process, from /proc. es-bench samples itself and the data
//! node before and after a run and reports CPU as a percentage of one core
//! (200 % = both cores of a two-core machine busy).

use std::time::Instant;

use serde::Serialize;

/// CPU time consumed so far and the resident set, at one instant.
#[derive(Debug, Clone, Copy)]
pub struct ProcessSample {
    pub at: Instant,
    pub cpu_seconds: f64,
    pub rss_bytes: u64,
    /// Bytes the process caused to be sent to storage (`write_bytes` of /proc/PID/io); `None`
    /// when the file is not readable.
    pub storage_write_bytes: Option<u64>,
}

/// Usage over an interval.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ProcessUsage {
    pub pid: u32,
    /// Percent of one core: user + system time / wall time * 100.
    pub cpu_percent: f64,
    pub rss_bytes_end: u64,
    /// Bytes per second the process sent to storage over the interval.
    pub storage_write_bytes_per_second: Option<f64>,
}

/// Samples `/proc/<pid>/stat` (`self` when `pid` is `None`).
pub fn sample(pid: Option<u32>) -> std::io::Result<ProcessSample> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_string(),
    };
    let stat = std::fs::read_to_string(path)?;
    let (cpu_ticks, rss_pages) = parse_stat(&stat).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "unexpected /proc/PID/stat format",
        )
    })?;
    // SAFETY: sysconf only reads configuration values.
    let (ticks_per_second, page_size) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    let io_path = match pid {
        Some(pid) => format!("/proc/{pid}/io"),
        None => "/proc/self/io".to_string(),
    };
    let storage_write_bytes = std::fs::read_to_string(io_path).ok().and_then(|io| {
        io.lines()
            .find_map(|line| line.strip_prefix("write_bytes:"))
            .and_then(|value| value.trim().parse().ok())
    });
    Ok(ProcessSample {
        at: Instant::now(),
        cpu_seconds: cpu_ticks as f64 / ticks_per_second.max(1) as f64,
        rss_bytes: rss_pages * page_size.max(1) as u64,
        storage_write_bytes,
    })
}

/// (utime + stime in ticks, rss in pages). The command name in field 2 may hold spaces and
/// parentheses, so fields are counted after the last ')'.
fn parse_stat(stat: &str) -> Option<(u64, u64)> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // after_name starts at field 3 (state): field N is fields[N - 3].
    let user_ticks: u64 = fields.get(14 - 3)?.parse().ok()?;
    let system_ticks: u64 = fields.get(15 - 3)?.parse().ok()?;
    let rss_pages: u64 = fields.get(24 - 3)?.parse().ok()?;
    Some((user_ticks + system_ticks, rss_pages))
}

pub fn usage(pid: u32, start: &ProcessSample, end: &ProcessSample) -> ProcessUsage {
    let wall_seconds = end.at.duration_since(start.at).as_secs_f64();
    let cpu_percent = if wall_seconds > 0.0 {
        (end.cpu_seconds - start.cpu_seconds) / wall_seconds * 100.0
    } else {
        0.0
    };
    let storage_write_bytes_per_second = start
        .storage_write_bytes
        .zip(end.storage_write_bytes)
        .map(|(before, after)| after.saturating_sub(before) as f64 / wall_seconds.max(1e-9));
    ProcessUsage {
        pid,
        cpu_percent,
        rss_bytes_end: end.rss_bytes,
        storage_write_bytes_per_second,
    }
}

/// Finds the pid of a running process whose command name is `name` (e.g. `data-node`).
/// When several match, the most recently started (highest pid) wins.
pub fn find_process(name: &str) -> Option<u32> {
    let mut found = None;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|text| text.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(comm) = std::fs::read_to_string(entry.path().join("comm")) else {
            continue;
        };
        // comm is truncated to 15 characters by the kernel.
        let wanted: String = name.chars().take(15).collect();
        if comm.trim_end() == wanted && found.is_none_or(|other| pid > other) {
            found = Some(pid);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_stat_line_with_a_tricky_name() {
        let line = "1234 (data node) x) S 1 1234 1234 0 -1 4194560 100 0 0 0 \
                    250 50 0 0 20 0 3 0 100 123456789 2048 18446744073709551615";
        assert_eq!(parse_stat(line), Some((300, 2048)));
    }

    #[test]
    fn own_cpu_time_grows_while_busy() {
        let start = sample(None).expect("read /proc/self/stat");
        let mut spin = 0u64;
        let busy_until = Instant::now() + std::time::Duration::from_millis(60);
        while Instant::now() < busy_until {
            spin = spin.wrapping_add(std::hint::black_box(1));
        }
        let end = sample(None).expect("read /proc/self/stat");
        assert!(spin > 0);
        assert!(end.cpu_seconds > start.cpu_seconds, "{start:?} -> {end:?}");
        assert!(end.rss_bytes > 0);
    }
}

/// Bytes written and write requests completed by a block device so far, from /proc/diskstats
/// (fields: sectors written, writes completed; sectors are 512 bytes whatever the device).
pub fn disk_written(device: &str) -> std::io::Result<DiskSample> {
    let stats = std::fs::read_to_string("/proc/diskstats")?;
    parse_diskstats(&stats, device).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("no device `{device}` in /proc/diskstats"),
        )
    })
}

#[derive(Debug, Clone, Copy)]
pub struct DiskSample {
    pub at: Instant,
    pub bytes_written: u64,
    pub writes_completed: u64,
    pub flushes_completed: u64,
}

fn parse_diskstats(stats: &str, device: &str) -> Option<DiskSample> {
    for line in stats.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(2) != Some(&device) {
            continue;
        }
        let number = |index: usize| fields.get(index).and_then(|text| text.parse::<u64>().ok());
        return Some(DiskSample {
            at: Instant::now(),
            writes_completed: number(7)?,
            bytes_written: number(9)? * 512,
            // Flush requests (kernel 5.5+); 0 when the field is missing.
            flushes_completed: number(18).unwrap_or(0),
        });
    }
    None
}

/// Device writes over an interval.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct DiskUsage {
    pub bytes_written_per_second: f64,
    pub writes_per_second: f64,
    pub flushes_per_second: f64,
}

pub fn disk_usage(start: &DiskSample, end: &DiskSample) -> DiskUsage {
    let seconds = end.at.duration_since(start.at).as_secs_f64().max(1e-9);
    DiskUsage {
        bytes_written_per_second: end.bytes_written.saturating_sub(start.bytes_written) as f64
            / seconds,
        writes_per_second: end.writes_completed.saturating_sub(start.writes_completed) as f64
            / seconds,
        flushes_per_second: end
            .flushes_completed
            .saturating_sub(start.flushes_completed) as f64
            / seconds,
    }
}

#[cfg(test)]
mod disk_tests {
    use super::*;

    #[test]
    fn parses_the_device_line() {
        let stats = " 254       0 vda 340463 438431 84890674 936786 1197363 297781 448601512 625056 3 216068 1635088 55383 105 317888224 42071 414138 31173\n   7       0 loop0 1 2 3 4 5 6 7 8 9 10 11\n";
        let sample = parse_diskstats(stats, "vda").unwrap();
        assert_eq!(sample.writes_completed, 1197363);
        assert_eq!(sample.bytes_written, 448601512 * 512);
        assert_eq!(sample.flushes_completed, 414138);
        assert!(parse_diskstats(stats, "sdz").is_none());
    }
}

//! Process memory figures for summaries and benchmarks (Linux `/proc`).

/// Peak resident set size of this process in bytes (`VmHWM`), if the platform
/// reports it.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_kib_field(&status, "VmHWM:")
}

/// Current resident set size in bytes (`VmRSS`).
pub fn current_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_kib_field(&status, "VmRSS:")
}

fn parse_kib_field(status: &str, field: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line[field.len()..].trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_status_fields() {
        let status = "Name:\theart\nVmHWM:\t  123456 kB\nVmRSS:\t   2048 kB\n";
        assert_eq!(parse_kib_field(status, "VmHWM:"), Some(123_456 * 1024));
        assert_eq!(parse_kib_field(status, "VmRSS:"), Some(2048 * 1024));
        assert_eq!(parse_kib_field(status, "VmSwap:"), None);
    }

    #[test]
    fn reports_this_process() {
        // Current first: the high-water mark read afterwards covers it even if
        // other tests allocate in between.
        let now = current_rss_bytes().expect("Linux reports VmRSS");
        let peak = peak_rss_bytes().expect("Linux reports VmHWM");
        assert!(peak >= now && now > 0);
    }
}

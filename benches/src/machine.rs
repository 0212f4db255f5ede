//! The machine a benchmark ran on: CPU model, cores, memory, OS.
//!
//! Read from Linux `/proc` where available; fields the platform does not
//! report are `None` rather than guessed.

use serde::{Deserialize, Serialize};

/// Identity of the benchmark machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MachineInfo {
    /// CPU model (`model name` of `/proc/cpuinfo`; `Hardware` on some ARM systems).
    pub cpu_model: Option<String>,
    /// Logical cores this process may use (`available_parallelism`: honours
    /// affinity masks and cgroup quotas).
    pub logical_cores: usize,
    /// Total physical memory in bytes (`MemTotal` of `/proc/meminfo`).
    pub total_memory_bytes: Option<u64>,
    /// Operating system family (`linux`, `macos`, ...).
    pub os: String,
    /// Kernel release (`/proc/sys/kernel/osrelease`).
    pub os_release: Option<String>,
    /// CPU architecture (`x86_64`, `aarch64`, ...).
    pub arch: String,
    /// One-minute load average when detected (`/proc/loadavg`): a load above
    /// the core count means other processes competed with the benchmark.
    pub load_average: Option<f64>,
}

impl MachineInfo {
    /// Describes the machine this process runs on.
    pub fn detect() -> Self {
        let read = |path: &str| std::fs::read_to_string(path).ok();
        Self {
            cpu_model: read("/proc/cpuinfo").and_then(|s| parse_cpu_model(&s)),
            logical_cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            total_memory_bytes: read("/proc/meminfo").and_then(|s| parse_mem_total(&s)),
            os: std::env::consts::OS.to_string(),
            os_release: read("/proc/sys/kernel/osrelease").map(|s| s.trim().to_string()),
            arch: std::env::consts::ARCH.to_string(),
            load_average: read("/proc/loadavg").and_then(|s| parse_load_average(&s)),
        }
    }

    /// One line for table headers: `AMD EPYC, 2 cores, 23.5 GiB, linux 6.1 x86_64, load 0.52`.
    pub fn summary(&self) -> String {
        let cpu = self.cpu_model.as_deref().unwrap_or("unknown CPU");
        let mem = self.total_memory_bytes.map_or_else(
            || "unknown memory".to_string(),
            |b| format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        );
        let release = self.os_release.as_deref().map_or_else(String::new, |r| format!(" {r}"));
        let load = self.load_average.map_or_else(String::new, |l| format!(", load {l:.2}"));
        format!(
            "{cpu}, {} cores, {mem}, {}{release} {}{load}",
            self.logical_cores, self.os, self.arch
        )
    }
}

/// The first `model name` (x86) or `Hardware` (some ARM kernels) value of a
/// `/proc/cpuinfo` text.
pub fn parse_cpu_model(cpuinfo: &str) -> Option<String> {
    ["model name", "Hardware"].iter().find_map(|key| {
        cpuinfo.lines().find_map(|line| {
            let (k, v) = line.split_once(':')?;
            (k.trim() == *key && !v.trim().is_empty()).then(|| v.trim().to_string())
        })
    })
}

/// `MemTotal` of a `/proc/meminfo` text, in bytes.
pub fn parse_mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line["MemTotal:".len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// The one-minute load average, the first field of a `/proc/loadavg` text.
pub fn parse_load_average(loadavg: &str) -> Option<f64> {
    loadavg.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpuinfo_and_meminfo() {
        let x86 = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9B45\nflags\t\t: fpu\n\n\
                   processor\t: 1\nmodel name\t: AMD EPYC 9B45\n";
        assert_eq!(parse_cpu_model(x86).as_deref(), Some("AMD EPYC 9B45"));
        let arm = "processor\t: 0\nBogoMIPS\t: 2000.00\nCPU part\t: 0xd85\n\nHardware\t: NVIDIA GB10\n";
        assert_eq!(parse_cpu_model(arm).as_deref(), Some("NVIDIA GB10"));
        assert_eq!(parse_cpu_model("processor\t: 0\n"), None);
        let meminfo = "MemTotal:       24684092 kB\nMemFree:         1000 kB\n";
        assert_eq!(parse_mem_total(meminfo), Some(24_684_092 * 1024));
        assert_eq!(parse_mem_total("MemFree: 1 kB\n"), None);
        assert_eq!(parse_load_average("5.17 6.79 5.99 3/712 40123\n"), Some(5.17));
        assert_eq!(parse_load_average(""), None);
    }

    #[test]
    fn detects_this_machine_and_serializes() {
        let m = MachineInfo::detect();
        assert!(m.logical_cores >= 1);
        assert_eq!(m.arch, std::env::consts::ARCH);
        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(json["logical_cores"], m.logical_cores);
        let back: MachineInfo = serde_json::from_value(json).unwrap();
        assert_eq!(back, m);
        let summary = m.summary();
        assert!(summary.contains(&format!("{} cores", m.logical_cores)), "{summary}");
    }

    #[test]
    fn summary_names_unknown_fields() {
        let m = MachineInfo {
            cpu_model: None,
            logical_cores: 2,
            total_memory_bytes: Some(3 << 30),
            os: "linux".into(),
            os_release: None,
            arch: "x86_64".into(),
            load_average: None,
        };
        assert_eq!(m.summary(), "unknown CPU, 2 cores, 3.0 GiB, linux x86_64");
        let busy = MachineInfo {
            load_average: Some(5.0),
            ..m
        };
        assert_eq!(busy.summary(), "unknown CPU, 2 cores, 3.0 GiB, linux x86_64, load 5.00");
    }
}

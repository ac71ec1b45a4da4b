//! Helpers shared by the `capacity` and `serving` benchmarks: the synthetic
//! catalogue (titles and a deterministic size mix that `bench/*.py`
//! reproduces bit for bit), `/proc` readings, and child-process plumbing.
//!
//! Nothing here asserts on time: the binaries measure and print, and
//! BENCHMARKS.md records what they printed.
#![forbid(unsafe_code)]

use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub mod traffic;

/// Flags both benchmark programs take.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Parent directory of the temporary work directory.
    #[arg(long, default_value = "/tmp")]
    pub workdir: PathBuf,
    /// Keep the work directory (catalogue, payload, logs, ledger) for inspection.
    #[arg(long)]
    pub keep: bool,
    /// Print the whole result as one JSON line at the end too.
    #[arg(long)]
    pub json: bool,
    /// Before each timed step, wait up to this many seconds for the (shared)
    /// machine to be quiet; 0 disables.
    #[arg(long, default_value_t = 0)]
    pub wait_idle: u64,
    /// "Quiet" for --wait-idle: busy share of all CPUs over 3 s at most this.
    #[arg(long, default_value_t = 0.15)]
    pub idle_below: f64,
}

pub const MIB: u64 = 1 << 20;
pub const GIB: u64 = 1 << 30;

/// The workspace root, from where this crate was compiled.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
}

/// `bench/<name>` in the workspace.
pub fn script(name: &str) -> PathBuf {
    workspace_root().join("bench").join(name)
}

/// The Python that has the libtorrent bindings (Debian's python3-libtorrent).
pub const PYTHON: &str = "/usr/bin/python3";

// ---------------------------------------------------------------------------
// The synthetic catalogue.

/// SplitMix64's output function (Steele, Lea, Flood 2014): a bijective mix of
/// 64 bits. `bench/lt_capacity.py` has the same function.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Neutral synthetic title number `i` (0-based).
pub fn title(i: u64) -> String {
    const EXT: [&str; 3] = ["mp4", "mkv", "avi"];
    format!("sample-title-{i:06}.{}", EXT[(i % 3) as usize])
}

/// Size buckets of the mix: (percent, low, high), sizes uniform inside a
/// bucket. Shaped like a video catalogue: many episode-sized files, most
/// around a CD to two CDs, a tail up to the 4 GiB of a DVD image.
pub const SIZE_MIX: [(u64, u64, u64); 4] = [
    (30, 100 * MIB, 700 * MIB),
    (35, 700 * MIB, 1536 * MIB),
    (25, 1536 * MIB, 2560 * MIB),
    (10, 2560 * MIB, 4 * GIB),
];

/// Requested size of title `i` under `seed`: deterministic, 100 MiB–4 GiB.
pub fn size_for(seed: u64, i: u64) -> u64 {
    let state = seed.wrapping_add((i + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let pick = mix64(state) % 100;
    let within = mix64(state ^ 0xD1B5_4A32_D192_ED03);
    let mut acc = 0;
    for (percent, lo, hi) in SIZE_MIX {
        acc += percent;
        if pick < acc {
            return lo + within % (hi - lo + 1);
        }
    }
    unreachable!("percentages add up to 100")
}

/// Writes a catalogue CSV of `n` titles (`title,size_bytes,campaign,language`).
/// Returns the sum of requested sizes.
pub fn write_catalogue_csv(path: &Path, n: u64, seed: u64, sizes: bool) -> Result<u64> {
    let f = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
    writeln!(w, "title,size_bytes,campaign,language")?;
    let mut total = 0u64;
    for i in 0..n {
        if sizes {
            let s = size_for(seed, i);
            total += s;
            writeln!(w, "{},{s},bench,en", title(i))?;
        } else {
            writeln!(w, "{},,bench,en", title(i))?;
        }
    }
    w.flush()?;
    Ok(total)
}

// ---------------------------------------------------------------------------
// /proc readings.

/// A `kB` field of `/proc/<pid>/status` (`VmRSS`, `VmHWM`, ...), in bytes.
pub fn status_bytes(pid: &str, field: &str) -> Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix(field).and_then(|r| r.strip_prefix(':')) {
            let kib: u64 = rest
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .with_context(|| format!("parsing {field} in /proc/{pid}/status"))?;
            return Ok(kib * 1024);
        }
    }
    bail!("no {field} in /proc/{pid}/status")
}

pub fn self_rss() -> Result<u64> {
    status_bytes("self", "VmRSS")
}

/// Clock ticks per second for `/proc/<pid>/stat` times.
pub fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// utime + stime of a process (all its threads), in seconds.
pub fn cpu_seconds(pid: u32, ticks: f64) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name may contain spaces and parentheses: fields start
    // after the last ')'. There, index 0 is field 3 (state); utime is
    // field 14 and stime field 15.
    let rest = &stat[stat.rfind(')').context("malformed stat")? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11).context("no utime")?.parse()?;
    let stime: f64 = f.get(12).context("no stime")?.parse()?;
    Ok((utime + stime) / ticks)
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// `nproc` and the CPU model, for the report header.
pub fn machine() -> String {
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let mem = status_bytes_meminfo().map(|b| b / GIB).unwrap_or(0);
    format!("{cpus} CPUs ({model}), {mem} GiB RAM, load average {}", loadavg())
}

fn status_bytes_meminfo() -> Option<u64> {
    let t = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = t.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Busy and total jiffies of the whole machine, from the first line of
/// /proc/stat (idle and iowait count as not busy).
pub fn machine_jiffies() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<u64> = text
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// Waits until the machine is quiet (the machine is shared: other builds
/// skew timings): until the busy share of all CPUs over a 3 s window is
/// below `max_busy` (0..1), for at most `max_wait`. Returns the last share.
pub fn wait_for_idle(max_busy: f64, max_wait: Duration) -> f64 {
    let deadline = std::time::Instant::now() + max_wait;
    loop {
        let (b0, t0) = machine_jiffies();
        std::thread::sleep(Duration::from_secs(3));
        let (b1, t1) = machine_jiffies();
        let share = (b1 - b0) as f64 / (t1 - t0).max(1) as f64;
        if share <= max_busy || std::time::Instant::now() >= deadline {
            return share;
        }
    }
}

// ---------------------------------------------------------------------------
// Child processes.

/// A child process that is killed (SIGKILL) and reaped if still running when
/// dropped, so an error path never leaves a seeder behind.
pub struct Proc {
    pub child: Child,
    pub name: String,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command) -> Result<Self> {
        let child = cmd.spawn().with_context(|| format!("starting {name}: {cmd:?}"))?;
        Ok(Self {
            child,
            name: name.to_string(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Reads stdout lines until one starts with `prefix`, or `timeout`.
    /// Needs `Stdio::piped()` stdout. Later lines are drained on a thread
    /// so the child never blocks on a full pipe.
    pub fn wait_for_line(&mut self, prefix: &str, timeout: Duration) -> Result<String> {
        let stdout = self.child.stdout.take().context("stdout is not piped")?;
        let (tx, rx) = std::sync::mpsc::channel();
        let prefix_owned = prefix.to_string();
        std::thread::spawn(move || {
            let mut found = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if !found && line.starts_with(&prefix_owned) {
                    found = true;
                    let _ = tx.send(line);
                }
            }
        });
        match rx.recv_timeout(timeout) {
            Ok(line) => Ok(line),
            Err(_) => {
                let status = self.child.try_wait().ok().flatten();
                bail!(
                    "{} did not print {prefix:?} within {timeout:?} (exit status: {status:?})",
                    self.name
                )
            }
        }
    }

    /// SIGTERM, then wait up to `grace` before SIGKILL. Returns whether it
    /// exited on its own after the SIGTERM.
    pub fn terminate(&mut self, grace: Duration) -> Result<bool> {
        if self.child.try_wait()?.is_some() {
            return Ok(true);
        }
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status();
        let deadline = std::time::Instant::now() + grace;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status.success());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        Ok(false)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs a command to completion and parses the last stdout line that is a
/// JSON object. Stderr goes to `log` (appended) when given.
pub fn run_json(name: &str, cmd: &mut Command, log: Option<&Path>) -> Result<serde_json::Value> {
    cmd.stdout(Stdio::piped());
    match log {
        Some(path) => {
            let f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
            cmd.stderr(f);
        }
        None => {
            cmd.stderr(Stdio::inherit());
        }
    }
    let out = cmd.output().with_context(|| format!("running {name}: {cmd:?}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .with_context(|| format!("{name} printed no JSON (status {}): {text}", out.status))?;
    let v: serde_json::Value =
        serde_json::from_str(last).with_context(|| format!("{name} printed bad JSON: {last}"))?;
    if !out.status.success() || v.get("ok") == Some(&serde_json::Value::Bool(false)) {
        bail!("{name} failed (status {}): {last}", out.status);
    }
    Ok(v)
}

pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_deterministic_and_in_range() {
        for i in 0..10_000 {
            let s = size_for(42, i);
            assert_eq!(s, size_for(42, i));
            assert!((100 * MIB..=4 * GIB).contains(&s), "{s}");
        }
        assert_ne!(size_for(42, 0), size_for(43, 0));
    }

    #[test]
    fn mix_matches_the_python_copy() {
        // The same values are asserted in bench/lt_capacity.py --self-test.
        assert_eq!(mix64(0), 0);
        assert_eq!(mix64(1), 0x5692_161D_100B_05E5);
        assert_eq!(size_for(42, 0), 364_998_832);
        assert_eq!(title(7), "sample-title-000007.mkv");
    }

    #[test]
    fn bucket_shares_follow_the_mix() {
        let n = 100_000;
        let small = (0..n).filter(|&i| size_for(7, i) <= 700 * MIB).count() as f64;
        let share = small / n as f64;
        assert!((0.28..0.32).contains(&share), "{share}");
    }

    #[test]
    fn cpu_seconds_reads_own_stat() {
        let t = cpu_seconds(std::process::id(), clock_ticks()).unwrap();
        assert!(t >= 0.0);
        assert!(self_rss().unwrap() > 0);
    }

    #[test]
    fn median_of_even_and_odd() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}

//! Per-thread CPU time of this process, read from `/proc/self/task` (Linux), for the encode
//! report and `va bench`: which thread is busy is what shows the critical path.
//!
//! Reading `/proc` needs no `unsafe`; where it is missing (not Linux) the lists are empty.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One thread's CPU time so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThreadBusy {
    /// The thread's name (`comm`), e.g. `render`, `audio`, `x264`, `frames-0`.
    pub name: String,
    /// CPU seconds the thread has run (user + system).
    pub cpu_seconds: f64,
}

/// The ids of this process's threads.
pub fn thread_ids() -> Vec<u64> {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    let mut ids: Vec<u64> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    ids.sort_unstable();
    ids
}

/// Names thread `tid` of this process (what `top -H`, `perf` and [`snapshot`] show).
pub fn name_thread(tid: u64, name: &str) {
    // The kernel keeps 15 bytes; a failure only loses the label.
    let short: String = name.chars().take(15).collect();
    let _ = std::fs::write(format!("/proc/self/task/{tid}/comm"), short);
}

/// CPU seconds of thread `tid`: the scheduler's nanosecond count where the kernel keeps one,
/// else the tick counts of `stat` (USER_HZ = 100 on Linux).
fn cpu_seconds(tid: u64) -> Option<f64> {
    if let Ok(s) = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")) {
        if let Some(ns) = s
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
        {
            return Some(ns as f64 / 1e9);
        }
    }
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    // Fields after the parenthesised name: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// Every live thread of this process: id → (name, CPU seconds).
pub fn snapshot() -> BTreeMap<u64, ThreadBusy> {
    thread_ids()
        .into_iter()
        .filter_map(|tid| {
            let name = std::fs::read_to_string(format!("/proc/self/task/{tid}/comm")).ok()?;
            let cpu = cpu_seconds(tid)?;
            Some((
                tid,
                ThreadBusy {
                    name: name.trim_end().to_string(),
                    cpu_seconds: cpu,
                },
            ))
        })
        .collect()
}

/// Snapshots taken at different moments merged (a thread's largest reading wins: CPU time only
/// grows), as a list sorted by CPU time, largest first.
pub fn merge(snaps: &[BTreeMap<u64, ThreadBusy>]) -> Vec<ThreadBusy> {
    let mut by_tid: BTreeMap<u64, ThreadBusy> = BTreeMap::new();
    for snap in snaps {
        for (tid, t) in snap {
            match by_tid.get_mut(tid) {
                Some(old) if old.cpu_seconds >= t.cpu_seconds => {}
                _ => {
                    by_tid.insert(*tid, t.clone());
                }
            }
        }
    }
    let mut out: Vec<ThreadBusy> = by_tid.into_values().collect();
    out.sort_by(|a, b| b.cpu_seconds.total_cmp(&a.cpu_seconds));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_named_thread_shows_its_cpu_time() {
        let t = std::thread::Builder::new()
            .name("busy-probe".into())
            .spawn(|| {
                let start = std::time::Instant::now();
                let mut x = 0u64;
                while start.elapsed().as_millis() < 200 {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                }
                let snap = snapshot();
                (x, snap)
            })
            .unwrap();
        let (_, snap) = t.join().unwrap();
        if snap.is_empty() {
            return; // no /proc here
        }
        let me = merge(&[snap]);
        let probe = me.iter().find(|t| t.name == "busy-probe").expect("listed");
        assert!(probe.cpu_seconds > 0.05, "{probe:?}");
    }
}

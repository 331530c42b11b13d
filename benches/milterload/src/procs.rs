//! CPU seconds and peak RSS of the milter processes under test, read from /proc.
//!
//! CPU: utime+stime of each listed process (all its threads) and of its descendants found
//! through /proc/PID/task/TID/children, plus cutime+cstime (children it has reaped), taken
//! at the start and end of the measured phase. Peak RSS: VmHWM after resetting the
//! high-water mark (writing "5" to /proc/PID/clear_refs) when that is permitted, and VmRSS
//! sampled every 50 ms; for several pids under one label the per-sample RSS is summed.

use std::collections::BTreeMap;
use std::fs;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// One --pid LABEL=PID[,PID...] argument.
#[derive(Clone, Debug)]
pub struct Watch {
    pub label: String,
    pub pids: Vec<u32>,
}

pub fn parse_watch(s: &str) -> Result<Watch, String> {
    let (label, pids) = s
        .split_once('=')
        .ok_or_else(|| format!("--pid {s:?}: expected LABEL=PID[,PID...]"))?;
    if label.is_empty() {
        return Err(format!("--pid {s:?}: empty label"));
    }
    let pids = pids
        .split([',', ' '])
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.parse::<u32>()
                .map_err(|_| format!("--pid {s:?}: {p:?} is not a pid"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if pids.is_empty() {
        return Err(format!("--pid {s:?}: no pid"));
    }
    Ok(Watch {
        label: label.to_string(),
        pids,
    })
}

pub fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// (utime+stime, cutime+cstime) in clock ticks from /proc/PID/stat.
pub fn stat_ticks(pid: u32) -> Option<(u64, u64)> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime is field 14 → index 11.
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
    Some((n(11)? + n(12)?, n(13)? + n(14)?))
}

/// The process and all its descendants (via /proc/PID/task/*/children).
fn with_descendants(pid: u32) -> Vec<u32> {
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() && out.len() < 10_000 {
        let p = out[i];
        if let Ok(tasks) = fs::read_dir(format!("/proc/{p}/task")) {
            for t in tasks.flatten() {
                if let Ok(c) = fs::read_to_string(t.path().join("children")) {
                    for kid in c.split_whitespace().filter_map(|k| k.parse::<u32>().ok()) {
                        if !out.contains(&kid) {
                            out.push(kid);
                        }
                    }
                }
            }
        }
        i += 1;
    }
    out
}

/// CPU ticks per process of a label, including descendants and reaped children.
fn cpu_snapshot(w: &Watch) -> BTreeMap<u32, u64> {
    let mut m = BTreeMap::new();
    for &pid in &w.pids {
        for p in with_descendants(pid) {
            if let Some((own, reaped)) = stat_ticks(p) {
                m.insert(p, own + reaped);
            }
        }
    }
    m
}

/// A status field in kB ("VmRSS", "VmHWM").
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))
        .and_then(|l| l[field.len() + 1..].split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Reset the RSS high-water mark (needs the right to write the process's clear_refs).
fn reset_hwm(pid: u32) -> bool {
    fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

pub struct ProcResult {
    pub label: String,
    pub pids: Vec<u32>,
    pub cpu_s: f64,
    pub peak_rss_kib: u64,
    /// "VmHWM" when the reset high-water mark was the maximum, else "sampled VmRSS".
    pub rss_source: &'static str,
    pub hwm_reset: bool,
}

/// Measures the watched processes from `start()` until `stop()`.
pub struct Monitor {
    watches: Vec<Watch>,
    cpu0: Vec<BTreeMap<u32, u64>>,
    hwm_reset: Vec<bool>,
    running: Arc<AtomicBool>,
    peaks: Arc<Mutex<Vec<u64>>>,
    sampler: Option<thread::JoinHandle<()>>,
}

impl Monitor {
    pub fn start(watches: Vec<Watch>) -> Monitor {
        let hwm_reset = watches
            .iter()
            .map(|w| w.pids.iter().all(|&p| reset_hwm(p)))
            .collect();
        let cpu0 = watches.iter().map(cpu_snapshot).collect();
        let running = Arc::new(AtomicBool::new(true));
        let peaks = Arc::new(Mutex::new(vec![0u64; watches.len()]));
        let sampler = if watches.is_empty() {
            None
        } else {
            let (r, p, w) = (running.clone(), peaks.clone(), watches.clone());
            Some(thread::spawn(move || loop {
                let now: Vec<u64> = w
                    .iter()
                    .map(|w| {
                        w.pids
                            .iter()
                            .filter_map(|&pid| status_kib(pid, "VmRSS"))
                            .sum()
                    })
                    .collect();
                {
                    let mut p = p.lock().unwrap();
                    for (peak, v) in p.iter_mut().zip(now) {
                        *peak = (*peak).max(v);
                    }
                }
                if !r.load(Ordering::Relaxed) {
                    break;
                }
                thread::sleep(Duration::from_millis(50));
            }))
        };
        Monitor {
            watches,
            cpu0,
            hwm_reset,
            running,
            peaks,
            sampler,
        }
    }

    pub fn stop(mut self) -> Vec<ProcResult> {
        let cpu1: Vec<BTreeMap<u32, u64>> = self.watches.iter().map(cpu_snapshot).collect();
        self.running.store(false, Ordering::Relaxed);
        if let Some(h) = self.sampler.take() {
            let _ = h.join();
        }
        let peaks = self.peaks.lock().unwrap().clone();
        let tck = clk_tck();
        self.watches
            .iter()
            .enumerate()
            .map(|(i, w)| {
                // Processes present at the end count from their start value (or from zero
                // if they appeared during the run).
                let ticks: u64 = cpu1[i]
                    .iter()
                    .map(|(pid, &t1)| t1.saturating_sub(*self.cpu0[i].get(pid).unwrap_or(&0)))
                    .sum();
                let sampled = peaks[i];
                // A single process's VmHWM is exact; summing several processes' HWMs
                // would add peaks from different moments, so those use the samples.
                let hwm = if self.hwm_reset[i] && w.pids.len() == 1 {
                    status_kib(w.pids[0], "VmHWM")
                } else {
                    None
                };
                let (peak, source) = match hwm {
                    Some(h) if h >= sampled => (h, "VmHWM"),
                    _ => (sampled, "sampled VmRSS"),
                };
                ProcResult {
                    label: w.label.clone(),
                    pids: w.pids.clone(),
                    cpu_s: ticks as f64 / tck,
                    peak_rss_kib: peak,
                    rss_source: source,
                    hwm_reset: self.hwm_reset[i],
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_pid_args() {
        let w = parse_watch("rmilter=12,34").unwrap();
        assert_eq!(w.label, "rmilter");
        assert_eq!(w.pids, [12, 34]);
        assert!(parse_watch("rmilter").is_err());
        assert!(parse_watch("=1").is_err());
        assert!(parse_watch("x=").is_err());
        assert!(parse_watch("x=abc").is_err());
    }

    #[test]
    fn reads_own_process() {
        let me = std::process::id();
        assert!(stat_ticks(me).is_some());
        assert!(status_kib(me, "VmRSS").unwrap() > 0);
        let m = Monitor::start(vec![Watch {
            label: "self".into(),
            pids: vec![me],
        }]);
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        assert!(x > 0);
        let r = m.stop();
        assert_eq!(r.len(), 1);
        assert!(r[0].peak_rss_kib > 0);
        assert!(r[0].cpu_s >= 0.0);
    }
}

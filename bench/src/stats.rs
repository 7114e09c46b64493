//! Percentiles of measured samples and small numeric helpers.

use std::time::Duration;

/// The `q` quantile (0 ≤ q ≤ 1) of `samples`, interpolated linearly between the closest
/// ranks (numpy's default); `None` when there is no sample.
pub fn percentile(samples: &[f64], q: f64) -> Option<f64> {
    if samples.is_empty() || !(0.0..=1.0).contains(&q) {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let position = q * (sorted.len() - 1) as f64;
    let below = position.floor() as usize;
    let above = position.ceil() as usize;
    let fraction = position - below as f64;
    Some(sorted[below] + (sorted[above] - sorted[below]) * fraction)
}

/// Durations in milliseconds.
pub fn millis(durations: &[Duration]) -> Vec<f64> {
    durations.iter().map(|d| d.as_secs_f64() * 1000.0).collect()
}

/// `/proc/PID/status` text → VmRSS in KiB.
pub fn parse_vm_rss_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}

/// Resident set size of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> std::io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_vm_rss_kib(&status)
        .ok_or_else(|| std::io::Error::other(format!("no VmRSS in /proc/{pid}/status")))
}

/// `/proc/PID/stat` text → CPU time used (user + system), in clock ticks.
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) may hold spaces and parentheses: count fields after its last
    // closing parenthesis, where field 3 (the state) comes first.
    let after_name = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// CPU time process `pid` has used so far (user + system, every thread), in seconds.
#[allow(unsafe_code)]
pub fn cpu_seconds(pid: u32) -> std::io::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let ticks = parse_cpu_ticks(&stat)
        .ok_or_else(|| std::io::Error::other(format!("no CPU times in /proc/{pid}/stat")))?;
    // SAFETY: sysconf reads a constant of the system; nothing is passed by reference.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if per_second <= 0 {
        return Err(std::io::Error::other("sysconf(_SC_CLK_TCK) gave no clock rate"));
    }
    Ok(ticks as f64 / per_second as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_user_plus_system_even_with_a_strange_command_name() {
        let stat = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 1234 567 0 0 20 0 9 0";
        assert_eq!(parse_cpu_ticks(stat), Some(1234 + 567));
        assert_eq!(parse_cpu_ticks("4242 (x) S 1"), None);
    }

    #[test]
    fn the_cpu_time_of_a_busy_process_grows() {
        let me = std::process::id();
        let before = cpu_seconds(me).expect("our own /proc/PID/stat");
        let started = std::time::Instant::now();
        // Reading /proc is itself CPU work: the count must move within one clock tick of it.
        while cpu_seconds(me).expect("our own /proc/PID/stat") <= before {
            assert!(started.elapsed() < Duration::from_secs(60), "no CPU time counted");
        }
    }

    #[test]
    fn percentiles_interpolate_between_ranks() {
        let samples: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&samples, 0.0), Some(1.0));
        assert_eq!(percentile(&samples, 1.0), Some(100.0));
        assert!((percentile(&samples, 0.5).unwrap_or(0.0) - 50.5).abs() < 1e-9);
        assert!((percentile(&samples, 0.99).unwrap_or(0.0) - 99.01).abs() < 1e-9);
        assert_eq!(percentile(&[3.0, 1.0, 2.0], 0.5), Some(2.0));
        assert_eq!(percentile(&[7.0], 0.99), Some(7.0));
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[test]
    fn vm_rss_is_read_from_proc_status() {
        let text = "Name:\tkubetwin\nVmPeak:\t  99999 kB\nVmRSS:\t   41234 kB\nThreads:\t5\n";
        assert_eq!(parse_vm_rss_kib(text), Some(41234));
        assert_eq!(parse_vm_rss_kib("Name: x\n"), None);
        assert!(rss_kib(std::process::id()).is_ok_and(|kib| kib > 0));
    }
}

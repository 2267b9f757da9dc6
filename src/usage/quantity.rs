//! Kubernetes `resource.Quantity` and `metav1.Duration` strings, written the
//! way the Go types write them, so `kubectl top` and any client comparing
//! answers with metrics-server's see the same text.
//!
//! A CPU rate is a decimal quantity of nanocores (`resource.NewScaledQuantity(n,
//! -9)`), memory a binary quantity of bytes (`resource.NewQuantity(b,
//! BinarySI)`); both are printed in canonical form: the largest suffix that
//! keeps the number whole (`5000000n` is `5m`, `45658112` bytes are `44588Ki`).

use std::time::Duration;

/// `nanocores` as a canonical decimal quantity: `2365036n`, `5m`, `2`.
pub fn cpu(nanocores: u64) -> String {
    if nanocores == 0 {
        return "0".into();
    }
    // Suffixes of powers of 1000 from nano upwards.
    const SUFFIXES: [&str; 10] = ["n", "u", "m", "", "k", "M", "G", "T", "P", "E"];
    let (mut value, mut scale) = (nanocores, 0);
    while value % 1000 == 0 && scale + 1 < SUFFIXES.len() {
        value /= 1000;
        scale += 1;
    }
    format!("{value}{}", SUFFIXES[scale])
}

/// `bytes` as a canonical binary quantity: `44588Ki`, `10Mi`, or plain bytes
/// when not a multiple of 1024 (`1000`), as Go's `BinarySI` prints them.
pub fn memory(bytes: u64) -> String {
    const SUFFIXES: [&str; 7] = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
    if bytes == 0 {
        return "0".into();
    }
    let (mut value, mut scale) = (bytes, 0);
    while value % 1024 == 0 && scale + 1 < SUFFIXES.len() {
        value /= 1024;
        scale += 1;
    }
    format!("{value}{}", SUFFIXES[scale])
}

/// `duration` as Go's `time.Duration.String()` writes it (what
/// `metav1.Duration` serializes to): `10.034s`, `1m0.5s`, `1h0m0s`, `250ms`.
pub fn go_duration(duration: Duration) -> String {
    let nanos = duration.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    if nanos < 1_000_000 {
        return format!("{}µs", fraction(nanos, 1_000));
    }
    if nanos < 1_000_000_000 {
        return format!("{}ms", fraction(nanos, 1_000_000));
    }
    let total_seconds = nanos / 1_000_000_000;
    let seconds = fraction(nanos % 60_000_000_000, 1_000_000_000);
    let (hours, minutes) = (total_seconds / 3600, total_seconds / 60 % 60);
    match (hours, minutes) {
        (0, 0) => format!("{seconds}s"),
        (0, m) => format!("{m}m{seconds}s"),
        (h, m) => format!("{h}h{m}m{seconds}s"),
    }
}

/// `value / unit` with its fraction, trailing zeros dropped: `10.034`, `2`.
fn fraction(value: u128, unit: u128) -> String {
    let (whole, rest) = (value / unit, value % unit);
    if rest == 0 {
        return whole.to_string();
    }
    let width = unit.ilog10() as usize;
    let digits = format!("{rest:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_is_written_in_the_largest_whole_unit() {
        assert_eq!(cpu(0), "0");
        assert_eq!(cpu(2_365_036), "2365036n");
        assert_eq!(cpu(5_000_000), "5m");
        assert_eq!(cpu(151_183_000), "151183u");
        assert_eq!(cpu(1_500_000_000), "1500m");
        assert_eq!(cpu(2_000_000_000), "2");
        assert_eq!(cpu(7), "7n");
    }

    #[test]
    fn memory_is_written_in_binary_units_or_bytes() {
        assert_eq!(memory(0), "0");
        assert_eq!(memory(45_658_112), "44588Ki");
        assert_eq!(memory(10 * 1024 * 1024), "10Mi");
        assert_eq!(memory(8 * 1024 * 1024 * 1024), "8Gi");
        assert_eq!(memory(1000), "1000");
        assert_eq!(memory(1024 + 1), "1025");
    }

    #[test]
    fn durations_read_like_go() {
        assert_eq!(go_duration(Duration::from_millis(10_034)), "10.034s");
        assert_eq!(go_duration(Duration::from_millis(60_500)), "1m0.5s");
        assert_eq!(go_duration(Duration::from_secs(3600)), "1h0m0s");
        assert_eq!(go_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(go_duration(Duration::from_nanos(1_500)), "1.5µs");
        assert_eq!(go_duration(Duration::from_nanos(12)), "12ns");
        assert_eq!(go_duration(Duration::ZERO), "0s");
        assert_eq!(
            go_duration(Duration::from_nanos(20_018_000_001)),
            "20.018000001s"
        );
    }
}

//! Sizes, rates and durations as people read them, for messages, reports and notifications:
//! one format each, everywhere.

/// `1536` → `1.5 KiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A duration in one format everywhere: `0.4s`, `12.3s`, `4m05s`, `25h00` (hours and minutes
/// from an hour on).
pub fn human_duration(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return "?".into();
    }
    if secs < 59.95 {
        return format!("{secs:.1}s");
    }
    let whole = secs.round() as u64;
    if whole < 3600 {
        format!("{}m{:02}s", whole / 60, whole % 60)
    } else {
        let minutes = whole / 60;
        format!("{}h{:02}", minutes / 60, minutes % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes() {
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(12), "12 B");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }

    #[test]
    fn durations_in_one_format() {
        assert_eq!(human_duration(0.42), "0.4s");
        assert_eq!(human_duration(59.94), "59.9s");
        assert_eq!(human_duration(59.96), "1m00s");
        assert_eq!(human_duration(245.0), "4m05s");
        assert_eq!(human_duration(3600.0), "1h00");
        assert_eq!(human_duration(25.0 * 3600.0 + 59.0), "25h00");
        assert_eq!(human_duration(25.0 * 3600.0 + 60.0), "25h01");
        assert_eq!(human_duration(f64::NAN), "?");
    }
}

//! RFC 3339 timestamps without a calendar crate: civil-from-days
//! (Howard Hinnant's algorithm), UTC only, as Kubernetes prints them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `(year, month, day)` for days since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let m = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn split(t: SystemTime) -> (i64, u32) {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (
            i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            d.subsec_nanos(),
        ),
        Err(e) => {
            let d = e.duration();
            let secs = -i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            if d.subsec_nanos() == 0 {
                (secs, 0)
            } else {
                (secs - 1, 1_000_000_000 - d.subsec_nanos())
            }
        }
    }
}

fn format(t: SystemTime, nanos: bool) -> String {
    let (secs, ns) = split(t);
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    let (h, mi, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    if nanos {
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ns:09}Z")
    } else {
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
    }
}

/// `2024-05-01T12:00:00Z`, the precision of Kubernetes' `metav1.Time`.
/// CLOCK_MONOTONIC in nanoseconds: the clock `Instant` reads on Linux,
/// shared by every process of the host (so a deadline can be handed to
/// another process).
pub fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| {
            u64::try_from(t.tv_sec()).unwrap_or(0) * 1_000_000_000
                + u64::try_from(t.tv_nsec()).unwrap_or(0)
        })
        .unwrap_or(0)
}

/// On a grid of `period` whose next point is `behind` in the past: how far
/// past that point the first one still to come lies (whole periods, at
/// least one). The ticker rule of the prober and of the shim's repeated
/// execs: the ticks missed meanwhile are dropped.
pub fn grid_step_past(behind: Duration, period: Duration) -> Duration {
    let periods = behind.as_nanos() / period.as_nanos().max(1) + 1;
    period.saturating_mul(u32::try_from(periods).unwrap_or(u32::MAX))
}

/// `at` as CLOCK_MONOTONIC nanoseconds.
pub fn instant_to_monotonic(at: std::time::Instant) -> u64 {
    let now = std::time::Instant::now();
    let base = monotonic_ns();
    if at >= now {
        base.saturating_add(u64::try_from((at - now).as_nanos()).unwrap_or(u64::MAX))
    } else {
        base.saturating_sub(u64::try_from((now - at).as_nanos()).unwrap_or(u64::MAX))
    }
}

/// CLOCK_MONOTONIC nanoseconds as an `Instant` of this process.
pub fn monotonic_to_instant(ns: u64) -> std::time::Instant {
    let now = std::time::Instant::now();
    let base = monotonic_ns();
    if ns >= base {
        now + Duration::from_nanos(ns - base)
    } else {
        now.checked_sub(Duration::from_nanos(base - ns))
            .unwrap_or(now)
    }
}

pub fn rfc3339(t: SystemTime) -> String {
    format(t, false)
}

/// `2024-05-01T12:00:00.123456789Z`, as CRI log lines carry.
pub fn rfc3339_nano(t: SystemTime) -> String {
    format(t, true)
}

/// A Go-style duration as kubelet prints it in events: `1.234s`, `2m40s`, `5m0s`.
pub fn go_duration(d: Duration) -> String {
    let total = d.as_secs_f64();
    if total < 60.0 {
        let ms = d.as_millis();
        if ms < 1000 {
            return format!("{ms}ms");
        }
        let s = format!("{total:.3}");
        return format!("{}s", s.trim_end_matches('0').trim_end_matches('.'));
    }
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else {
        format!("{m}m{s}s")
    }
}

/// Parses a Go `time.ParseDuration` string as KubeletConfiguration fields
/// take them: `2m`, `1h30m`, `500ms`, `1.5s`, `0s`, `0`. Negative
/// durations are refused.
pub fn parse_go_duration(s: &str) -> Result<Duration, String> {
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let bad = || {
        format!("invalid duration {s:?}: want a number with a unit (ns, us, ms, s, m, h), e.g. 2m or 1m30s")
    };
    let mut rest = s;
    let mut total = 0f64;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let value: f64 = rest[..num_end].parse().map_err(|_| bad())?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += value * scale;
        rest = &rest[unit_end..];
    }
    Duration::try_from_secs_f64(total).map_err(|_| bad())
}

/// Parses an RFC 3339 timestamp (any precision, any offset).
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let ts = s.parse::<k8s_openapi::jiff::Timestamp>().ok()?;
    let secs = u64::try_from(ts.as_second()).ok()?;
    let nanos = u32::try_from(ts.subsec_nanosecond()).ok()?;
    Some(UNIX_EPOCH + Duration::new(secs, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse_like_time_parse_duration() {
        let ok = |s: &str| parse_go_duration(s).unwrap();
        assert_eq!(ok("2m"), Duration::from_secs(120));
        assert_eq!(ok("1h30m"), Duration::from_secs(5400));
        assert_eq!(ok("1m30.5s"), Duration::from_millis(90_500));
        assert_eq!(ok("500ms"), Duration::from_millis(500));
        assert_eq!(ok("0s"), Duration::ZERO);
        assert_eq!(ok("0"), Duration::ZERO);
        for bad in ["", "5", "-1s", "2x", "m", "1.2.3s"] {
            assert!(parse_go_duration(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + Duration::new(1_714_564_800, 123_456_789);
        assert_eq!(rfc3339(t), "2024-05-01T12:00:00Z");
        assert_eq!(rfc3339_nano(t), "2024-05-01T12:00:00.123456789Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
    }

    #[test]
    fn durations_print_like_go() {
        assert_eq!(go_duration(Duration::from_millis(1234)), "1.234s");
        assert_eq!(go_duration(Duration::from_secs(160)), "2m40s");
        assert_eq!(go_duration(Duration::from_secs(300)), "5m0s");
        assert_eq!(go_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(go_duration(Duration::from_secs(10)), "10s");
    }
}

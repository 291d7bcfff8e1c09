//! Image garbage collection, after kubelet's realImageGCManager
//! (`k8s:pkg/kubelet/images/image_gc_manager.go`): when the filesystem
//! holding the image store is used at or above `imageGCHighThresholdPercent`,
//! free `capacity × (100 − low)/100 − available` bytes by removing images
//! no live pod uses, least recently used first, never one first seen less
//! than `imageMinimumGCAge` ago.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, SystemTime};

/// Size and free space of a filesystem, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsUsage {
    pub capacity: u64,
    pub available: u64,
}

impl FsUsage {
    /// kubelet's `usagePercent := 100 - int(available*100/capacity)`.
    pub fn used_percent(&self) -> u64 {
        if self.capacity == 0 {
            return 0;
        }
        let free = u128::from(self.available.min(self.capacity)) * 100 / u128::from(self.capacity);
        100 - u64::try_from(free).unwrap_or(100)
    }
}

pub fn fs_usage(path: &Path) -> std::io::Result<FsUsage> {
    let st = nix::sys::statvfs::statvfs(path).map_err(std::io::Error::from)?;
    let frsize = st.fragment_size();
    Ok(FsUsage {
        capacity: st.blocks() * frsize,
        available: st.blocks_available() * frsize,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub high_percent: u8,
    pub low_percent: u8,
    pub min_age: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    first_detected: SystemTime,
    last_used: SystemTime,
}

/// When each stored image was first seen and last used by a live pod
/// (kubelet keeps the same records in memory; a restart starts afresh, so
/// nothing is collected within `imageMinimumGCAge` of one).
#[derive(Debug, Default)]
pub struct Tracker {
    seen: BTreeMap<String, Seen>,
}

/// What one collection decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Bytes to free; 0 when usage is under the high threshold.
    pub to_free: u64,
    /// Images to remove, in order, with their sizes.
    pub remove: Vec<(String, u64)>,
}

impl Plan {
    pub fn freed(&self) -> u64 {
        self.remove.iter().map(|(_, s)| s).sum()
    }
}

impl Tracker {
    /// Records the images stored now and those in use; forgets removed ones.
    pub fn observe(
        &mut self,
        stored: &[(String, u64)],
        in_use: &BTreeSet<String>,
        now: SystemTime,
    ) {
        let names: BTreeSet<&String> = stored.iter().map(|(n, _)| n).collect();
        self.seen.retain(|n, _| names.contains(n));
        for (name, _) in stored {
            let s = self.seen.entry(name.clone()).or_insert(Seen {
                first_detected: now,
                last_used: now,
            });
            if in_use.contains(name) {
                s.last_used = now;
            }
        }
    }

    /// The images to remove to bring `usage` under the low threshold.
    pub fn plan(
        &self,
        policy: Policy,
        usage: FsUsage,
        stored: &[(String, u64)],
        in_use: &BTreeSet<String>,
        now: SystemTime,
    ) -> Plan {
        if usage.used_percent() < u64::from(policy.high_percent) {
            return Plan {
                to_free: 0,
                remove: Vec::new(),
            };
        }
        let target = u128::from(usage.capacity) * u128::from(100 - policy.low_percent) / 100;
        let to_free =
            u64::try_from(target.saturating_sub(u128::from(usage.available))).unwrap_or(u64::MAX);
        let mut candidates: Vec<(&String, u64, Seen)> = stored
            .iter()
            .filter(|(n, _)| !in_use.contains(n))
            .filter_map(|(n, size)| self.seen.get(n).map(|s| (n, *size, *s)))
            .filter(|(_, _, s)| {
                now.duration_since(s.first_detected).unwrap_or_default() >= policy.min_age
            })
            .collect();
        // Least recently used first; ties by first detection, then name.
        candidates.sort_by(|a, b| {
            (a.2.last_used, a.2.first_detected, a.0).cmp(&(b.2.last_used, b.2.first_detected, b.0))
        });
        let mut remove = Vec::new();
        let mut freed = 0u64;
        for (name, size, _) in candidates {
            if freed >= to_free {
                break;
            }
            freed = freed.saturating_add(size);
            remove.push((name.clone(), size));
        }
        Plan { to_free, remove }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Policy = Policy {
        high_percent: 85,
        low_percent: 80,
        min_age: Duration::from_secs(120),
    };

    fn t(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + s)
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn usage_percent_rounds_like_kubelet() {
        let u = |c, a| {
            FsUsage {
                capacity: c,
                available: a,
            }
            .used_percent()
        };
        assert_eq!(u(1000, 150), 85);
        assert_eq!(u(1000, 151), 85, "available 15.1 % → int(15) → 85 % used");
        assert_eq!(u(1000, 160), 84);
        assert_eq!(u(0, 0), 0);
    }

    #[test]
    fn least_recently_used_images_go_first_until_under_the_low_threshold() {
        let stored: Vec<(String, u64)> = [("old", 30), ("mid", 30), ("new", 30), ("busy", 500)]
            .iter()
            .map(|(n, s)| (n.to_string(), *s))
            .collect();
        let mut tr = Tracker::default();
        // All first seen at t0; "mid" used at t100, "new" at t200, "busy" always.
        tr.observe(&stored, &set(&["mid", "new", "busy"]), t(0));
        tr.observe(&stored, &set(&["mid", "new", "busy"]), t(100));
        tr.observe(&stored, &set(&["new", "busy"]), t(200));
        let now = t(300);
        let in_use = set(&["busy"]);

        // 84 % used: nothing to do.
        let under = FsUsage {
            capacity: 1000,
            available: 160,
        };
        assert_eq!(tr.plan(POLICY, under, &stored, &in_use, now).remove, []);

        // 90 % used: free 1000·20 % − 100 = 100 bytes → old, mid, new (90
        // is not enough after two); never the one in use.
        let over = FsUsage {
            capacity: 1000,
            available: 100,
        };
        let p = tr.plan(POLICY, over, &stored, &in_use, now);
        assert_eq!(p.to_free, 100);
        let names: Vec<&str> = p.remove.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["old", "mid", "new"]);
        assert_eq!(p.freed(), 90, "all there was to free, short of the target");

        // 86 %: 60 bytes → the two least recently used.
        let p = tr.plan(
            POLICY,
            FsUsage {
                capacity: 1000,
                available: 140,
            },
            &stored,
            &in_use,
            now,
        );
        let names: Vec<&str> = p.remove.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["old", "mid"]);

        // Too young to collect: first seen less than imageMinimumGCAge ago.
        assert_eq!(tr.plan(POLICY, over, &stored, &in_use, t(60)).remove, []);

        // A removed image is forgotten; one seen again starts young.
        let fewer = &stored[1..];
        tr.observe(fewer, &in_use, t(400));
        tr.observe(&stored, &in_use, t(410));
        let p = tr.plan(POLICY, over, &stored, &in_use, t(420));
        assert!(!p.remove.iter().any(|(n, _)| n == "old"), "{p:?}");
    }
}

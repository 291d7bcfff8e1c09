//! Resource usage in the shape of kubelet's Summary API
//! (`k8s.io/kubelet/pkg/apis/stats/v1alpha1`): the node from `/proc`, each
//! pod and container from its cgroup. CPU rates (`usageNanoCores`) come
//! from the previous sample of the same cgroup, as cAdvisor's do; the
//! first look at a cgroup has none.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Instant, SystemTime};

use k8s_openapi::api::core::v1::Pod;
use serde::{Deserialize, Serialize};

use crate::runtime::api::{Runtime, Stats};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CpuStats {
    pub time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_nano_cores: Option<u64>,
    pub usage_core_nano_seconds: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemoryStats {
    pub time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_bytes: Option<u64>,
    pub usage_bytes: u64,
    pub working_set_bytes: u64,
    pub rss_bytes: u64,
    pub page_faults: u64,
    pub major_page_faults: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStats {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    pub cpu: CpuStats,
    pub memory: MemoryStats,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodReference {
    pub name: String,
    pub namespace: String,
    pub uid: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessStats {
    pub process_count: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStats {
    pub pod_ref: PodReference,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    pub containers: Vec<ContainerStats>,
    pub cpu: CpuStats,
    pub memory: MemoryStats,
    /// kubelet spells this one in snake case.
    #[serde(rename = "process_stats")]
    pub process_stats: ProcessStats,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStats {
    pub node_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    pub cpu: CpuStats,
    pub memory: MemoryStats,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub node: NodeStats,
    pub pods: Vec<PodStats>,
}

/// The last CPU sample per cgroup (or the node), for rates.
#[derive(Debug, Default)]
pub struct Sampler {
    last: Mutex<HashMap<String, (Instant, u64)>>,
}

/// Samples closer than this give no rate (too noisy).
const MIN_RATE_WINDOW_MS: u128 = 100;

impl Sampler {
    /// `usageNanoCores` of `key` from its previous sample; remembers this one.
    fn rate(&self, key: &str, usage_ns: u64) -> Option<u64> {
        let now = Instant::now();
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let prev = last.get(key).copied();
        match prev {
            Some((at, _)) if now.duration_since(at).as_millis() < MIN_RATE_WINDOW_MS => None,
            Some((at, before)) => {
                last.insert(key.to_string(), (now, usage_ns));
                let dt = now.duration_since(at).as_nanos();
                let used = u128::from(usage_ns.saturating_sub(before));
                u64::try_from(used * 1_000_000_000 / dt.max(1)).ok()
            }
            None => {
                last.insert(key.to_string(), (now, usage_ns));
                None
            }
        }
    }

    /// Forgets cgroups not in `keep` (pods gone).
    fn retain(&self, keep: &std::collections::HashSet<String>) {
        self.last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|k, _| keep.contains(k));
    }

    fn cpu(&self, key: &str, s: &Stats, at: &str) -> CpuStats {
        CpuStats {
            time: at.to_string(),
            usage_nano_cores: self.rate(key, s.cpu_usage_ns),
            usage_core_nano_seconds: s.cpu_usage_ns,
        }
    }
}

fn memory(s: &Stats, at: &str) -> MemoryStats {
    MemoryStats {
        time: at.to_string(),
        available_bytes: None,
        usage_bytes: s.memory_usage,
        working_set_bytes: s.memory_working_set,
        rss_bytes: s.memory_rss,
        page_faults: s.page_faults,
        major_page_faults: s.major_page_faults,
    }
}

/// The node's usage from `/proc/stat` and `/proc/meminfo`.
fn node_stats() -> (Stats, Option<u64>) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    // user nice system idle iowait irq softirq steal, in USER_HZ (100).
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let busy: u64 = ticks
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .take(8)
        .map(|(_, v)| *v)
        .sum();
    let mem = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let kb = |key: &str| {
        mem.lines()
            .find(|l| l.starts_with(key) && l[key.len()..].starts_with(':'))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(0, |v| v * 1024)
    };
    let usage = kb("MemTotal").saturating_sub(kb("MemFree"));
    (
        Stats {
            cpu_usage_ns: busy * 10_000_000,
            memory_usage: usage,
            memory_working_set: usage.saturating_sub(kb("Inactive(file)")),
            memory_rss: kb("AnonPages"),
            ..Stats::default()
        },
        Some(kb("MemAvailable")),
    )
}

/// An API time as the API prints it.
fn api_time(t: &Time) -> String {
    serde_json::to_value(t)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// The `containerID` of a status, without its scheme.
fn runtime_id(id: Option<&String>) -> Option<String> {
    id.and_then(|i| i.split_once("://").map(|(_, r)| r.to_string()))
}

/// A Summary of the node and `pods` (their running containers).
pub async fn summary<R: Runtime>(
    runtime: &R,
    sampler: &Sampler,
    node_name: &str,
    pods: &[Pod],
) -> Summary {
    let now = crate::time::rfc3339(SystemTime::now());
    let (ns, available) = node_stats();
    let mut node_memory = memory(&ns, &now);
    node_memory.available_bytes = available;
    let mut keep = std::collections::HashSet::from(["node".to_string()]);
    let mut out = Summary {
        node: NodeStats {
            node_name: node_name.to_string(),
            start_time: None,
            cpu: sampler.cpu("node", &ns, &now),
            memory: node_memory,
        },
        pods: Vec::new(),
    };
    for pod in pods {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let Some(ps) = runtime.sandbox_stats(&uid).await else {
            continue;
        };
        keep.insert(uid.clone());
        let status = pod.status.clone().unwrap_or_default();
        let mut containers = Vec::new();
        for c in status
            .init_container_statuses
            .iter()
            .flatten()
            .chain(status.container_statuses.iter().flatten())
        {
            let running = c.state.as_ref().and_then(|s| s.running.as_ref());
            let (Some(run), Some(id)) = (running, runtime_id(c.container_id.as_ref())) else {
                continue;
            };
            let Some(cs) = runtime.container_stats(&uid, &id).await else {
                continue;
            };
            keep.insert(id.clone());
            containers.push(ContainerStats {
                name: c.name.clone(),
                start_time: run.started_at.as_ref().map(api_time),
                cpu: sampler.cpu(&id, &cs, &now),
                memory: memory(&cs, &now),
            });
        }
        out.pods.push(PodStats {
            pod_ref: PodReference {
                name: pod.metadata.name.clone().unwrap_or_default(),
                namespace: pod.metadata.namespace.clone().unwrap_or_default(),
                uid: uid.clone(),
            },
            start_time: status.start_time.as_ref().map(api_time),
            containers,
            cpu: sampler.cpu(&uid, &ps, &now),
            memory: memory(&ps, &now),
            process_stats: ProcessStats {
                process_count: ps.pids,
            },
        });
    }
    sampler.retain(&keep);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_come_from_the_previous_sample() {
        let s = Sampler::default();
        assert_eq!(s.rate("c", 1_000), None);
        // Too soon for a rate; the first sample stays.
        assert_eq!(s.rate("c", 2_000), None);
        std::thread::sleep(std::time::Duration::from_millis(200));
        let r = s.rate("c", 1_000 + 100_000_000).unwrap();
        // 0.1 s of CPU in ~0.2 s: about half a core.
        assert!((300_000_000..=520_000_000).contains(&r), "{r}");
        s.retain(&std::collections::HashSet::new());
        assert_eq!(s.rate("c", 5), None);
    }

    #[test]
    fn the_summary_uses_kubelets_field_names() {
        let p = PodStats {
            pod_ref: PodReference {
                name: "p".into(),
                namespace: "default".into(),
                uid: "u".into(),
            },
            ..PodStats::default()
        };
        let v = serde_json::to_value(&p).unwrap();
        assert!(v["podRef"]["uid"] == "u");
        assert!(v["process_stats"]["process_count"] == 0);
        assert!(v["cpu"]["usageCoreNanoSeconds"] == 0);
        assert!(v["memory"]["workingSetBytes"] == 0);
        assert!(v["cpu"].get("usageNanoCores").is_none());
    }

    #[test]
    fn the_node_reads_proc() {
        let (s, avail) = node_stats();
        assert!(s.cpu_usage_ns > 0 && s.memory_usage > 0);
        assert!(avail.is_some_and(|a| a > 0));
    }
}

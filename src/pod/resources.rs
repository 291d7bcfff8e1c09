//! From a pod's `resources` to cgroups, as kubelet's cgroupfs driver does:
//! the QoS hierarchy (`<root>/kubepods[/burstable|/besteffort]/pod<uid>`),
//! the pod cgroup's limits (`k8s:pkg/kubelet/cm/helpers_linux.go
//! ResourceConfigForPod`), each container's (`kuberuntime_container_linux.go
//! generateLinuxContainerResources`) and its `oom_score_adj`
//! (`k8s:pkg/kubelet/qos/policy.go GetContainerOOMScoreAdjust`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as ApiQuantity;

use super::qos::qos_class;
use super::state::{is_sidecar, spec};
use crate::quantity::Quantity;
use crate::runtime::cgroup::Resources;

/// kubelet's CFS period, µs (`quotaPeriod`).
pub const CPU_PERIOD_US: u64 = 100_000;
const MIN_SHARES: u64 = 2;
const MAX_SHARES: u64 = 262_144;
const SHARES_PER_CPU: i128 = 1024;
/// The kernel refuses a quota below 1 ms.
const MIN_QUOTA_US: i64 = 1000;
const GUARANTEED_OOM_SCORE_ADJ: i32 = -997;
const BESTEFFORT_OOM_SCORE_ADJ: i32 = 1000;

/// Where a node's pod cgroups go and what every pod cgroup gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupLayout {
    /// `cgroupRoot`, e.g. `/nodelet`.
    pub root: String,
    /// `podPidsLimit`; -1 = unlimited.
    pub pod_pids_limit: i64,
}

impl CgroupLayout {
    pub fn kubepods(&self) -> String {
        format!("{}/kubepods", self.root.trim_end_matches('/'))
    }

    /// The QoS-level cgroup a pod of class `qos` lives under.
    pub fn qos_parent(&self, qos: &str) -> String {
        match qos {
            "Guaranteed" => self.kubepods(),
            other => format!("{}/{}", self.kubepods(), other.to_lowercase()),
        }
    }

    /// The cgroups to ensure for a pod, parents first, its own last: the
    /// QoS levels (BestEffort's with the minimum cpu shares, as kubelet's
    /// QoS manager) and the pod's with [`pod_resources`].
    pub fn pod_cgroups(&self, pod: &Pod, uid: &str) -> Vec<(String, Resources)> {
        let qos = qos_class(pod);
        let mut out = vec![(self.kubepods(), Resources::default())];
        match qos {
            "BestEffort" => out.push((
                self.qos_parent(qos),
                Resources {
                    cpu_shares: Some(MIN_SHARES),
                    ..Resources::default()
                },
            )),
            "Burstable" => out.push((self.qos_parent(qos), Resources::default())),
            _ => {}
        }
        let mut res = pod_resources(pod);
        if self.pod_pids_limit > 0 {
            res.pids_limit = Some(self.pod_pids_limit);
        }
        out.push((format!("{}/pod{uid}", self.qos_parent(qos)), res));
        out
    }
}

/// `resources.<list>[name]` of `c`, parsed; none when absent or zero.
fn quantity(c: &Container, limits: bool, name: &str) -> Option<Quantity> {
    let r = c.resources.as_ref()?;
    let list: &Option<BTreeMap<String, ApiQuantity>> = if limits { &r.limits } else { &r.requests };
    list.as_ref()?
        .get(name)
        .and_then(|q| Quantity::parse(&q.0).ok())
        .filter(|q| !q.is_zero())
}

/// `MilliCPUToShares`.
pub fn milli_cpu_to_shares(milli: i128) -> u64 {
    if milli <= 0 {
        return MIN_SHARES;
    }
    let shares = milli * SHARES_PER_CPU / 1000;
    u64::try_from(shares)
        .unwrap_or(MAX_SHARES)
        .clamp(MIN_SHARES, MAX_SHARES)
}

/// `MilliCPUToQuota`: none for no limit.
pub fn milli_cpu_to_quota(milli: i128) -> Option<i64> {
    if milli <= 0 {
        return None;
    }
    let quota = milli * i128::from(CPU_PERIOD_US) / 1000;
    Some(i64::try_from(quota).unwrap_or(i64::MAX).max(MIN_QUOTA_US))
}

/// A container's own cgroup limits.
pub fn container_resources(c: &Container) -> Resources {
    let cpu_req = quantity(c, false, "cpu").map(Quantity::milli_ceil);
    let cpu_lim = quantity(c, true, "cpu").map(Quantity::milli_ceil);
    // With no request the limit stands in (the API server defaults it so).
    let shares = milli_cpu_to_shares(cpu_req.or(cpu_lim).unwrap_or(0));
    let quota = cpu_lim.and_then(milli_cpu_to_quota);
    Resources {
        cpu_shares: Some(shares),
        cpu_quota: quota,
        cpu_period: quota.map(|_| CPU_PERIOD_US),
        memory_limit: quantity(c, true, "memory")
            .map(|q| i64::try_from(q.value_ceil()).unwrap_or(i64::MAX)),
        pids_limit: None,
        devices: None,
    }
}

/// The pod's effective request (or limit) of `name`, as `PodRequests`:
/// the larger of the app containers plus sidecars, and each init
/// container plus the sidecars started before it.
fn pod_total(pod: &Pod, limits: bool, name: &str, value: fn(Quantity) -> i128) -> i128 {
    let s = spec(pod);
    let get = |c: &Container| quantity(c, limits, name).map_or(0, value);
    let mut sidecars = 0;
    let mut init_max = 0;
    for c in s.init_containers.iter().flatten() {
        if is_sidecar(c) {
            sidecars += get(c);
            init_max = init_max.max(sidecars);
        } else {
            init_max = init_max.max(sidecars + get(c));
        }
    }
    let apps: i128 = s.containers.iter().map(get).sum::<i128>() + sidecars;
    apps.max(init_max)
}

/// Every container (init ones too) limits `name`.
fn all_limit(pod: &Pod, name: &str) -> bool {
    let s = spec(pod);
    s.containers
        .iter()
        .chain(s.init_containers.iter().flatten())
        .all(|c| quantity(c, true, name).is_some())
}

/// The pod cgroup's limits (`ResourceConfigForPod`): cpu shares from the
/// requests; quota and memory limit only when every container sets that
/// limit (always for Guaranteed); BestEffort gets the minimum shares.
pub fn pod_resources(pod: &Pod) -> Resources {
    let qos = qos_class(pod);
    if qos == "BestEffort" {
        return Resources {
            cpu_shares: Some(MIN_SHARES),
            ..Resources::default()
        };
    }
    let cpu_req = pod_total(pod, false, "cpu", Quantity::milli_ceil);
    let cpu_lim = pod_total(pod, true, "cpu", Quantity::milli_ceil);
    let mem_lim = pod_total(pod, true, "memory", Quantity::value_ceil);
    let mut r = Resources {
        cpu_shares: Some(milli_cpu_to_shares(cpu_req)),
        ..Resources::default()
    };
    if qos == "Guaranteed" || all_limit(pod, "cpu") {
        r.cpu_quota = milli_cpu_to_quota(cpu_lim);
        r.cpu_period = r.cpu_quota.map(|_| CPU_PERIOD_US);
    }
    if qos == "Guaranteed" || all_limit(pod, "memory") {
        r.memory_limit = i64::try_from(mem_lim).ok().filter(|m| *m > 0);
    }
    r
}

/// kubelet's `IsCriticalPod`: static pods and those with a priority of
/// at least system-cluster-critical's 2,000,000,000.
pub fn is_critical(pod: &Pod) -> bool {
    super::config_source(pod) != "api" || spec(pod).priority.is_some_and(|p| p >= 2_000_000_000)
}

/// `GetContainerOOMScoreAdjust`: critical (static) and Guaranteed pods
/// -997, BestEffort 1000, Burstable from the share of node memory the
/// container requests, kept within [3, 999].
pub fn oom_score_adj(pod: &Pod, c: &Container, memory_capacity: i128, critical: bool) -> i32 {
    if critical {
        return GUARANTEED_OOM_SCORE_ADJ;
    }
    match qos_class(pod) {
        "Guaranteed" => return GUARANTEED_OOM_SCORE_ADJ,
        "BestEffort" => return BESTEFFORT_OOM_SCORE_ADJ,
        _ => {}
    }
    let request = quantity(c, false, "memory").map_or(0, Quantity::value_ceil);
    let adj = 1000 - (1000 * request) / memory_capacity.max(1);
    let adj = i32::try_from(adj).unwrap_or(0);
    if adj < 1000 + GUARANTEED_OOM_SCORE_ADJ {
        1000 + GUARANTEED_OOM_SCORE_ADJ
    } else if adj == BESTEFFORT_OOM_SCORE_ADJ {
        adj - 1
    } else {
        adj
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(containers: &str, init: &str) -> Pod {
        let text = format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec:\n  containers:\n{containers}{}",
            if init.is_empty() {
                String::new()
            } else {
                format!("  initContainers:\n{init}")
            }
        );
        let mut p: Pod = serde_norway::from_str(&text).unwrap();
        // As loaded: requests default to limits.
        crate::manifest::defaults::apply(&mut p);
        p
    }

    fn c(name: &str, res: &str) -> String {
        format!("  - {{name: {name}, image: i, resources: {res}}}\n")
    }

    #[test]
    fn shares_and_quota_follow_kubelets_conversions() {
        assert_eq!(milli_cpu_to_shares(0), 2);
        assert_eq!(milli_cpu_to_shares(1), 2);
        assert_eq!(milli_cpu_to_shares(100), 102);
        assert_eq!(milli_cpu_to_shares(1000), 1024);
        assert_eq!(milli_cpu_to_shares(1_000_000), 262_144);
        assert_eq!(milli_cpu_to_quota(0), None);
        assert_eq!(milli_cpu_to_quota(250), Some(25_000));
        assert_eq!(milli_cpu_to_quota(5), Some(1000));
    }

    #[test]
    fn a_container_gets_its_request_as_shares_and_its_limits() {
        let p = pod(
            &c(
                "a",
                "{requests: {cpu: 250m}, limits: {cpu: 500m, memory: 64Mi}}",
            ),
            "",
        );
        let r = container_resources(&spec(&p).containers[0]);
        assert_eq!(
            r,
            Resources {
                cpu_shares: Some(256),
                cpu_quota: Some(50_000),
                cpu_period: Some(100_000),
                memory_limit: Some(64 << 20),
                pids_limit: None,
                devices: None,
            }
        );
        let none = pod(&c("a", "{}"), "");
        assert_eq!(
            container_resources(&spec(&none).containers[0]),
            Resources {
                cpu_shares: Some(2),
                ..Resources::default()
            }
        );
    }

    #[test]
    fn the_pod_cgroup_sums_its_containers_and_takes_the_larger_init() {
        let both = "{requests: {cpu: 100m, memory: 10Mi}, limits: {cpu: 200m, memory: 20Mi}}";
        let p = pod(
            &format!("{}{}", c("a", both), c("b", both)),
            &c("init", "{limits: {cpu: \"1\", memory: 30Mi}}"),
        );
        let r = pod_resources(&p);
        // Requests: max(100m + 100m, 1000m (init: request = limit)).
        assert_eq!(r.cpu_shares, Some(1024));
        assert_eq!(r.cpu_quota, Some(100_000));
        assert_eq!(r.memory_limit, Some(40 << 20));
    }

    #[test]
    fn burstable_pods_get_a_limit_only_when_every_container_sets_it() {
        let p = pod(
            &format!(
                "{}{}",
                c("a", "{limits: {memory: 20Mi}}"),
                c("b", "{requests: {cpu: 100m}}")
            ),
            "",
        );
        let r = pod_resources(&p);
        assert_eq!(r.memory_limit, None);
        assert_eq!(r.cpu_quota, None);
        assert_eq!(r.cpu_shares, Some(102));
    }

    #[test]
    fn qos_classes_pick_the_parent_cgroup_and_the_oom_score() {
        let layout = CgroupLayout {
            root: "/nodelet".into(),
            pod_pids_limit: 1024,
        };
        let g = pod(&c("a", "{limits: {cpu: 100m, memory: 1Gi}}"), "");
        let b = pod(&c("a", "{requests: {memory: 1Gi}}"), "");
        let e = pod(&c("a", "{}"), "");
        let paths = |p: &Pod| {
            layout
                .pod_cgroups(p, "u1")
                .into_iter()
                .map(|(p, _)| p)
                .collect::<Vec<_>>()
        };
        assert_eq!(paths(&g), ["/nodelet/kubepods", "/nodelet/kubepods/podu1"]);
        assert_eq!(
            paths(&b),
            [
                "/nodelet/kubepods",
                "/nodelet/kubepods/burstable",
                "/nodelet/kubepods/burstable/podu1"
            ]
        );
        let be = layout.pod_cgroups(&e, "u1");
        assert_eq!(be[1].0, "/nodelet/kubepods/besteffort");
        assert_eq!(be[1].1.cpu_shares, Some(2));
        assert_eq!(be[2].1.pids_limit, Some(1024));
        let cap = 4i128 << 30;
        let first = |p: &Pod| spec(p).containers[0].clone();
        assert_eq!(oom_score_adj(&g, &first(&g), cap, false), -997);
        assert_eq!(oom_score_adj(&e, &first(&e), cap, false), 1000);
        assert_eq!(oom_score_adj(&e, &first(&e), cap, true), -997);
        // 1 GiB of 4 GiB: 1000 - 250.
        assert_eq!(oom_score_adj(&b, &first(&b), cap, false), 750);
        // Requesting (nearly) everything still leaves Guaranteed below.
        assert_eq!(oom_score_adj(&b, &first(&b), 1 << 30, false), 3);
        let tiny = pod(&c("a", "{requests: {memory: \"1\"}}"), "");
        assert_eq!(oom_score_adj(&tiny, &first(&tiny), cap, false), 999);
    }
}

//! Prometheus metrics under kubelet's names: the prober's counters and
//! durations (kept process-wide, as kubelet's are) and, per scrape, the
//! resource metrics of `/metrics/resource` from a stats Summary.

use std::sync::atomic::AtomicU64;
use std::sync::OnceLock;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::pod::stats::Summary;

type Labels = Vec<(String, String)>;

/// Who a probe belongs to.
#[derive(Debug, Clone, Default)]
pub struct ProbeOwner {
    pub container: String,
    pub pod: String,
    pub namespace: String,
    pub pod_uid: String,
}

struct Probes {
    total: Family<Labels, Counter>,
    duration: Family<Labels, Histogram>,
}

fn probes() -> &'static Probes {
    static P: OnceLock<Probes> = OnceLock::new();
    P.get_or_init(|| Probes {
        total: Family::default(),
        duration: Family::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 14))
        }),
    })
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

/// One probe run: `prober_probe_total{probe_type,result,…}` (result
/// `successful`, `failed` or `unknown`) and its duration.
pub fn record_probe(kind: &str, result: &str, owner: &ProbeOwner, seconds: f64) {
    let p = probes();
    p.total
        .get_or_create(&labels(&[
            ("probe_type", kind),
            ("result", result),
            ("container", &owner.container),
            ("pod", &owner.pod),
            ("namespace", &owner.namespace),
            ("pod_uid", &owner.pod_uid),
        ]))
        .inc();
    p.duration
        .get_or_create(&labels(&[
            ("probe_type", kind),
            ("container", &owner.container),
            ("pod", &owner.pod),
            ("namespace", &owner.namespace),
        ]))
        .observe(seconds);
}

fn gauge() -> Family<Labels, Gauge<f64, AtomicU64>> {
    Family::default()
}

fn counter() -> Family<Labels, Counter<f64, AtomicU64>> {
    Family::default()
}

/// The Prometheus text of the prober metrics and, from `summary`, the
/// resource metrics (`container_cpu_usage_seconds_total`,
/// `container_memory_working_set_bytes`, `pod_…`, `node_…`).
pub fn render(summary: &Summary) -> String {
    let mut reg = Registry::default();
    let p = probes();
    reg.register(
        "prober_probe",
        "Cumulative number of a liveness, readiness or startup probe for a container by result",
        p.total.clone(),
    );
    reg.register(
        "prober_probe_duration_seconds",
        "Duration in seconds for a probe response",
        p.duration.clone(),
    );
    let (c_cpu, c_mem, c_start) = (counter(), gauge(), gauge());
    let (p_cpu, p_mem) = (counter(), gauge());
    let (n_cpu, n_mem) = (counter(), gauge());
    let secs = |ns: u64| ns as f64 / 1e9;
    // kubelet gives the node series no labels.
    let node: &[(&str, &str)] = &[];
    n_cpu
        .get_or_create(&labels(node))
        .inc_by(secs(summary.node.cpu.usage_core_nano_seconds));
    n_mem
        .get_or_create(&labels(node))
        .set(summary.node.memory.working_set_bytes as f64);
    for pod in &summary.pods {
        let r = &pod.pod_ref;
        let pl = labels(&[("pod", &r.name), ("namespace", &r.namespace)]);
        p_cpu
            .get_or_create(&pl)
            .inc_by(secs(pod.cpu.usage_core_nano_seconds));
        p_mem
            .get_or_create(&pl)
            .set(pod.memory.working_set_bytes as f64);
        for c in &pod.containers {
            let cl = labels(&[
                ("container", &c.name),
                ("pod", &r.name),
                ("namespace", &r.namespace),
            ]);
            c_cpu
                .get_or_create(&cl)
                .inc_by(secs(c.cpu.usage_core_nano_seconds));
            c_mem
                .get_or_create(&cl)
                .set(c.memory.working_set_bytes as f64);
            if let Some(t) = c.start_time.as_deref().and_then(crate::time::parse_rfc3339) {
                let since = t
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs_f64();
                c_start.get_or_create(&cl).set(since);
            }
        }
    }
    reg.register(
        "container_cpu_usage_seconds",
        "Cumulative cpu time consumed by the container in core-seconds",
        c_cpu,
    );
    reg.register(
        "container_memory_working_set_bytes",
        "Current working set of the container in bytes",
        c_mem,
    );
    reg.register(
        "container_start_time_seconds",
        "Start time of the container since unix epoch in seconds",
        c_start,
    );
    reg.register(
        "pod_cpu_usage_seconds",
        "Cumulative cpu time consumed by the pod in core-seconds",
        p_cpu,
    );
    reg.register(
        "pod_memory_working_set_bytes",
        "Current working set of the pod in bytes",
        p_mem,
    );
    reg.register(
        "node_cpu_usage_seconds",
        "Cumulative cpu time consumed by the node in core-seconds",
        n_cpu,
    );
    reg.register(
        "node_memory_working_set_bytes",
        "Current working set of the node in bytes",
        n_mem,
    );
    let mut out = String::new();
    let _ = encode(&mut out, &reg);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod::stats::{ContainerStats, PodReference, PodStats};

    #[test]
    fn resource_and_prober_metrics_carry_kubelets_names_and_labels() {
        let owner = ProbeOwner {
            container: "app".into(),
            pod: "metrics-test".into(),
            namespace: "default".into(),
            pod_uid: "u".into(),
        };
        record_probe("Readiness", "successful", &owner, 0.004);
        record_probe("Readiness", "successful", &owner, 0.004);
        let mut s = Summary::default();
        s.node.node_name = "n1".into();
        let mut pod = PodStats {
            pod_ref: PodReference {
                name: "web".into(),
                namespace: "default".into(),
                uid: "u".into(),
            },
            ..PodStats::default()
        };
        let mut c = ContainerStats {
            name: "app".into(),
            ..ContainerStats::default()
        };
        c.cpu.usage_core_nano_seconds = 1_500_000_000;
        c.memory.working_set_bytes = 4096;
        pod.containers.push(c);
        s.pods.push(pod);
        let text = render(&s);
        assert!(
            text.contains("# TYPE container_cpu_usage_seconds counter"),
            "{text}"
        );
        assert!(
            text.contains(
                "container_cpu_usage_seconds_total{container=\"app\",pod=\"web\",namespace=\"default\"} 1.5"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "container_memory_working_set_bytes{container=\"app\",pod=\"web\",namespace=\"default\"} 4096.0"
            ),
            "{text}"
        );
        assert!(
            text.contains("prober_probe_total{probe_type=\"Readiness\",result=\"successful\",container=\"app\",pod=\"metrics-test\",namespace=\"default\",pod_uid=\"u\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("prober_probe_duration_seconds_bucket{"),
            "{text}"
        );
        assert!(
            text.contains("\nnode_memory_working_set_bytes 0.0\n"),
            "{text}"
        );
    }
}

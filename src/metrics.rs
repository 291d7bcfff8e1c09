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

/// One probe's series (`prober_probe_total{probe_type,result,…}`, result
/// `successful`, `failed` or `unknown`, and its duration), looked up in
/// the families at their first use and then kept: a probe every second
/// in every pod must not hash and allocate its labels each time. A
/// series appears once it counts something, as kubelet's do.
pub struct ProbeSeries {
    kind: &'static str,
    owner: ProbeOwner,
    totals: Vec<(&'static str, Counter)>,
    duration: Option<Histogram>,
}

impl ProbeSeries {
    pub fn new(kind: &'static str, owner: &ProbeOwner) -> ProbeSeries {
        ProbeSeries {
            kind,
            owner: owner.clone(),
            totals: Vec::new(),
            duration: None,
        }
    }

    /// One probe run.
    pub fn record(&mut self, result: &'static str, seconds: f64) {
        let p = probes();
        let (kind, o) = (self.kind, &self.owner);
        let total = match self.totals.iter().position(|(r, _)| *r == result) {
            Some(i) => &self.totals[i].1,
            None => {
                let c = p
                    .total
                    .get_or_create(&labels(&[
                        ("probe_type", kind),
                        ("result", result),
                        ("container", &o.container),
                        ("pod", &o.pod),
                        ("namespace", &o.namespace),
                        ("pod_uid", &o.pod_uid),
                    ]))
                    .clone();
                self.totals.push((result, c));
                &self.totals[self.totals.len() - 1].1
            }
        };
        total.inc();
        self.duration
            .get_or_insert_with(|| {
                p.duration
                    .get_or_create(&labels(&[
                        ("probe_type", kind),
                        ("container", &o.container),
                        ("pod", &o.pod),
                        ("namespace", &o.namespace),
                    ]))
                    .clone()
            })
            .observe(seconds);
    }
}

/// kubelet's own series, kept process-wide.
struct Kubelet {
    pod_start: Histogram,
    pod_worker: Family<Labels, Histogram>,
    runtime_ops: Family<Labels, Counter>,
    runtime_errors: Family<Labels, Counter>,
    runtime_duration: Family<Labels, Histogram>,
    image_pull: Family<Labels, Histogram>,
    http_fallbacks: Counter,
}

/// kubelet's `metrics.DefBuckets`-like latency buckets, 5 ms … 10 s.
fn latency() -> Histogram {
    Histogram::new([
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ])
}

fn kubelet() -> &'static Kubelet {
    static K: OnceLock<Kubelet> = OnceLock::new();
    K.get_or_init(|| Kubelet {
        // kubelet: 0.5 s … 1 h.
        pod_start: Histogram::new([
            0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 20.0, 30.0, 45.0, 60.0, 120.0, 180.0,
            240.0, 300.0, 360.0, 480.0, 600.0, 900.0, 1200.0, 1800.0, 2700.0, 3600.0,
        ]),
        pod_worker: Family::new_with_constructor(latency),
        runtime_ops: Family::default(),
        runtime_errors: Family::default(),
        runtime_duration: Family::new_with_constructor(latency),
        http_fallbacks: Counter::default(),
        // kubelet: 0.5 s … 20 min.
        image_pull: Family::new_with_constructor(|| {
            Histogram::new([
                0.5, 1.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 180.0, 240.0, 300.0, 600.0, 900.0,
                1200.0,
            ])
        }),
    })
}

/// An HTTPS lifecycle hook that succeeded only over plain HTTP
/// (`kubelet_lifecycle_handler_http_fallbacks_total`).
pub fn record_lifecycle_http_fallback() {
    kubelet().http_fallbacks.inc();
}

/// A pod started: from first seeing it to every container running.
pub fn record_pod_start(seconds: f64) {
    kubelet().pod_start.observe(seconds);
}

/// One pass of a pod worker (`operation_type` create, sync or kill).
pub fn record_pod_worker(operation: &str, seconds: f64) {
    kubelet()
        .pod_worker
        .get_or_create(&labels(&[("operation_type", operation)]))
        .observe(seconds);
}

/// One runtime operation (`create_container`, `exec_sync`, …).
pub fn record_runtime_op(operation: &'static str, ok: bool, seconds: f64) {
    /// An operation's series, looked up once (every probe is an op).
    struct Op {
        name: &'static str,
        total: Counter,
        errors: Option<Counter>,
        duration: Histogram,
    }
    static OPS: OnceLock<std::sync::Mutex<Vec<Op>>> = OnceLock::new();
    let k = kubelet();
    let l = || labels(&[("operation_type", operation)]);
    let mut ops = OPS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let i = match ops.iter().position(|o| o.name == operation) {
        Some(i) => i,
        None => {
            ops.push(Op {
                name: operation,
                total: k.runtime_ops.get_or_create(&l()).clone(),
                errors: None,
                duration: k.runtime_duration.get_or_create(&l()).clone(),
            });
            ops.len() - 1
        }
    };
    let op = &mut ops[i];
    op.total.inc();
    if !ok {
        op.errors
            .get_or_insert_with(|| k.runtime_errors.get_or_create(&l()).clone())
            .inc();
    }
    op.duration.observe(seconds);
}

/// An image pull, labelled with kubelet's size buckets.
pub fn record_image_pull(size: u64, seconds: f64) {
    const MIB: u64 = 1024 * 1024;
    let bucket = match size {
        s if s < 10 * MIB => "0-10MB",
        s if s < 100 * MIB => "10MB-100MB",
        s if s < 500 * MIB => "100MB-500MB",
        s if s < 1024 * MIB => "500MB-1GB",
        s if s < 5 * 1024 * MIB => "1GB-5GB",
        s if s < 10 * 1024 * MIB => "5GB-10GB",
        _ => "10GB+",
    };
    kubelet()
        .image_pull
        .get_or_create(&labels(&[("image_size_in_bytes", bucket)]))
        .observe(seconds);
}

/// Pod and container counts for `kubelet_running_pods` and
/// `kubelet_running_containers{container_state}`.
#[derive(Debug, Clone, Default)]
pub struct Counts {
    pub running_pods: u64,
    /// State (`running`, `exited`, `created`, `unknown`) → containers.
    pub containers: std::collections::BTreeMap<String, u64>,
}

fn register_kubelet(reg: &mut Registry, counts: &Counts) {
    let k = kubelet();
    let pods: Gauge = Gauge::default();
    pods.set(i64::try_from(counts.running_pods).unwrap_or(i64::MAX));
    reg.register(
        "kubelet_running_pods",
        "Number of pods that have a running pod sandbox",
        pods,
    );
    let containers: Family<Labels, Gauge> = Family::default();
    for (state, n) in &counts.containers {
        containers
            .get_or_create(&labels(&[("container_state", state)]))
            .set(i64::try_from(*n).unwrap_or(i64::MAX));
    }
    reg.register(
        "kubelet_running_containers",
        "Number of containers currently running",
        containers,
    );
    reg.register(
        "kubelet_pod_start_duration_seconds",
        "Duration in seconds from kubelet seeing a pod for the first time to the pod starting to run",
        k.pod_start.clone(),
    );
    reg.register(
        "kubelet_pod_worker_duration_seconds",
        "Duration in seconds to sync a single pod. Broken down by operation type: create, update, or sync",
        k.pod_worker.clone(),
    );
    reg.register(
        "kubelet_runtime_operations",
        "Cumulative number of runtime operations by operation type",
        k.runtime_ops.clone(),
    );
    reg.register(
        "kubelet_runtime_operations_errors",
        "Cumulative number of runtime operation errors by operation type",
        k.runtime_errors.clone(),
    );
    reg.register(
        "kubelet_runtime_operations_duration_seconds",
        "Duration in seconds of runtime operations. Broken down by operation type",
        k.runtime_duration.clone(),
    );
    reg.register(
        "kubelet_image_pull_duration_seconds",
        "Duration in seconds to pull an image",
        k.image_pull.clone(),
    );
    reg.register(
        "kubelet_lifecycle_handler_http_fallbacks",
        "The number of times lifecycle handlers successfully fell back to http from https",
        k.http_fallbacks.clone(),
    );
}

/// `process_*` series of this process, from /proc/self.
fn register_process(reg: &mut Registry) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command (which may hold spaces) in parentheses.
    let rest: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    let field = |n: usize| {
        rest.get(n - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let ticks = crate::sys::clock_ticks().max(1) as f64;
    let page = crate::sys::page_size() as f64;
    let cpu: Counter<f64, AtomicU64> = Counter::default();
    cpu.inc_by((field(14) + field(15)) as f64 / ticks);
    reg.register(
        "process_cpu_seconds",
        "Total user and system CPU time spent in seconds",
        cpu,
    );
    let rss: Gauge<f64, AtomicU64> = Gauge::default();
    rss.set(field(24) as f64 * page);
    reg.register(
        "process_resident_memory_bytes",
        "Resident memory size in bytes",
        rss,
    );
    let fds: Gauge = Gauge::default();
    fds.set(
        std::fs::read_dir("/proc/self/fd")
            .map(|d| i64::try_from(d.count()).unwrap_or(0))
            .unwrap_or(0),
    );
    reg.register("process_open_fds", "Number of open file descriptors", fds);
    let boot = crate::sys::boot_time_seconds();
    let start: Gauge<f64, AtomicU64> = Gauge::default();
    start.set(boot as f64 + field(22) as f64 / ticks);
    reg.register(
        "process_start_time_seconds",
        "Start time of the process since unix epoch in seconds",
        start,
    );
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
pub fn render(summary: &Summary, counts: &Counts) -> String {
    let mut reg = Registry::default();
    register_kubelet(&mut reg, counts);
    register_process(&mut reg);
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
        let mut series = ProbeSeries::new("Readiness", &owner);
        series.record("successful", 0.004);
        series.record("successful", 0.004);
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
        record_runtime_op("create_container", true, 0.002);
        record_runtime_op("create_container", false, 0.003);
        record_image_pull(2 << 20, 0.7);
        let counts = Counts {
            running_pods: 1,
            containers: [("running".to_string(), 2)].into_iter().collect(),
        };
        let text = render(&s, &counts);
        for want in [
            "kubelet_running_pods 1\n",
            "kubelet_running_containers{container_state=\"running\"} 2\n",
            "kubelet_runtime_operations_total{operation_type=\"create_container\"} ",
            "kubelet_runtime_operations_errors_total{operation_type=\"create_container\"} ",
            "kubelet_image_pull_duration_seconds_bucket{le=\"1.0\",image_size_in_bytes=\"0-10MB\"} ",
            "\nprocess_resident_memory_bytes ",
            "\nprocess_start_time_seconds ",
        ] {
            assert!(text.contains(want), "{want:?} missing:\n{text}");
        }
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

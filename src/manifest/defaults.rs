//! Defaulting exactly as the API server applies it before a kubelet sees a
//! pod: `k8s:pkg/apis/core/v1/defaults.go` (`SetDefaults_Pod`,
//! `SetDefaults_PodSpec`, `SetDefaults_Container`, `SetDefaults_Probe`, …).
//! Every default lives here and nowhere else.

use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, HTTPGetAction, LifecycleHandler, Pod, PodSecurityContext,
    PodSpec, Probe, Volume,
};

use crate::image::reference::defaulting_tag;

pub const DEFAULT_NAMESPACE: &str = "default";
pub const DEFAULT_RESTART_POLICY: &str = "Always";
pub const DEFAULT_DNS_POLICY: &str = "ClusterFirst";
pub const DEFAULT_SCHEDULER_NAME: &str = "default-scheduler";
pub const DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS: i64 = 30;
pub const DEFAULT_TERMINATION_MESSAGE_PATH: &str = "/dev/termination-log";
pub const DEFAULT_TERMINATION_MESSAGE_POLICY: &str = "File";
pub const DEFAULT_PROTOCOL: &str = "TCP";
/// 0644, the default mode of configMap, secret, downwardAPI and projected files.
pub const DEFAULT_VOLUME_MODE: i32 = 0o644;
pub const PROBE_DEFAULT_TIMEOUT_SECONDS: i32 = 1;
pub const PROBE_DEFAULT_PERIOD_SECONDS: i32 = 10;
pub const PROBE_DEFAULT_SUCCESS_THRESHOLD: i32 = 1;
pub const PROBE_DEFAULT_FAILURE_THRESHOLD: i32 = 3;

/// Applies every API-server default to `pod` in place.
pub fn apply(pod: &mut Pod) {
    let meta = &mut pod.metadata;
    if meta.namespace.as_deref().unwrap_or_default().is_empty() {
        meta.namespace = Some(DEFAULT_NAMESPACE.to_string());
    }
    // Status is owned by the node; the API server drops it on create.
    pod.status = None;
    let spec = pod.spec.get_or_insert_with(PodSpec::default);
    pod_spec(spec);
}

fn set_str(field: &mut Option<String>, value: &str) {
    if field.as_deref().unwrap_or_default().is_empty() {
        *field = Some(value.to_string());
    }
}

fn pod_spec(spec: &mut PodSpec) {
    set_str(&mut spec.dns_policy, DEFAULT_DNS_POLICY);
    set_str(&mut spec.restart_policy, DEFAULT_RESTART_POLICY);
    set_str(&mut spec.scheduler_name, DEFAULT_SCHEDULER_NAME);
    spec.security_context
        .get_or_insert_with(PodSecurityContext::default);
    spec.enable_service_links.get_or_insert(true);
    match spec.termination_grace_period_seconds {
        None => {
            spec.termination_grace_period_seconds = Some(DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS)
        }
        // The API server accepts a negative grace period for compatibility and
        // treats it as 1 s (kubernetes#98866); we store what it would act on.
        Some(g) if g < 0 => spec.termination_grace_period_seconds = Some(1),
        Some(_) => {}
    }
    let host_network = spec.host_network.unwrap_or(false);
    for c in spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten())
    {
        container(c, host_network);
    }
    for v in spec.volumes.iter_mut().flatten() {
        volume(v);
    }
}

fn container(c: &mut Container, host_network: bool) {
    if c.image_pull_policy
        .as_deref()
        .unwrap_or_default()
        .is_empty()
    {
        // SetDefaults_Container: `latest` (explicit, or implied by no tag and
        // no digest) pulls Always; anything else IfNotPresent.
        let tag = defaulting_tag(c.image.as_deref().unwrap_or_default());
        let policy = if tag.as_deref() == Some("latest") {
            "Always"
        } else {
            "IfNotPresent"
        };
        c.image_pull_policy = Some(policy.to_string());
    }
    set_str(
        &mut c.termination_message_path,
        DEFAULT_TERMINATION_MESSAGE_PATH,
    );
    set_str(
        &mut c.termination_message_policy,
        DEFAULT_TERMINATION_MESSAGE_POLICY,
    );
    for p in c.ports.iter_mut().flatten() {
        set_str(&mut p.protocol, DEFAULT_PROTOCOL);
        // SetDefaults_PodSpec: with hostNetwork the host port is the container port.
        if host_network && p.host_port.unwrap_or(0) == 0 {
            p.host_port = Some(p.container_port);
        }
    }
    for e in c.env.iter_mut().flatten() {
        if let Some(f) = e.value_from.as_mut().and_then(|v| v.field_ref.as_mut()) {
            set_str(&mut f.api_version, "v1");
        }
    }
    // SetDefaults_Pod: a limit without a request sets the request.
    if let Some(res) = c.resources.as_mut() {
        if let Some(limits) = &res.limits {
            let requests = res.requests.get_or_insert_with(Default::default);
            for (k, v) in limits {
                requests.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
    }
    for p in [
        &mut c.liveness_probe,
        &mut c.readiness_probe,
        &mut c.startup_probe,
    ]
    .into_iter()
    .flatten()
    {
        probe(p);
    }
    if let Some(l) = c.lifecycle.as_mut() {
        for h in [&mut l.post_start, &mut l.pre_stop].into_iter().flatten() {
            handler(h);
        }
    }
}

fn probe(p: &mut Probe) {
    let zero_to = |f: &mut Option<i32>, v: i32| {
        if f.unwrap_or(0) == 0 {
            *f = Some(v);
        }
    };
    zero_to(&mut p.timeout_seconds, PROBE_DEFAULT_TIMEOUT_SECONDS);
    zero_to(&mut p.period_seconds, PROBE_DEFAULT_PERIOD_SECONDS);
    zero_to(&mut p.success_threshold, PROBE_DEFAULT_SUCCESS_THRESHOLD);
    zero_to(&mut p.failure_threshold, PROBE_DEFAULT_FAILURE_THRESHOLD);
    p.initial_delay_seconds.get_or_insert(0);
    if let Some(h) = p.http_get.as_mut() {
        http_get(h);
    }
    if let Some(g) = p.grpc.as_mut() {
        // GRPCAction.service is *string defaulted to "" (SetDefaults_GRPCAction).
        g.service.get_or_insert_with(String::new);
    }
}

fn handler(h: &mut LifecycleHandler) {
    if let Some(g) = h.http_get.as_mut() {
        http_get(g);
    }
}

fn http_get(h: &mut HTTPGetAction) {
    set_str(&mut h.path, "/");
    set_str(&mut h.scheme, "HTTP");
}

fn volume(v: &mut Volume) {
    // SetDefaults_Volume: a volume with no source is an emptyDir.
    let probe = serde_json::to_value(&*v).unwrap_or_default();
    let sources = probe
        .as_object()
        .map_or(0, |m| m.keys().filter(|k| k.as_str() != "name").count());
    if sources == 0 {
        v.empty_dir = Some(EmptyDirVolumeSource::default());
    }
    if let Some(s) = v.config_map.as_mut() {
        s.default_mode.get_or_insert(DEFAULT_VOLUME_MODE);
    }
    if let Some(s) = v.secret.as_mut() {
        s.default_mode.get_or_insert(DEFAULT_VOLUME_MODE);
    }
    if let Some(s) = v.downward_api.as_mut() {
        s.default_mode.get_or_insert(DEFAULT_VOLUME_MODE);
        for item in s.items.iter_mut().flatten() {
            if let Some(f) = item.field_ref.as_mut() {
                set_str(&mut f.api_version, "v1");
            }
        }
    }
    if let Some(s) = v.projected.as_mut() {
        s.default_mode.get_or_insert(DEFAULT_VOLUME_MODE);
    }
    if let Some(h) = v.host_path.as_mut() {
        // HostPathUnset is the empty string.
        h.type_.get_or_insert_with(String::new);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    fn pod(yaml: &str) -> Pod {
        let mut p: Pod = serde_norway::from_str(yaml).unwrap();
        apply(&mut p);
        p
    }

    const BASE: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec:\n  containers:\n  - name: app\n    image: busybox:1.36\n";

    fn spec(p: &Pod) -> &PodSpec {
        p.spec.as_ref().unwrap()
    }

    #[test]
    fn namespace_defaults_to_default() {
        assert_eq!(pod(BASE).metadata.namespace.as_deref(), Some("default"));
    }

    #[test]
    fn restart_policy_defaults_to_always() {
        assert_eq!(spec(&pod(BASE)).restart_policy.as_deref(), Some("Always"));
    }

    #[test]
    fn termination_grace_period_defaults_to_30() {
        assert_eq!(spec(&pod(BASE)).termination_grace_period_seconds, Some(30));
    }

    #[test]
    fn negative_termination_grace_period_becomes_1() {
        let p = pod(&format!("{BASE}  terminationGracePeriodSeconds: -5\n"));
        assert_eq!(spec(&p).termination_grace_period_seconds, Some(1));
    }

    #[test]
    fn zero_termination_grace_period_is_kept() {
        let p = pod(&format!("{BASE}  terminationGracePeriodSeconds: 0\n"));
        assert_eq!(spec(&p).termination_grace_period_seconds, Some(0));
    }

    #[test]
    fn dns_policy_defaults_to_cluster_first() {
        assert_eq!(spec(&pod(BASE)).dns_policy.as_deref(), Some("ClusterFirst"));
    }

    #[test]
    fn scheduler_name_and_service_links_default() {
        let p = pod(BASE);
        assert_eq!(
            spec(&p).scheduler_name.as_deref(),
            Some("default-scheduler")
        );
        assert_eq!(spec(&p).enable_service_links, Some(true));
        assert!(spec(&p).security_context.is_some());
    }

    #[test]
    fn image_pull_policy_follows_the_tag() {
        let cases = [
            ("busybox", "Always"),
            ("busybox:latest", "Always"),
            ("busybox:1.36", "IfNotPresent"),
            ("127.0.0.1:5000/busybox", "Always"),
            (
                "busybox@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                "IfNotPresent",
            ),
        ];
        for (image, want) in cases {
            let p = pod(&BASE.replace("busybox:1.36", image));
            assert_eq!(
                spec(&p).containers[0].image_pull_policy.as_deref(),
                Some(want),
                "{image}"
            );
        }
    }

    #[test]
    fn explicit_image_pull_policy_is_kept() {
        let p = pod(&format!("{BASE}    imagePullPolicy: Never\n"));
        assert_eq!(
            spec(&p).containers[0].image_pull_policy.as_deref(),
            Some("Never")
        );
    }

    #[test]
    fn termination_message_path_and_policy_default() {
        let p = pod(BASE);
        let c = &spec(&p).containers[0];
        assert_eq!(
            c.termination_message_path.as_deref(),
            Some("/dev/termination-log")
        );
        assert_eq!(c.termination_message_policy.as_deref(), Some("File"));
    }

    #[test]
    fn port_protocol_defaults_to_tcp() {
        let p = pod(&format!("{BASE}    ports: [{{containerPort: 80}}]\n"));
        assert_eq!(
            spec(&p).containers[0].ports.as_ref().unwrap()[0]
                .protocol
                .as_deref(),
            Some("TCP")
        );
    }

    #[test]
    fn host_network_copies_container_port_to_host_port() {
        let p = pod(&format!(
            "{BASE}    ports: [{{containerPort: 80}}]\n  hostNetwork: true\n"
        ));
        assert_eq!(
            spec(&p).containers[0].ports.as_ref().unwrap()[0].host_port,
            Some(80)
        );
    }

    #[test]
    fn probe_defaults_are_10_1_1_3() {
        let p = pod(&format!(
            "{BASE}    livenessProbe: {{httpGet: {{port: 80}}}}\n"
        ));
        let pr = spec(&p).containers[0].liveness_probe.as_ref().unwrap();
        assert_eq!(
            (
                pr.period_seconds,
                pr.timeout_seconds,
                pr.success_threshold,
                pr.failure_threshold,
                pr.initial_delay_seconds
            ),
            (Some(10), Some(1), Some(1), Some(3), Some(0))
        );
        let h = pr.http_get.as_ref().unwrap();
        assert_eq!(
            (h.path.as_deref(), h.scheme.as_deref()),
            (Some("/"), Some("HTTP"))
        );
    }

    #[test]
    fn zero_probe_fields_are_defaulted_like_unset_ones() {
        let p = pod(&format!("{BASE}    readinessProbe: {{tcpSocket: {{port: 80}}, periodSeconds: 0, failureThreshold: 7}}\n"));
        let pr = spec(&p).containers[0].readiness_probe.as_ref().unwrap();
        assert_eq!(
            (pr.period_seconds, pr.failure_threshold),
            (Some(10), Some(7))
        );
    }

    #[test]
    fn grpc_service_defaults_to_empty() {
        let p = pod(&format!(
            "{BASE}    startupProbe: {{grpc: {{port: 9000}}}}\n"
        ));
        let g = spec(&p).containers[0]
            .startup_probe
            .as_ref()
            .unwrap()
            .grpc
            .as_ref()
            .unwrap();
        assert_eq!(g.service.as_deref(), Some(""));
    }

    #[test]
    fn lifecycle_http_get_defaults_path_and_scheme() {
        let p = pod(&format!(
            "{BASE}    lifecycle: {{preStop: {{httpGet: {{port: 80}}}}}}\n"
        ));
        let h = spec(&p).containers[0]
            .lifecycle
            .as_ref()
            .unwrap()
            .pre_stop
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        assert_eq!(
            (h.path.as_deref(), h.scheme.as_deref()),
            (Some("/"), Some("HTTP"))
        );
    }

    #[test]
    fn field_ref_api_version_defaults_to_v1() {
        let p = pod(&format!(
            "{BASE}    env: [{{name: N, valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}}}]\n"
        ));
        let f = spec(&p).containers[0].env.as_ref().unwrap()[0]
            .value_from
            .as_ref()
            .unwrap()
            .field_ref
            .as_ref()
            .unwrap();
        assert_eq!(f.api_version.as_deref(), Some("v1"));
    }

    #[test]
    fn limits_without_requests_become_requests() {
        let p = pod(&format!("{BASE}    resources: {{limits: {{cpu: 500m, memory: 64Mi}}, requests: {{cpu: 100m}}}}\n"));
        let req = spec(&p).containers[0]
            .resources
            .as_ref()
            .unwrap()
            .requests
            .as_ref()
            .unwrap();
        assert_eq!(req.get("cpu"), Some(&Quantity("100m".into())));
        assert_eq!(req.get("memory"), Some(&Quantity("64Mi".into())));
    }

    #[test]
    fn init_containers_get_container_defaults() {
        let p = pod(&format!(
            "{BASE}  initContainers:\n  - name: init\n    image: busybox\n"
        ));
        let c = &spec(&p).init_containers.as_ref().unwrap()[0];
        assert_eq!(c.image_pull_policy.as_deref(), Some("Always"));
        assert_eq!(c.termination_message_policy.as_deref(), Some("File"));
    }

    #[test]
    fn a_volume_without_a_source_is_an_empty_dir() {
        let p = pod(&format!("{BASE}  volumes: [{{name: scratch}}]\n"));
        assert!(spec(&p).volumes.as_ref().unwrap()[0].empty_dir.is_some());
    }

    #[test]
    fn config_map_secret_and_downward_api_modes_default_to_0644() {
        let p = pod(&format!(
            "{BASE}  volumes: [{{name: a, configMap: {{name: c}}}}, {{name: b, secret: {{secretName: s}}}}, {{name: d, downwardAPI: {{}}}}]\n"
        ));
        let v = spec(&p).volumes.as_ref().unwrap();
        assert_eq!(v[0].config_map.as_ref().unwrap().default_mode, Some(0o644));
        assert_eq!(v[1].secret.as_ref().unwrap().default_mode, Some(0o644));
        assert_eq!(
            v[2].downward_api.as_ref().unwrap().default_mode,
            Some(0o644)
        );
    }

    #[test]
    fn host_path_type_defaults_to_unset() {
        let p = pod(&format!(
            "{BASE}  volumes: [{{name: h, hostPath: {{path: /tmp}}}}]\n"
        ));
        assert_eq!(
            spec(&p).volumes.as_ref().unwrap()[0]
                .host_path
                .as_ref()
                .unwrap()
                .type_
                .as_deref(),
            Some("")
        );
    }

    #[test]
    fn status_in_a_manifest_is_dropped() {
        let p = pod(&format!("{BASE}status: {{phase: Running}}\n"));
        assert!(p.status.is_none());
    }
}

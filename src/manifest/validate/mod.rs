//! Pod validation like the API server's `ValidatePodCreate`
//! (`k8s:pkg/apis/core/validation/validation.go`), for the fields nodelet
//! reads. It runs on a defaulted pod (as the API server validates after
//! defaulting) and returns every error at once.

mod container;
pub mod names;
pub mod objects;
mod probe;
mod volume;

use std::collections::{BTreeMap, HashSet};

use k8s_openapi::api::core::v1::{Pod, PodSecurityContext, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::field::{self, invalid, not_supported, required, too_long, ErrorList, Path};

/// apimachinery `TotalAnnotationSizeLimitB`.
const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 256 * 1024;
const RESTART_POLICIES: &[&str] = &["Always", "OnFailure", "Never"];
const DNS_POLICIES: &[&str] = &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"];
const MAX_INT32: i64 = i32::MAX as i64;

/// Validates a defaulted pod; an empty list means valid.
pub fn validate_pod(pod: &Pod) -> ErrorList {
    let mut errs = object_meta(&pod.metadata, &Path::new("metadata"));
    let spec_path = Path::new("spec");
    match &pod.spec {
        Some(spec) => errs.extend(pod_spec(spec, &spec_path)),
        None => errs.push(required(&spec_path, "")),
    }
    errs
}

fn push_msgs(errs: &mut ErrorList, path: &Path, value: &str, msgs: Vec<String>) {
    errs.extend(msgs.into_iter().map(|m| invalid(path, value, &m)));
}

fn object_meta(meta: &ObjectMeta, path: &Path) -> ErrorList {
    let mut errs = ErrorList::new();
    let name = meta.name.as_deref().unwrap_or_default();
    if name.is_empty() {
        // generateName needs an API server to allocate the suffix.
        errs.push(required(
            &path.child("name"),
            "name or generateName is required",
        ));
    } else {
        push_msgs(
            &mut errs,
            &path.child("name"),
            name,
            names::dns1123_subdomain(name),
        );
    }
    let ns = meta.namespace.as_deref().unwrap_or_default();
    if ns.is_empty() {
        errs.push(required(&path.child("namespace"), ""));
    } else {
        push_msgs(
            &mut errs,
            &path.child("namespace"),
            ns,
            names::dns1123_label(ns),
        );
    }
    if let Some(labels) = &meta.labels {
        errs.extend(labels_errors(labels, &path.child("labels")));
    }
    if let Some(annotations) = &meta.annotations {
        let p = path.child("annotations");
        let mut total = 0;
        for (k, v) in annotations {
            push_msgs(&mut errs, &p, k, names::qualified_name(&k.to_lowercase()));
            total += k.len() + v.len();
        }
        if total > TOTAL_ANNOTATION_SIZE_LIMIT {
            errs.push(too_long(&p, TOTAL_ANNOTATION_SIZE_LIMIT));
        }
    }
    errs
}

/// `ValidateLabels`: keys are qualified names, values label values; both
/// reported at the map's path, as apimachinery does.
fn labels_errors(labels: &BTreeMap<String, String>, path: &Path) -> ErrorList {
    let mut errs = ErrorList::new();
    for (k, v) in labels {
        push_msgs(&mut errs, path, k, names::qualified_name(k));
        push_msgs(&mut errs, path, v, names::label_value(v));
    }
    errs
}

fn pod_spec(spec: &PodSpec, path: &Path) -> ErrorList {
    let mut errs = ErrorList::new();
    let (volumes, vol_errs) = volume::volumes(
        spec.volumes.as_deref().unwrap_or_default(),
        &path.child("volumes"),
    );
    errs.extend(vol_errs);
    let ctx = container::Context {
        volumes: &volumes,
        grace_period: spec.termination_grace_period_seconds,
        host_network: spec.host_network.unwrap_or(false),
        user_namespace: spec.host_users == Some(false),
    };
    errs.extend(container::containers(
        &spec.containers,
        &ctx,
        &path.child("containers"),
    ));
    errs.extend(container::init_containers(
        spec.init_containers.as_deref().unwrap_or_default(),
        &spec.containers,
        &ctx,
        &path.child("initContainers"),
    ));

    let restart = spec.restart_policy.as_deref().unwrap_or_default();
    if restart.is_empty() {
        errs.push(required(&path.child("restartPolicy"), ""));
    } else if !RESTART_POLICIES.contains(&restart) {
        errs.push(not_supported(
            &path.child("restartPolicy"),
            restart,
            RESTART_POLICIES,
        ));
    }
    let dns = spec.dns_policy.as_deref().unwrap_or_default();
    if dns.is_empty() {
        errs.push(required(&path.child("dnsPolicy"), ""));
    } else if !DNS_POLICIES.contains(&dns) {
        errs.push(not_supported(&path.child("dnsPolicy"), dns, DNS_POLICIES));
    } else if dns == "None" && spec.dns_config.is_none() {
        errs.push(required(
            &path.child("dnsConfig"),
            "must provide `dnsConfig` when `dnsPolicy` is None",
        ));
    }
    if let Some(a) = spec.active_deadline_seconds {
        if !(1..=MAX_INT32).contains(&a) {
            errs.push(invalid(
                &path.child("activeDeadlineSeconds"),
                a,
                &range_msg(1, MAX_INT32),
            ));
        }
    }
    for (key, value) in [("hostname", &spec.hostname), ("subdomain", &spec.subdomain)] {
        if let Some(v) = value.as_deref().filter(|v| !v.is_empty()) {
            push_msgs(&mut errs, &path.child(key), v, names::dns1123_label(v));
        }
    }
    if let Some(sc) = &spec.security_context {
        errs.extend(pod_security_context(sc, &path.child("securityContext")));
    }
    for (i, gate) in spec.readiness_gates.iter().flatten().enumerate() {
        let p = path.child("readinessGates").index(i).child("conditionType");
        push_msgs(
            &mut errs,
            &p,
            &gate.condition_type,
            names::qualified_name(&gate.condition_type),
        );
    }
    if let Some(os) = &spec.os {
        if !["linux", "windows"].contains(&os.name.as_str()) {
            errs.push(not_supported(
                &path.child("os").child("name"),
                &os.name,
                &["linux", "windows"],
            ));
        }
    }
    errs
}

pub(crate) fn range_msg(lo: i64, hi: i64) -> String {
    format!("must be between {lo} and {hi}, inclusive")
}

/// `IsValidUserID` / `IsValidGroupID`.
pub(crate) fn id_errors(errs: &mut ErrorList, path: &Path, id: Option<i64>) {
    if let Some(id) = id {
        if !(0..=MAX_INT32).contains(&id) {
            errs.push(invalid(path, id, &range_msg(0, MAX_INT32)));
        }
    }
}

fn pod_security_context(sc: &PodSecurityContext, path: &Path) -> ErrorList {
    let mut errs = ErrorList::new();
    id_errors(&mut errs, &path.child("runAsUser"), sc.run_as_user);
    id_errors(&mut errs, &path.child("runAsGroup"), sc.run_as_group);
    id_errors(&mut errs, &path.child("fsGroup"), sc.fs_group);
    for (i, g) in sc.supplemental_groups.iter().flatten().enumerate() {
        id_errors(
            &mut errs,
            &path.child("supplementalGroups").index(i),
            Some(*g),
        );
    }
    if let Some(p) = sc.fs_group_change_policy.as_deref() {
        let allowed = ["OnRootMismatch", "Always"];
        if !allowed.contains(&p) {
            errs.push(not_supported(
                &path.child("fsGroupChangePolicy"),
                p,
                &allowed,
            ));
        }
    }
    if let Some(p) = sc.supplemental_groups_policy.as_deref() {
        let allowed = ["Merge", "Strict"];
        if !allowed.contains(&p) {
            errs.push(not_supported(
                &path.child("supplementalGroupsPolicy"),
                p,
                &allowed,
            ));
        }
    }
    if let Some(sp) = &sc.seccomp_profile {
        errs.extend(container::seccomp_profile(
            sp,
            &path.child("seccompProfile"),
        ));
    }
    let mut seen = HashSet::new();
    for (i, s) in sc.sysctls.iter().flatten().enumerate() {
        let p = path.child("sysctls").index(i);
        if s.name.is_empty() {
            errs.push(required(&p.child("name"), ""));
        } else if !is_sysctl_name(&s.name) {
            errs.push(invalid(&p.child("name"), &s.name, "must have at most 253 characters and match regex ^([a-z0-9]([-_a-z0-9]*[a-z0-9])?[\\./])*[a-z0-9]([-_a-z0-9]*[a-z0-9])?$"));
        } else if !seen.insert(s.name.replace('/', ".")) {
            errs.push(field::duplicate(&p.child("name"), &s.name));
        }
    }
    errs
}

/// `IsValidSysctlName`: dot- or slash-separated segments of `[a-z0-9]([-_a-z0-9]*[a-z0-9])?`.
fn is_sysctl_name(name: &str) -> bool {
    name.len() <= 253
        && name.split(['.', '/']).all(|seg| {
            let b = seg.as_bytes();
            let edge = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
            matches!((b.first(), b.last()), (Some(&f), Some(&l)) if edge(f) && edge(l))
                && b.iter().all(|&c| edge(c) || c == b'-' || c == b'_')
        })
}

#[cfg(test)]
mod tests;

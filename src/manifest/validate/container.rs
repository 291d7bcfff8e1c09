//! `validateContainers` / `validateInitContainers` and what they call:
//! names, image, ports, env, envFrom, volumeMounts, resources, security
//! context, probes and lifecycle handlers.

use std::collections::HashSet;

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvFromSource, EnvVar, EnvVarSource, ResourceRequirements,
    SecurityContext, VolumeMount,
};

use super::names;
use super::probe;
use super::push_msgs;
use super::volume::{is_subscripted_meta, local_descending_path};
use crate::manifest::field::{
    duplicate, forbidden, invalid, not_found, not_supported, required, ErrorList, Path,
};
use crate::quantity::Quantity;

const PULL_POLICIES: &[&str] = &["Always", "IfNotPresent", "Never"];
const TERMINATION_MESSAGE_POLICIES: &[&str] = &["File", "FallbackToLogsOnError"];
const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];
const MOUNT_PROPAGATIONS: &[&str] = &["Bidirectional", "HostToContainer", "None"];
const RECURSIVE_READ_ONLY: &[&str] = &["Disabled", "Enabled", "IfPossible"];
const PROC_MOUNTS: &[&str] = &["Default", "Unmasked"];
/// `validEnvDownwardAPIFieldPathExpressions` (plus subscripted labels/annotations).
const ENV_FIELD_PATHS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.hostIP",
    "status.hostIPs",
    "status.podIP",
    "status.podIPs",
];
const RESOURCE_FIELD_REFS: &[&str] = &[
    "limits.cpu",
    "limits.ephemeral-storage",
    "limits.memory",
    "requests.cpu",
    "requests.ephemeral-storage",
    "requests.memory",
];
const CPU_DIVISORS: &[&str] = &["1m", "1"];
const MEMORY_DIVISORS: &[&str] = &[
    "1", "1k", "1M", "1G", "1T", "1P", "1E", "1Ki", "1Mi", "1Gi", "1Ti", "1Pi", "1Ei",
];

/// What container validation needs from the pod.
pub(super) struct Context<'a> {
    pub volumes: &'a HashSet<String>,
    pub grace_period: Option<i64>,
    pub host_network: bool,
    /// `spec.hostUsers: false` (the pod asks for a user namespace).
    pub user_namespace: bool,
}

pub(super) fn containers(ctrs: &[Container], ctx: &Context<'_>, path: &Path) -> ErrorList {
    let mut errs = ErrorList::new();
    if ctrs.is_empty() {
        errs.push(required(path, ""));
    }
    let mut seen = HashSet::new();
    for (i, c) in ctrs.iter().enumerate() {
        let p = path.index(i);
        errs.extend(common(c, ctx, &p));
        if !c.name.is_empty() && !seen.insert(c.name.as_str()) {
            errs.push(duplicate(&p.child("name"), &c.name));
        }
        if c.restart_policy.is_some() {
            errs.push(forbidden(
                &p.child("restartPolicy"),
                "may not be set for non-init containers",
            ));
        }
        if c.restart_policy_rules.is_some() {
            errs.push(forbidden(
                &p.child("restartPolicyRules"),
                "may not be set for non-init containers",
            ));
        }
        errs.extend(probes_and_hooks(c, ctx, &p));
    }
    errs
}

pub(super) fn init_containers(
    inits: &[Container],
    apps: &[Container],
    ctx: &Context<'_>,
    path: &Path,
) -> ErrorList {
    let mut errs = ErrorList::new();
    // validateInitContainers seeds the name set with the app containers, so a
    // clash is reported on the init container.
    let mut seen: HashSet<&str> = apps.iter().map(|c| c.name.as_str()).collect();
    for (i, c) in inits.iter().enumerate() {
        let p = path.index(i);
        errs.extend(common(c, ctx, &p));
        if !c.name.is_empty() && !seen.insert(c.name.as_str()) {
            errs.push(duplicate(&p.child("name"), &c.name));
        }
        let sidecar = match c.restart_policy.as_deref() {
            None => false,
            Some("Always") => true,
            Some(other) => {
                errs.push(not_supported(&p.child("restartPolicy"), other, &["Always"]));
                false
            }
        };
        if c.restart_policy_rules.is_some() {
            errs.push(forbidden(
                &p.child("restartPolicyRules"),
                "restartPolicyRules are not supported (ContainerRestartRules is an alpha feature)",
            ));
        }
        if sidecar {
            errs.extend(probes_and_hooks(c, ctx, &p));
        } else {
            // Regular init containers run to completion: no probes, no hooks.
            let msg = "may not be set for init containers without restartPolicy=Always";
            for (set, name) in [
                (c.lifecycle.is_some(), "lifecycle"),
                (c.liveness_probe.is_some(), "livenessProbe"),
                (c.readiness_probe.is_some(), "readinessProbe"),
                (c.startup_probe.is_some(), "startupProbe"),
            ] {
                if set {
                    errs.push(forbidden(&p.child(name), msg));
                }
            }
        }
    }
    errs
}

fn probes_and_hooks(c: &Container, ctx: &Context<'_>, p: &Path) -> ErrorList {
    let mut errs = ErrorList::new();
    let grace = ctx.grace_period;
    if let Some(pr) = &c.liveness_probe {
        errs.extend(probe::probe(pr, &p.child("livenessProbe")));
        errs.extend(probe::success_threshold_is_one(
            pr,
            &p.child("livenessProbe"),
        ));
    }
    if let Some(pr) = &c.startup_probe {
        errs.extend(probe::probe(pr, &p.child("startupProbe")));
        errs.extend(probe::success_threshold_is_one(
            pr,
            &p.child("startupProbe"),
        ));
    }
    if let Some(pr) = &c.readiness_probe {
        let rp = p.child("readinessProbe");
        errs.extend(probe::probe(pr, &rp));
        if let Some(t) = pr.termination_grace_period_seconds {
            errs.push(invalid(
                &rp.child("terminationGracePeriodSeconds"),
                t,
                "must not be set for readinessProbes",
            ));
        }
    }
    if let Some(l) = &c.lifecycle {
        errs.extend(probe::lifecycle(l, grace, &p.child("lifecycle")));
    }
    errs
}

/// `validateContainerCommon`: everything shared by init and app containers.
fn common(c: &Container, ctx: &Context<'_>, p: &Path) -> ErrorList {
    let mut errs = ErrorList::new();
    if c.name.is_empty() {
        errs.push(required(&p.child("name"), ""));
    } else {
        push_msgs(
            &mut errs,
            &p.child("name"),
            &c.name,
            names::dns1123_label(&c.name),
        );
    }
    let image = c.image.as_deref().unwrap_or_default();
    if image.is_empty() {
        errs.push(required(&p.child("image"), ""));
    } else if image.trim() != image {
        errs.push(invalid(
            &p.child("image"),
            image,
            "must not have leading or trailing whitespace",
        ));
    }
    enum_field(
        &mut errs,
        &p.child("imagePullPolicy"),
        c.image_pull_policy.as_deref(),
        PULL_POLICIES,
    );
    enum_field(
        &mut errs,
        &p.child("terminationMessagePolicy"),
        c.termination_message_policy.as_deref(),
        TERMINATION_MESSAGE_POLICIES,
    );
    errs.extend(ports(
        c.ports.as_deref().unwrap_or_default(),
        ctx,
        &p.child("ports"),
    ));
    errs.extend(env(c.env.as_deref().unwrap_or_default(), &p.child("env")));
    errs.extend(env_from(
        c.env_from.as_deref().unwrap_or_default(),
        &p.child("envFrom"),
    ));
    let privileged = c
        .security_context
        .as_ref()
        .and_then(|s| s.privileged)
        .unwrap_or(false);
    errs.extend(volume_mounts(
        c.volume_mounts.as_deref().unwrap_or_default(),
        ctx,
        privileged,
        &p.child("volumeMounts"),
    ));
    if let Some(r) = &c.resources {
        errs.extend(resources(r, &p.child("resources")));
    }
    if let Some(sc) = &c.security_context {
        errs.extend(security_context(sc, ctx, &p.child("securityContext")));
    }
    errs
}

/// A defaulted enum: Required when empty, Unsupported when unknown.
fn enum_field(errs: &mut ErrorList, path: &Path, value: Option<&str>, allowed: &[&str]) {
    match value.unwrap_or_default() {
        "" => errs.push(required(path, "")),
        v if !allowed.contains(&v) => errs.push(not_supported(path, v, allowed)),
        _ => {}
    }
}

fn ports(ports: &[ContainerPort], ctx: &Context<'_>, path: &Path) -> ErrorList {
    let mut errs = ErrorList::new();
    let mut names_seen = HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        let p = path.index(i);
        if let Some(name) = port.name.as_deref().filter(|n| !n.is_empty()) {
            push_msgs(&mut errs, &p.child("name"), name, names::port_name(name));
            if !names_seen.insert(name) {
                errs.push(duplicate(&p.child("name"), name));
            }
        }
        if port.container_port == 0 {
            errs.push(required(&p.child("containerPort"), ""));
        } else {
            for m in names::port_number(port.container_port) {
                errs.push(invalid(&p.child("containerPort"), port.container_port, &m));
            }
        }
        if let Some(hp) = port.host_port.filter(|h| *h != 0) {
            for m in names::port_number(hp) {
                errs.push(invalid(&p.child("hostPort"), hp, &m));
            }
            if ctx.host_network && hp != port.container_port {
                errs.push(invalid(
                    &p.child("hostPort"),
                    hp,
                    "must match `containerPort` when `hostNetwork` is true",
                ));
            }
        }
        enum_field(
            &mut errs,
            &p.child("protocol"),
            port.protocol.as_deref(),
            PROTOCOLS,
        );
    }
    errs
}

fn env(vars: &[EnvVar], path: &Path) -> ErrorList {
    let mut errs = ErrorList::new();
    for (i, ev) in vars.iter().enumerate() {
        let p = path.index(i);
        if ev.name.is_empty() {
            errs.push(required(&p.child("name"), ""));
        } else {
            push_msgs(
                &mut errs,
                &p.child("name"),
                &ev.name,
                names::env_var_name(&ev.name),
            );
        }
        if let Some(from) = &ev.value_from {
            errs.extend(env_value_from(
                from,
                ev.value.as_deref().unwrap_or_default(),
                &p.child("valueFrom"),
            ));
        }
    }
    errs
}

fn env_value_from(from: &EnvVarSource, value: &str, path: &Path) -> ErrorList {
    let mut errs = ErrorList::new();
    let sources = [
        from.field_ref.is_some(),
        from.resource_field_ref.is_some(),
        from.config_map_key_ref.is_some(),
        from.secret_key_ref.is_some(),
        from.file_key_ref.is_some(),
    ]
    .iter()
    .filter(|s| **s)
    .count();
    if let Some(f) = &from.field_ref {
        let fp = path.child("fieldRef");
        if f.api_version.as_deref().unwrap_or_default().is_empty() {
            errs.push(required(&fp.child("apiVersion"), ""));
        } else if f.api_version.as_deref() != Some("v1") {
            errs.push(invalid(
                &fp.child("apiVersion"),
                f.api_version.as_deref().unwrap_or_default(),
                "unsupported version",
            ));
        }
        if f.field_path.is_empty() {
            errs.push(required(&fp.child("fieldPath"), ""));
        } else if !ENV_FIELD_PATHS.contains(&f.field_path.as_str())
            && !is_subscripted_meta(&f.field_path)
        {
            let mut allowed = ENV_FIELD_PATHS.to_vec();
            allowed.extend(["metadata.annotations['<KEY>']", "metadata.labels['<KEY>']"]);
            allowed.sort_unstable();
            errs.push(not_supported(
                &fp.child("fieldPath"),
                &f.field_path,
                &allowed,
            ));
        }
    }
    if let Some(r) = &from.resource_field_ref {
        let rp = path.child("resourceFieldRef");
        if r.resource.is_empty() {
            errs.push(required(&rp.child("resource"), ""));
        } else if !RESOURCE_FIELD_REFS.contains(&r.resource.as_str()) {
            errs.push(not_supported(
                &rp.child("resource"),
                &r.resource,
                RESOURCE_FIELD_REFS,
            ));
        } else if let Some(d) = &r.divisor {
            let (allowed, what) = if r.resource.ends_with("cpu") {
                (
                    CPU_DIVISORS,
                    "only divisor's values 1m and 1 are supported with the cpu resource",
                )
            } else {
                (MEMORY_DIVISORS, "only divisor's values 1, 1k, 1M, 1G, 1T, 1P, 1E, 1Ki, 1Mi, 1Gi, 1Ti, 1Pi, 1Ei are supported with the memory resource")
            };
            let ok = Quantity::parse(&d.0).is_ok_and(|q| {
                allowed
                    .iter()
                    .any(|a| Quantity::parse(a).is_ok_and(|x| x == q))
            });
            if !ok {
                errs.push(invalid(&rp.child("divisor"), &d.0, what));
            }
        }
    }
    for (set, name, key, obj) in [
        (
            from.config_map_key_ref.as_ref().map(|r| (&r.key, &r.name)),
            "configMapKeyRef",
            "key",
            "name",
        ),
        (
            from.secret_key_ref.as_ref().map(|r| (&r.key, &r.name)),
            "secretKeyRef",
            "key",
            "name",
        ),
    ] {
        if let Some((k, n)) = set {
            let kp = path.child(name);
            if k.is_empty() {
                errs.push(required(&kp.child(key), ""));
            } else {
                push_msgs(&mut errs, &kp.child(key), k, names::config_map_key(k));
            }
            if n.is_empty() {
                errs.push(required(&kp.child(obj), ""));
            }
        }
    }
    if sources == 0 {
        errs.push(invalid(path, "", "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`"));
    } else if !value.is_empty() {
        errs.push(invalid(
            path,
            "",
            "may not be specified when `value` is not empty",
        ));
    } else if sources > 1 {
        errs.push(invalid(
            path,
            "",
            "may not have more than one field specified at a time",
        ));
    }
    errs
}

fn env_from(sources: &[EnvFromSource], path: &Path) -> ErrorList {
    let mut errs = ErrorList::new();
    for (i, s) in sources.iter().enumerate() {
        let p = path.index(i);
        if let Some(prefix) = s.prefix.as_deref().filter(|x| !x.is_empty()) {
            push_msgs(
                &mut errs,
                &p.child("prefix"),
                prefix,
                names::env_var_name(prefix),
            );
        }
        match (&s.config_map_ref, &s.secret_ref) {
            (Some(c), None) if c.name.is_empty() => {
                errs.push(required(&p.child("configMapRef").child("name"), ""))
            }
            (None, Some(r)) if r.name.is_empty() => {
                errs.push(required(&p.child("secretRef").child("name"), ""))
            }
            (Some(_), None) | (None, Some(_)) => {}
            (Some(_), Some(_)) => errs.push(invalid(
                &p,
                "",
                "may not have more than one field specified at a time",
            )),
            (None, None) => errs.push(invalid(
                &p,
                "",
                "must specify one of: `configMapRef` or `secretRef`",
            )),
        }
    }
    errs
}

fn volume_mounts(
    mounts: &[VolumeMount],
    ctx: &Context<'_>,
    privileged: bool,
    path: &Path,
) -> ErrorList {
    let mut errs = ErrorList::new();
    let mut mount_points = HashSet::new();
    for (i, m) in mounts.iter().enumerate() {
        let p = path.index(i);
        if m.name.is_empty() {
            errs.push(required(&p.child("name"), ""));
        } else if !ctx.volumes.contains(&m.name) {
            errs.push(not_found(&p.child("name"), &m.name));
        }
        if m.mount_path.is_empty() {
            errs.push(required(&p.child("mountPath"), ""));
        } else if !mount_points.insert(absolute_mount_path(&m.mount_path)) {
            errs.push(invalid(
                &p.child("mountPath"),
                &m.mount_path,
                "must be unique",
            ));
        }
        if let Some(sp) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            local_descending_path(&mut errs, &p.child("subPath"), sp);
            if m.sub_path_expr.as_deref().is_some_and(|e| !e.is_empty()) {
                errs.push(invalid(
                    &p.child("subPathExpr"),
                    m.sub_path_expr.as_deref().unwrap_or_default(),
                    "subPathExpr and subPath are mutually exclusive",
                ));
            }
        }
        if let Some(prop) = m.mount_propagation.as_deref() {
            if !MOUNT_PROPAGATIONS.contains(&prop) {
                errs.push(not_supported(
                    &p.child("mountPropagation"),
                    prop,
                    MOUNT_PROPAGATIONS,
                ));
            } else if prop == "Bidirectional" && !privileged {
                errs.push(forbidden(
                    &p.child("mountPropagation"),
                    "Bidirectional mount propagation is available only to privileged containers",
                ));
            }
        }
        if let Some(rro) = m.recursive_read_only.as_deref() {
            if !RECURSIVE_READ_ONLY.contains(&rro) {
                errs.push(not_supported(
                    &p.child("recursiveReadOnly"),
                    rro,
                    RECURSIVE_READ_ONLY,
                ));
            } else if rro != "Disabled" && !m.read_only.unwrap_or(false) {
                errs.push(forbidden(
                    &p.child("recursiveReadOnly"),
                    "may only be specified when readOnly is true",
                ));
            }
        }
    }
    errs
}

/// The kubelet makes a relative mountPath absolute (`/` + path); the API
/// server accepts it. Two spellings of one path are one mount point.
pub fn absolute_mount_path(p: &str) -> String {
    let joined = if p.starts_with('/') {
        p.to_string()
    } else {
        format!("/{p}")
    };
    let trimmed = joined.trim_end_matches('/');
    if trimmed.is_empty() {
        "/".to_string()
    } else {
        trimmed.to_string()
    }
}

/// `ValidateResourceRequirements` for the resources a node enforces.
fn resources(r: &ResourceRequirements, path: &Path) -> ErrorList {
    let mut errs = ErrorList::new();
    let mut parsed = |map: &Option<
        std::collections::BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
    >,
                      p: Path| {
        let mut out = Vec::new();
        for (name, q) in map.iter().flatten() {
            let qp = p.key(name);
            if !is_resource_name(name) {
                errs.push(invalid(
                    &qp,
                    name,
                    "must be a standard resource type or fully qualified",
                ));
                continue;
            }
            match Quantity::parse(&q.0) {
                Ok(v) if v.is_negative() => {
                    errs.push(invalid(&qp, &q.0, "must be greater than or equal to 0"))
                }
                Ok(v) => out.push((name.clone(), v, q.0.clone())),
                Err(e) => errs.push(invalid(&qp, &q.0, &e.to_string())),
            }
        }
        out
    };
    let limits = parsed(&r.limits, path.child("limits"));
    let requests = parsed(&r.requests, path.child("requests"));
    for (name, req, text) in &requests {
        if let Some((_, lim, lim_text)) = limits.iter().find(|(n, _, _)| n == name) {
            if req > lim {
                errs.push(invalid(
                    &path.child("requests").key(name),
                    text,
                    &format!("must be less than or equal to {name} limit of {lim_text}"),
                ));
            }
        }
    }
    if r.claims.is_some() {
        errs.push(forbidden(&path.child("claims"), "resource claims need dynamic resource allocation, which a single node without an API server does not have"));
    }
    errs
}

fn is_resource_name(n: &str) -> bool {
    matches!(n, "cpu" | "memory" | "ephemeral-storage")
        || n.starts_with("hugepages-")
        || (n.contains('/') && names::qualified_name(n).is_empty())
}

fn security_context(sc: &SecurityContext, ctx: &Context<'_>, path: &Path) -> ErrorList {
    let mut errs = ErrorList::new();
    super::id_errors(&mut errs, &path.child("runAsUser"), sc.run_as_user);
    super::id_errors(&mut errs, &path.child("runAsGroup"), sc.run_as_group);
    if let Some(pm) = sc.proc_mount.as_deref() {
        if !PROC_MOUNTS.contains(&pm) {
            errs.push(not_supported(&path.child("procMount"), pm, PROC_MOUNTS));
        } else if pm == "Unmasked" && !ctx.user_namespace {
            // validateProcMountType: an unmasked /proc only inside a user namespace.
            errs.push(invalid(
                &path.child("procMount"),
                pm,
                "`hostUsers` must be false to use `Unmasked`",
            ));
        } else if pm == "Unmasked" {
            errs.push(forbidden(
                &path.child("procMount"),
                "Unmasked is not supported yet: it needs user namespaces (hostUsers: false), which nodelet does not support yet",
            ));
        }
    }
    if let Some(sp) = &sc.seccomp_profile {
        errs.extend(seccomp_profile(sp, &path.child("seccompProfile")));
    }
    if sc.allow_privilege_escalation == Some(false) {
        if sc.privileged == Some(true) {
            errs.push(invalid(
                path,
                "",
                "cannot set `allowPrivilegeEscalation` to false and `privileged` to true",
            ));
        }
        let adds_sys_admin = sc
            .capabilities
            .as_ref()
            .and_then(|c| c.add.as_ref())
            .is_some_and(|add| {
                add.iter()
                    .any(|c| normalize_capability(c) == "CAP_SYS_ADMIN")
            });
        if adds_sys_admin {
            errs.push(invalid(path, "", "cannot set `allowPrivilegeEscalation` to false and `capabilities.Add` CAP_SYS_ADMIN"));
        }
    }
    errs
}

const SECCOMP_TYPES: &[&str] = &["Localhost", "RuntimeDefault", "Unconfined"];

/// `validateSeccompProfileField`: a known type; `localhostProfile` set
/// exactly for Localhost, as a relative path that does not climb.
pub(super) fn seccomp_profile(
    sp: &k8s_openapi::api::core::v1::SeccompProfile,
    path: &Path,
) -> ErrorList {
    let mut errs = ErrorList::new();
    match sp.type_.as_str() {
        "" => errs.push(required(
            &path.child("type"),
            "type is required when seccompProfile is set",
        )),
        t if !SECCOMP_TYPES.contains(&t) => {
            errs.push(not_supported(&path.child("type"), t, SECCOMP_TYPES));
        }
        _ => {}
    }
    match (sp.type_.as_str(), sp.localhost_profile.as_deref()) {
        ("Localhost", None) => errs.push(required(
            &path.child("localhostProfile"),
            "must be set when seccomp type is Localhost",
        )),
        ("Localhost", Some(p)) => {
            local_descending_path(&mut errs, &path.child("localhostProfile"), p);
        }
        (_, Some(p)) => errs.push(invalid(
            &path.child("localhostProfile"),
            p,
            "can only be set when seccomp type is Localhost",
        )),
        (_, None) => {}
    }
    errs
}

/// `SYS_ADMIN`, `sys_admin` and `CAP_SYS_ADMIN` name the same capability.
pub fn normalize_capability(c: &str) -> String {
    let up = c.to_ascii_uppercase();
    if up.starts_with("CAP_") {
        up
    } else {
        format!("CAP_{up}")
    }
}

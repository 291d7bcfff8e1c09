//! Which Pod fields nodelet honours, in one table.
//!
//! * **Supported**: validated and acted on.
//! * **Ignored by design**: meaningful only to a cluster (scheduling, service
//!   accounts, Services); reported once per pod as an info line.
//! * **Not supported yet**: reported as a warning naming every such field
//!   (an error with `--strict`) and as an event on the pod. Never dropped
//!   silently.
//!
//! Paths use `[]` for "every element": `spec.containers[].tty`. The same
//! table renders the README's field table (see the test at the bottom).

use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Support {
    Supported,
    IgnoredOnSingleNode,
    NotSupportedYet,
}

/// When a present field counts as "used".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    /// Present and not null, false, "", [] or {}.
    Set,
    /// Present and `false` (e.g. `hostUsers: false` asks for user namespaces).
    False,
}

pub struct FieldSupport {
    pub path: &'static str,
    pub support: Support,
    pub note: &'static str,
    trigger: Trigger,
}

const fn f(path: &'static str, support: Support, note: &'static str) -> FieldSupport {
    FieldSupport {
        path,
        support,
        note,
        trigger: Trigger::Set,
    }
}

use Support::{IgnoredOnSingleNode as Ignored, NotSupportedYet as NotYet, Supported as Yes};

/// Container fields, listed once and applied to `containers[]` and `initContainers[]`.
const CONTAINER_FIELDS: &[FieldSupport] = &[
    f("name", Yes, ""),
    f("image", Yes, "pulled per imagePullPolicy"),
    f("imagePullPolicy", Yes, "Always / IfNotPresent / Never"),
    f("command", Yes, "with $(VAR) expansion"),
    f("args", Yes, "with $(VAR) expansion"),
    f("workingDir", Yes, ""),
    f("env", Yes, "value, fieldRef, resourceFieldRef, configMapKeyRef, secretKeyRef (objects from the same manifest set)"),
    f("envFrom", Yes, "configMapRef, secretRef"),
    f("env[].valueFrom.fileKeyRef", NotYet, "alpha in Kubernetes 1.34"),
    f("ports", Yes, "informational, as on a kubelet"),
    f("ports[].hostPort", NotYet, "needs port forwarding from the host"),
    f("ports[].hostIP", NotYet, "needs port forwarding from the host"),
    f("resources", Yes, "cpu and memory in the container's and pod's cgroups (shares, CFS quota, memory limit without swap), qosClass, oom_score_adj"),
    f("resources.limits.ephemeral-storage", NotYet, "not enforced: no eviction yet"),
    f("resources.requests.ephemeral-storage", Ignored, "used for scheduling only"),
    f("resizePolicy", Ignored, "in-place resize needs the API server's resize subresource"),
    f("volumeMounts", Yes, "readOnly, subPath, mountPropagation"),
    f("volumeMounts[].subPathExpr", NotYet, ""),
    f("volumeMounts[].recursiveReadOnly", NotYet, ""),
    f("volumeDevices", NotYet, "raw block volumes"),
    f("livenessProbe", Yes, "exec, httpGet (HTTP, or HTTPS without certificate checks as kubelet), tcpSocket, grpc"),
    f("readinessProbe", Yes, "exec, httpGet (HTTP, or HTTPS without certificate checks as kubelet), tcpSocket, grpc"),
    f("startupProbe", Yes, "exec, httpGet (HTTP, or HTTPS without certificate checks as kubelet), tcpSocket, grpc"),
    f("lifecycle", Yes, "postStart and preStop: exec, httpGet, sleep (tcpSocket fails when run, as on a kubelet)"),
    f("terminationMessagePath", Yes, ""),
    f("terminationMessagePolicy", Yes, "File / FallbackToLogsOnError"),
    f("restartPolicy", Yes, "init containers only: Always makes a native sidecar"),
    f("securityContext.runAsUser", Yes, ""),
    f("securityContext.runAsGroup", Yes, ""),
    f("securityContext.runAsNonRoot", Yes, ""),
    f("securityContext.capabilities", Yes, "add/drop on Docker's default set"),
    f("securityContext.allowPrivilegeEscalation", Yes, "no_new_privs unless true"),
    f("securityContext.readOnlyRootFilesystem", Yes, ""),
    f("securityContext.privileged", Yes, "every capability and host device, nothing masked, /sys writable, no seccomp"),
    f("securityContext.procMount", Yes, "Default; Unmasked needs hostUsers: false (user namespaces, not supported yet)"),
    f("securityContext.seccompProfile", Yes, "RuntimeDefault (containerd's profile), Localhost (under <rootDir>/seccomp), Unconfined"),
    f("securityContext.appArmorProfile", NotYet, ""),
    f("securityContext.seLinuxOptions", NotYet, ""),
    f("securityContext.windowsOptions", Ignored, "Linux node"),
    f("stdin", NotYet, "interactive attach"),
    f("stdinOnce", NotYet, "interactive attach"),
    f("tty", NotYet, "interactive attach"),
];

/// Pod-level fields.
const POD_FIELDS: &[FieldSupport] = &[
    f("metadata.name", Yes, ""),
    f("metadata.namespace", Yes, "default: default"),
    f("metadata.labels", Yes, ""),
    f("metadata.annotations", Yes, ""),
    f("metadata.uid", Yes, "generated when absent"),
    f(
        "metadata.ownerReferences",
        Ignored,
        "no controllers on a single node",
    ),
    f("metadata.finalizers", Ignored, "no API server"),
    f("spec.containers", Yes, ""),
    f(
        "spec.initContainers",
        Yes,
        "one at a time, in order; restartPolicy: Always for sidecars",
    ),
    f("spec.restartPolicy", Yes, "Always / OnFailure / Never"),
    f("spec.terminationGracePeriodSeconds", Yes, ""),
    f("spec.activeDeadlineSeconds", Yes, ""),
    f(
        "spec.volumes",
        Yes,
        "emptyDir (disk or Memory), hostPath, configMap, secret, downwardAPI",
    ),
    f("spec.hostname", Yes, ""),
    f("spec.subdomain", Yes, "only shapes the FQDN in /etc/hosts"),
    f(
        "spec.dnsPolicy",
        Yes,
        "ClusterFirst behaves as Default: there is no cluster DNS",
    ),
    f(
        "spec.readinessGates",
        Yes,
        "no controller sets the conditions, so gated pods stay not Ready",
    ),
    f("spec.os", Yes, "linux"),
    f("spec.securityContext.runAsUser", Yes, ""),
    f("spec.securityContext.runAsGroup", Yes, ""),
    f("spec.securityContext.runAsNonRoot", Yes, ""),
    f("spec.securityContext.supplementalGroups", Yes, ""),
    f(
        "spec.securityContext.fsGroup",
        NotYet,
        "volume ownership changes",
    ),
    f("spec.securityContext.fsGroupChangePolicy", NotYet, ""),
    f("spec.securityContext.supplementalGroupsPolicy", NotYet, ""),
    f("spec.securityContext.sysctls", NotYet, ""),
    f(
        "spec.securityContext.seccompProfile",
        Yes,
        "for containers without their own; node default seccompDefault (on)",
    ),
    f("spec.securityContext.appArmorProfile", NotYet, ""),
    f("spec.securityContext.seLinuxOptions", NotYet, ""),
    f("spec.securityContext.seLinuxChangePolicy", NotYet, ""),
    f("spec.securityContext.windowsOptions", Ignored, "Linux node"),
    f("spec.nodeSelector", Ignored, "scheduling"),
    f(
        "spec.nodeName",
        Ignored,
        "scheduling: the pod runs on this node",
    ),
    f("spec.affinity", Ignored, "scheduling"),
    f("spec.tolerations", Ignored, "scheduling"),
    f("spec.schedulerName", Ignored, "scheduling"),
    f("spec.priority", Ignored, "scheduling"),
    f("spec.priorityClassName", Ignored, "scheduling"),
    f("spec.preemptionPolicy", Ignored, "scheduling"),
    f("spec.topologySpreadConstraints", Ignored, "scheduling"),
    f("spec.schedulingGates", Ignored, "scheduling"),
    f("spec.schedulingGroup", Ignored, "scheduling"),
    f(
        "spec.serviceAccountName",
        Ignored,
        "no API server to mint tokens; still readable through fieldRef",
    ),
    f(
        "spec.serviceAccount",
        Ignored,
        "deprecated alias of serviceAccountName",
    ),
    f(
        "spec.automountServiceAccountToken",
        Ignored,
        "no API server to mint tokens",
    ),
    f(
        "spec.enableServiceLinks",
        Ignored,
        "no Services on a single node",
    ),
    f("spec.overhead", Ignored, "set by RuntimeClass admission"),
    f(
        "spec.evictionResponders",
        Ignored,
        "eviction needs an API server",
    ),
    f("spec.hostNetwork", NotYet, ""),
    f("spec.hostPID", NotYet, ""),
    f("spec.hostIPC", NotYet, ""),
    FieldSupport {
        path: "spec.hostUsers",
        support: NotYet,
        note: "user namespaces (hostUsers: false)",
        trigger: Trigger::False,
    },
    f("spec.shareProcessNamespace", NotYet, ""),
    f("spec.dnsConfig", NotYet, ""),
    f("spec.hostAliases", NotYet, ""),
    f("spec.setHostnameAsFQDN", NotYet, ""),
    f("spec.hostnameOverride", NotYet, ""),
    f("spec.runtimeClassName", NotYet, ""),
    f(
        "spec.imagePullSecrets",
        NotYet,
        "use the daemon's registry credentials",
    ),
    f("spec.ephemeralContainers", NotYet, ""),
    f("spec.resourceClaims", NotYet, "dynamic resource allocation"),
    f("spec.resources", NotYet, "pod-level resources"),
    f(
        "spec.volumes[].emptyDir.medium",
        Yes,
        "\"\" (disk) or Memory (tmpfs)",
    ),
    f("spec.volumes[].persistentVolumeClaim", NotYet, ""),
    f("spec.volumes[].projected", NotYet, ""),
    f("spec.volumes[].ephemeral", NotYet, ""),
    f("spec.volumes[].image", NotYet, ""),
    f("spec.volumes[].csi", NotYet, ""),
    f("spec.volumes[].nfs", NotYet, ""),
    f("spec.volumes[].iscsi", NotYet, ""),
    f("spec.volumes[].gitRepo", NotYet, "deprecated upstream"),
    f("spec.volumes[].awsElasticBlockStore", NotYet, ""),
    f("spec.volumes[].azureDisk", NotYet, ""),
    f("spec.volumes[].azureFile", NotYet, ""),
    f("spec.volumes[].cephfs", NotYet, ""),
    f("spec.volumes[].cinder", NotYet, ""),
    f("spec.volumes[].fc", NotYet, ""),
    f("spec.volumes[].flexVolume", NotYet, ""),
    f("spec.volumes[].flocker", NotYet, ""),
    f("spec.volumes[].gcePersistentDisk", NotYet, ""),
    f("spec.volumes[].glusterfs", NotYet, ""),
    f("spec.volumes[].photonPersistentDisk", NotYet, ""),
    f("spec.volumes[].portworxVolume", NotYet, ""),
    f("spec.volumes[].quobyte", NotYet, ""),
    f("spec.volumes[].rbd", NotYet, ""),
    f("spec.volumes[].scaleIO", NotYet, ""),
    f("spec.volumes[].storageos", NotYet, ""),
    f("spec.volumes[].vsphereVolume", NotYet, ""),
];

/// Every entry of the table with its full path (container fields expanded
/// under `spec.containers[]` and `spec.initContainers[]`).
pub fn table() -> Vec<(String, &'static FieldSupport)> {
    let mut out: Vec<(String, &'static FieldSupport)> =
        POD_FIELDS.iter().map(|e| (e.path.to_string(), e)).collect();
    for list in ["spec.containers[]", "spec.initContainers[]"] {
        out.extend(
            CONTAINER_FIELDS
                .iter()
                .map(|e| (format!("{list}.{}", e.path), e)),
        );
    }
    out
}

/// The README's field table, rendered from this module's table.
pub fn markdown_table() -> String {
    let mut out = String::from("| field | support | notes |\n|---|---|---|\n");
    let label = |s: Support| match s {
        Support::Supported => "supported",
        Support::IgnoredOnSingleNode => "ignored on a single node",
        Support::NotSupportedYet => "not supported yet",
    };
    for e in POD_FIELDS {
        out.push_str(&format!(
            "| `{}` | {} | {} |\n",
            e.path,
            label(e.support),
            e.note
        ));
    }
    for e in CONTAINER_FIELDS {
        out.push_str(&format!(
            "| `containers[].{}` | {} | {} |\n",
            e.path,
            label(e.support),
            e.note
        ));
    }
    out
}

/// A field of one manifest that is not fully supported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Concrete path: `spec.containers[1].tty`.
    pub path: String,
    pub support: Support,
    pub note: &'static str,
}

/// Finds every ignored or not-yet-supported field set in a raw (not
/// defaulted) pod object.
pub fn check(raw_pod: &Value) -> Vec<Finding> {
    let mut out = Vec::new();
    for (pattern, entry) in table() {
        if entry.support == Support::Supported {
            continue;
        }
        let segs: Vec<&str> = pattern.split('.').collect();
        let mut hits = Vec::new();
        walk(raw_pod, &segs, String::new(), &mut hits);
        for (path, v) in hits {
            if used(v, entry.trigger) {
                out.push(Finding {
                    path,
                    support: entry.support,
                    note: entry.note,
                });
            }
        }
    }
    out
}

fn used(v: &Value, t: Trigger) -> bool {
    match t {
        Trigger::False => v == &Value::Bool(false),
        Trigger::Set => match v {
            Value::Null | Value::Bool(false) => false,
            Value::String(s) => !s.is_empty(),
            Value::Array(a) => !a.is_empty(),
            Value::Object(o) => !o.is_empty(),
            Value::Number(_) | Value::Bool(true) => true,
        },
    }
}

fn walk<'a>(v: &'a Value, segs: &[&str], prefix: String, out: &mut Vec<(String, &'a Value)>) {
    let Some((seg, rest)) = segs.split_first() else {
        out.push((prefix, v));
        return;
    };
    let join = |p: &str, s: &str| {
        if p.is_empty() {
            s.to_string()
        } else {
            format!("{p}.{s}")
        }
    };
    if let Some(name) = seg.strip_suffix("[]") {
        if let Some(Value::Array(items)) = v.get(name) {
            for (i, item) in items.iter().enumerate() {
                walk(item, rest, format!("{}[{i}]", join(&prefix, name)), out);
            }
        }
    } else if let Some(child) = v.get(*seg) {
        walk(child, rest, join(&prefix, seg), out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn scheduling_fields_are_ignored_and_host_namespaces_not_yet() {
        let pod = json!({"spec": {"nodeSelector": {"a": "b"}, "hostNetwork": true, "hostPID": false,
            "containers": [{"name": "a"}, {"name": "b", "tty": true, "ports": [{"containerPort": 80, "hostPort": 8080}]}]}});
        let found: Vec<(String, Support)> = check(&pod)
            .into_iter()
            .map(|f| (f.path, f.support))
            .collect();
        assert!(found.contains(&("spec.nodeSelector".into(), Support::IgnoredOnSingleNode)));
        assert!(found.contains(&("spec.hostNetwork".into(), Support::NotSupportedYet)));
        assert!(found.contains(&("spec.containers[1].tty".into(), Support::NotSupportedYet)));
        assert!(found.contains(&(
            "spec.containers[1].ports[0].hostPort".into(),
            Support::NotSupportedYet
        )));
        assert!(
            !found.iter().any(|(p, _)| p == "spec.hostPID"),
            "false is not a use"
        );
        assert_eq!(found.len(), 4, "{found:?}");
    }

    #[test]
    fn host_users_warns_only_when_false() {
        assert!(check(&json!({"spec": {"hostUsers": true}})).is_empty());
        assert_eq!(
            check(&json!({"spec": {"hostUsers": false}}))[0].path,
            "spec.hostUsers"
        );
    }

    #[test]
    fn unsupported_volume_sources_are_named() {
        let pod = json!({"spec": {"volumes": [{"name": "a", "emptyDir": {}}, {"name": "b", "persistentVolumeClaim": {"claimName": "x"}}]}});
        let found = check(&pod);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].path, "spec.volumes[1].persistentVolumeClaim");
    }

    #[test]
    fn every_table_path_is_a_real_pod_field() {
        // Build a pod with each path set to null and decode it strictly: a
        // typo in the table would surface as an unknown field.
        let build = |pattern: &str, leaf_value: &Value| {
            let mut root = json!({"apiVersion": "v1", "kind": "Pod"});
            let mut cur = &mut root;
            let segs: Vec<&str> = pattern.split('.').collect();
            for (i, seg) in segs.iter().enumerate() {
                let last = i + 1 == segs.len();
                let (name, list) = seg.strip_suffix("[]").map_or((*seg, false), |n| (n, true));
                let leaf = if last { leaf_value.clone() } else { json!({}) };
                let node = if list { json!([leaf]) } else { leaf };
                cur[name] = node;
                cur = if list {
                    &mut cur[name][0]
                } else {
                    &mut cur[name]
                };
            }
            root
        };
        let decode =
            |v: &Value| crate::manifest::load::decode_strict::<k8s_openapi::api::core::v1::Pod>(v);
        for (pattern, _) in table() {
            // A map entry (resources.limits.<name>) takes a value, not null.
            let ok = decode(&build(&pattern, &Value::Null)).is_ok()
                || decode(&build(&pattern, &json!("1"))).is_ok();
            assert!(ok, "support table path {pattern} is not a Pod field");
        }
    }

    #[test]
    fn readme_field_table_matches_the_code() {
        let readme = include_str!("../../README.md");
        let table = markdown_table();
        assert!(
            readme.contains(&table),
            "README.md's field table is stale; replace it with:\n{table}"
        );
    }
}

//! From a spec container and its image config to what the runtime runs:
//! the command (kubelet's 4-case table), the environment (`envFrom`, `env`
//! with `$(VAR)` expansion, `fieldRef`, `resourceFieldRef`, ConfigMap and
//! Secret keys, merged over the image's `Env`), working directory, user and
//! groups, capabilities. Pure: files of the image are read through a
//! callback. Errors here are kubelet's `CreateContainerConfigError`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, EnvVar, ObjectFieldSelector, Pod, ResourceFieldSelector,
};
use oci_spec::image::ImageConfiguration;

use super::expand::expand;
use super::objects::Objects;
use crate::quantity::Quantity;

pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Facts about the node and pod that `fieldRef` and `resourceFieldRef` read.
#[derive(Debug, Clone, Default)]
pub struct Downward {
    pub node_name: String,
    pub host_ip: String,
    pub pod_ip: String,
    /// Node allocatable, used for unset limits: millicores and bytes.
    pub node_cpu_millis: i128,
    pub node_memory_bytes: i128,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub no_new_privileges: bool,
    pub privileged: bool,
    pub readonly_rootfs: bool,
    /// Env names skipped from `envFrom` (event InvalidEnvironmentVariableNames).
    pub invalid_env_names: Vec<String>,
}

/// `CreateContainerConfigError`: the message kubelet shows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Reads a file of the container's image (`/etc/passwd`) if present.
pub type ImageFiles<'a> = &'a dyn Fn(&str) -> Option<String>;

fn ns_of(pod: &Pod) -> &str {
    pod.metadata.namespace.as_deref().unwrap_or("default")
}

/// The value of a `fieldRef` (also used by downwardAPI volumes).
pub fn field_ref(
    pod: &Pod,
    sel: &ObjectFieldSelector,
    dw: &Downward,
) -> Result<String, ConfigError> {
    let m = &pod.metadata;
    let path = sel.field_path.as_str();
    let map_key = |prefix: &str| {
        path.strip_prefix(prefix)
            .and_then(|r| r.strip_suffix("']"))
            .map(str::to_string)
    };
    let fmt_map = |m: &Option<BTreeMap<String, String>>| {
        m.iter()
            .flatten()
            .map(|(k, v)| {
                format!(
                    "{k}=\"{}\"",
                    v.replace('\\', "\\\\")
                        .replace('"', "\\\"")
                        .replace('\n', "\\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    Ok(match path {
        "metadata.name" => m.name.clone().unwrap_or_default(),
        "metadata.namespace" => ns_of(pod).to_string(),
        "metadata.uid" => m.uid.clone().unwrap_or_default(),
        "metadata.labels" => fmt_map(&m.labels),
        "metadata.annotations" => fmt_map(&m.annotations),
        "spec.nodeName" => dw.node_name.clone(),
        "spec.serviceAccountName" => super::state::spec(pod)
            .service_account_name
            .clone()
            .unwrap_or_default(),
        "status.hostIP" | "status.hostIPs" => dw.host_ip.clone(),
        "status.podIP" | "status.podIPs" => dw.pod_ip.clone(),
        _ => {
            if let Some(k) = map_key("metadata.labels['") {
                m.labels
                    .as_ref()
                    .and_then(|l| l.get(&k))
                    .cloned()
                    .unwrap_or_default()
            } else if let Some(k) = map_key("metadata.annotations['") {
                m.annotations
                    .as_ref()
                    .and_then(|l| l.get(&k))
                    .cloned()
                    .unwrap_or_default()
            } else {
                return Err(ConfigError(format!("unsupported fieldPath: {path}")));
            }
        }
    })
}

/// The value of a `resourceFieldRef`, rounded up to the divisor; an unset
/// limit reads as the node's allocatable.
pub fn resource_field_ref(
    c: &Container,
    sel: &ResourceFieldSelector,
    dw: &Downward,
) -> Result<String, ConfigError> {
    let res = c.resources.clone().unwrap_or_default();
    let (list, name) = match sel.resource.split_once('.') {
        Some(("limits", n)) => (&res.limits, n),
        Some(("requests", n)) => (&res.requests, n),
        _ => {
            return Err(ConfigError(format!(
                "unsupported container resource: {}",
                sel.resource
            )))
        }
    };
    let set = list
        .as_ref()
        .and_then(|l| l.get(name))
        .and_then(|q| Quantity::parse(&q.0).ok());
    let value = match (set, sel.resource.starts_with("limits."), name) {
        (Some(q), _, _) => q,
        (None, true, "cpu") => Quantity::from_nanos(dw.node_cpu_millis * 1_000_000),
        (None, true, "memory") => Quantity::from_nanos(dw.node_memory_bytes * 1_000_000_000),
        (None, _, _) => Quantity::from_nanos(0),
    };
    let divisor = sel
        .divisor
        .as_ref()
        .map(|d| d.0.clone())
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| "1".to_string());
    let divisor = Quantity::parse(&divisor)
        .map_err(|e| ConfigError(format!("invalid divisor {divisor:?}: {e}")))?;
    let v = value
        .div_ceil(divisor)
        .ok_or_else(|| ConfigError(format!("invalid divisor for {}", sel.resource)))?;
    Ok(v.to_string())
}

/// `makeEnvironmentVariables`: `envFrom` then `env`, each value expanding
/// only the variables defined before it.
fn container_env(
    pod: &Pod,
    c: &Container,
    objects: &Objects,
    dw: &Downward,
    invalid: &mut Vec<String>,
) -> Result<Vec<(String, String)>, ConfigError> {
    let ns = ns_of(pod);
    let mut vars: Vec<(String, String)> = Vec::new();
    let set = |vars: &mut Vec<(String, String)>, k: String, v: String| match vars
        .iter_mut()
        .find(|(n, _)| *n == k)
    {
        Some(slot) => slot.1 = v,
        None => vars.push((k, v)),
    };
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let data = if let Some(r) = &from.config_map_ref {
            match objects.config_map(ns, &r.name) {
                Some(d) => d,
                None if r.optional == Some(true) => continue,
                None => return Err(ConfigError(format!("configmap \"{}\" not found", r.name))),
            }
        } else if let Some(r) = &from.secret_ref {
            match objects.secret(ns, &r.name) {
                Some(d) => d,
                None if r.optional == Some(true) => continue,
                None => return Err(ConfigError(format!("secret \"{}\" not found", r.name))),
            }
        } else {
            continue;
        };
        for (k, v) in data {
            let name = format!("{prefix}{k}");
            if name.is_empty() || name.contains('=') {
                invalid.push(name);
                continue;
            }
            set(&mut vars, name, String::from_utf8_lossy(&v).into_owned());
        }
    }
    for e in c.env.iter().flatten() {
        let value = env_value(pod, c, e, objects, dw, &vars)?;
        if let Some(v) = value {
            set(&mut vars, e.name.clone(), v);
        }
    }
    Ok(vars)
}

fn env_value(
    pod: &Pod,
    c: &Container,
    e: &EnvVar,
    objects: &Objects,
    dw: &Downward,
    defined: &[(String, String)],
) -> Result<Option<String>, ConfigError> {
    let ns = ns_of(pod);
    let Some(from) = &e.value_from else {
        let lookup = |n: &str| defined.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        return Ok(Some(expand(e.value.as_deref().unwrap_or_default(), lookup)));
    };
    if let Some(f) = &from.field_ref {
        return field_ref(pod, f, dw).map(Some);
    }
    if let Some(r) = &from.resource_field_ref {
        return resource_field_ref(c, r, dw).map(Some);
    }
    let optional;
    let (data, kind, name, key) = if let Some(r) = &from.config_map_key_ref {
        optional = r.optional == Some(true);
        (
            objects.config_map(ns, &r.name),
            "ConfigMap",
            &r.name,
            &r.key,
        )
    } else if let Some(r) = &from.secret_key_ref {
        optional = r.optional == Some(true);
        (objects.secret(ns, &r.name), "Secret", &r.name, &r.key)
    } else {
        return Err(ConfigError(format!(
            "env {}: unsupported valueFrom source",
            e.name
        )));
    };
    let Some(data) = data else {
        if optional {
            return Ok(None);
        }
        let what = if kind == "ConfigMap" {
            "configmap"
        } else {
            "secret"
        };
        return Err(ConfigError(format!("{what} \"{name}\" not found")));
    };
    match data.get(key) {
        Some(v) => Ok(Some(String::from_utf8_lossy(v).into_owned())),
        None if optional => Ok(None),
        None => Err(ConfigError(format!(
            "couldn't find key {key} in {kind} {ns}/{name}"
        ))),
    }
}

/// The process to run: command and args (the 4-case table), expanded with
/// the container's environment.
fn command(c: &Container, image: &ImageConfiguration, env: &[(String, String)]) -> Vec<String> {
    let cfg = image.config().clone().unwrap_or_default();
    let entrypoint = cfg.entrypoint().clone().unwrap_or_default();
    let cmd = cfg.cmd().clone().unwrap_or_default();
    let lookup = |n: &str| env.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let ex = |v: &Vec<String>| v.iter().map(|s| expand(s, lookup)).collect::<Vec<_>>();
    match (&c.command, &c.args) {
        (Some(command), args) if !command.is_empty() => {
            let mut v = ex(command);
            v.extend(ex(&args.clone().unwrap_or_default()));
            v
        }
        (_, Some(args)) if !args.is_empty() => {
            let mut v = entrypoint;
            v.extend(ex(args));
            v
        }
        _ => {
            let mut v = entrypoint;
            v.extend(cmd);
            v
        }
    }
}

/// Finds `name` in an `/etc/passwd` or `/etc/group` text: (id, gid or 0).
fn lookup_db(text: &str, name: &str) -> Option<(u32, u32)> {
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 3 && f[0] == name).then(|| {
            (
                f[2].parse().unwrap_or(0),
                f.get(3).and_then(|g| g.parse().ok()).unwrap_or(0),
            )
        })
    })
}

fn passwd_by_uid(text: &str, uid: u32) -> Option<(String, u32)> {
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 4 && f[2].parse::<u32>().ok() == Some(uid))
            .then(|| (f[0].to_string(), f[3].parse().unwrap_or(0)))
    })
}

/// Groups in `/etc/group` listing `user` as a member.
fn member_groups(text: &str, user: &str) -> Vec<u32> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() >= 4 && f[3].split(',').any(|m| m == user))
                .then(|| f[2].parse().ok())
                .flatten()
        })
        .collect()
}

/// User and groups: securityContext over the image's `User` (numeric or
/// names from the image's `/etc/passwd` and `/etc/group`), supplementary
/// groups from the pod and from `/etc/group` membership.
fn user(
    pod: &Pod,
    c: &Container,
    image: &ImageConfiguration,
    files: ImageFiles,
) -> Result<(u32, u32, Vec<u32>), ConfigError> {
    let psc = super::state::spec(pod)
        .security_context
        .clone()
        .unwrap_or_default();
    let csc = c.security_context.clone().unwrap_or_default();
    let run_as_user = csc.run_as_user.or(psc.run_as_user);
    let run_as_group = csc.run_as_group.or(psc.run_as_group);
    let non_root = csc.run_as_non_root.or(psc.run_as_non_root) == Some(true);
    let image_user = image
        .config()
        .as_ref()
        .and_then(|c| c.user().clone())
        .unwrap_or_default();
    let passwd = files("/etc/passwd").unwrap_or_default();
    let group = files("/etc/group").unwrap_or_default();
    let id = |v: i64, what: &str| {
        u32::try_from(v).map_err(|_| ConfigError(format!("{what} {v} is out of range")))
    };
    let (img_u, img_g) = image_user
        .split_once(':')
        .map_or((image_user.as_str(), None), |(u, g)| (u, Some(g)));
    let (uid, mut gid, username) = if let Some(u) = run_as_user {
        let uid = id(u, "runAsUser")?;
        let entry = passwd_by_uid(&passwd, uid);
        (uid, entry.as_ref().map_or(0, |e| e.1), entry.map(|e| e.0))
    } else if img_u.is_empty() {
        (0, 0, Some("root".to_string()))
    } else if let Ok(uid) = img_u.parse::<u32>() {
        let entry = passwd_by_uid(&passwd, uid);
        (uid, entry.as_ref().map_or(0, |e| e.1), entry.map(|e| e.0))
    } else {
        if non_root {
            return Err(ConfigError(format!(
                "container has runAsNonRoot and image has non-numeric user ({img_u}), cannot verify user is non-root (pod: {:?}, container: {})",
                super::planner::pod_full_name(pod),
                c.name
            )));
        }
        let (uid, gid) = lookup_db(&passwd, img_u).ok_or_else(|| {
            ConfigError(format!(
                "unable to find user {img_u}: no matching entries in passwd file"
            ))
        })?;
        (uid, gid, Some(img_u.to_string()))
    };
    if run_as_user.is_none() {
        if let Some(g) = img_g.filter(|g| !g.is_empty()) {
            gid = match g.parse::<u32>() {
                Ok(n) => n,
                Err(_) => lookup_db(&group, g).map(|e| e.0).ok_or_else(|| {
                    ConfigError(format!(
                        "unable to find group {g}: no matching entries in group file"
                    ))
                })?,
            };
        }
    }
    if let Some(g) = run_as_group {
        gid = id(g, "runAsGroup")?;
    }
    if non_root && uid == 0 {
        return Err(ConfigError(format!(
            "container has runAsNonRoot and image will run as root (pod: {:?}, container: {})",
            super::planner::pod_full_name(pod),
            c.name
        )));
    }
    let mut extra: Vec<u32> = username
        .map(|u| member_groups(&group, &u))
        .unwrap_or_default();
    for g in psc.supplemental_groups.iter().flatten() {
        extra.push(id(*g, "supplementalGroups")?);
    }
    extra.retain(|g| *g != gid);
    extra.sort_unstable();
    extra.dedup();
    Ok((uid, gid, extra))
}

fn cap_name(c: &str) -> String {
    let up = c.to_ascii_uppercase();
    if up == "ALL" || up.starts_with("CAP_") {
        up
    } else {
        format!("CAP_{up}")
    }
}

/// Everything about the process of `c` in `pod`.
pub fn process(
    pod: &Pod,
    c: &Container,
    image: &ImageConfiguration,
    objects: &Objects,
    dw: &Downward,
    files: ImageFiles,
) -> Result<Process, ConfigError> {
    let mut invalid = Vec::new();
    let vars = container_env(pod, c, objects, dw, &mut invalid)?;
    let args = command(c, image, &vars);
    let cfg = image.config().clone().unwrap_or_default();
    // The runtime's merge: image Env first, then the container's, a
    // container variable replacing an image one of the same name.
    let mut env: Vec<(String, String)> = cfg
        .env()
        .iter()
        .flatten()
        .map(|kv| {
            kv.split_once('=')
                .map_or((kv.clone(), String::new()), |(k, v)| (k.into(), v.into()))
        })
        .collect();
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.insert(0, ("PATH".into(), DEFAULT_PATH.into()));
    }
    let hostname = super::state::spec(pod)
        .hostname
        .clone()
        .or_else(|| pod.metadata.name.clone())
        .unwrap_or_default();
    for (k, v) in std::iter::once(("HOSTNAME".to_string(), hostname)).chain(vars) {
        match env.iter_mut().find(|(n, _)| *n == k) {
            Some(slot) => slot.1 = v,
            None => env.push((k, v)),
        }
    }
    let cwd = c
        .working_dir
        .clone()
        .filter(|w| !w.is_empty())
        .or_else(|| cfg.working_dir().clone().filter(|w| !w.is_empty()))
        .unwrap_or_else(|| "/".into());
    let (uid, gid, additional_gids) = user(pod, c, image, files)?;
    let sc = c.security_context.clone().unwrap_or_default();
    let caps = sc.capabilities.unwrap_or_default();
    Ok(Process {
        args,
        env: env.into_iter().map(|(k, v)| format!("{k}={v}")).collect(),
        cwd,
        uid,
        gid,
        additional_gids,
        cap_add: caps.add.iter().flatten().map(|c| cap_name(c)).collect(),
        cap_drop: caps.drop.iter().flatten().map(|c| cap_name(c)).collect(),
        // kubelet's AddNoNewPrivileges: never for a privileged container.
        no_new_privileges: sc.privileged != Some(true)
            && sc.allow_privilege_escalation != Some(true),
        privileged: sc.privileged == Some(true),
        readonly_rootfs: sc.read_only_root_filesystem == Some(true),
        invalid_env_names: invalid,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::needless_pass_by_value)]
    use super::*;

    fn image(entrypoint: &[&str], cmd: &[&str], env: &[&str], user: &str) -> ImageConfiguration {
        serde_json::from_value(serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": []},
            "config": {"Entrypoint": entrypoint, "Cmd": cmd, "Env": env, "User": user, "WorkingDir": "/srv"},
        }))
        .unwrap()
    }

    fn pod(container: serde_json::Value) -> (Pod, Container) {
        let p: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "prod", "uid": "u-9", "labels": {"app": "web"}, "annotations": {"a/b": "c"}},
            "spec": {"containers": [container], "securityContext": {"supplementalGroups": [5000]}},
        }))
        .unwrap();
        let c = p.spec.as_ref().unwrap().containers[0].clone();
        (p, c)
    }

    fn dw() -> Downward {
        Downward {
            node_name: "node1".into(),
            host_ip: "10.0.0.5".into(),
            pod_ip: "10.0.0.5".into(),
            node_cpu_millis: 2000,
            node_memory_bytes: 1 << 30,
        }
    }

    fn no_files(_: &str) -> Option<String> {
        None
    }

    fn run(c: serde_json::Value, img: &ImageConfiguration) -> Result<Process, ConfigError> {
        let (p, c) = pod(c);
        process(&p, &c, img, &Objects::default(), &dw(), &no_files)
    }

    #[test]
    fn command_and_args_follow_the_four_case_table() {
        let img = image(&["/agnhost"], &["pause"], &[], "");
        let base = serde_json::json!({"name": "c"});
        let with = |k: &str, v: serde_json::Value| {
            let mut c = base.clone();
            c[k] = v;
            c
        };
        assert_eq!(run(base.clone(), &img).unwrap().args, ["/agnhost", "pause"]);
        assert_eq!(
            run(
                with(
                    "args",
                    serde_json::json!(["entrypoint-tester", "override", "arguments"])
                ),
                &img
            )
            .unwrap()
            .args,
            ["/agnhost", "entrypoint-tester", "override", "arguments"]
        );
        assert_eq!(
            run(
                with(
                    "command",
                    serde_json::json!(["/agnhost-2", "entrypoint-tester"])
                ),
                &img
            )
            .unwrap()
            .args,
            ["/agnhost-2", "entrypoint-tester"]
        );
        let mut both = with(
            "command",
            serde_json::json!(["/agnhost-2", "entrypoint-tester"]),
        );
        both["args"] = serde_json::json!(["override", "arguments"]);
        assert_eq!(
            run(both, &img).unwrap().args,
            ["/agnhost-2", "entrypoint-tester", "override", "arguments"]
        );
    }

    #[test]
    fn env_expands_earlier_variables_and_overrides_the_image() {
        let img = image(&[], &["sh"], &["PATH=/bin", "FOO=image", "KEEP=1"], "");
        let p = run(
            serde_json::json!({"name": "c",
            "command": ["sh", "-c", "echo $(FOO);;$(BAR) $$(FOO) $(NOPE)"],
            "env": [
                {"name": "FOO", "value": "foo-value"},
                {"name": "BAR", "value": "bar-value"},
                {"name": "BOTH", "value": "$(FOO)-$(BAR)-$(LATER)"},
                {"name": "LATER", "value": "x"},
            ]}),
            &img,
        )
        .unwrap();
        assert_eq!(p.args[2], "echo foo-value;;bar-value $(FOO) $(NOPE)");
        assert_eq!(
            p.env,
            [
                "PATH=/bin",
                "FOO=foo-value",
                "KEEP=1",
                "HOSTNAME=web",
                "BAR=bar-value",
                "BOTH=foo-value-bar-value-$(LATER)",
                "LATER=x"
            ]
        );
        assert_eq!(p.cwd, "/srv");
    }

    #[test]
    fn field_and_resource_refs() {
        let img = image(&[], &["sh"], &[], "");
        let env = |name: &str, from: serde_json::Value| serde_json::json!({"name": name, "valueFrom": from});
        let p = run(
            serde_json::json!({"name": "c",
                "resources": {"limits": {"cpu": "1250m", "memory": "64Mi"}, "requests": {"cpu": "250m"}},
                "env": [
                    env("NAME", serde_json::json!({"fieldRef": {"fieldPath": "metadata.name"}})),
                    env("NS", serde_json::json!({"fieldRef": {"fieldPath": "metadata.namespace"}})),
                    env("UID", serde_json::json!({"fieldRef": {"fieldPath": "metadata.uid"}})),
                    env("LABEL", serde_json::json!({"fieldRef": {"fieldPath": "metadata.labels['app']"}})),
                    env("ANN", serde_json::json!({"fieldRef": {"fieldPath": "metadata.annotations['a/b']"}})),
                    env("NODE", serde_json::json!({"fieldRef": {"fieldPath": "spec.nodeName"}})),
                    env("HOSTIP", serde_json::json!({"fieldRef": {"fieldPath": "status.hostIP"}})),
                    env("CPU", serde_json::json!({"resourceFieldRef": {"resource": "limits.cpu"}})),
                    env("MEM", serde_json::json!({"resourceFieldRef": {"resource": "limits.memory"}})),
                    env("MEMMI", serde_json::json!({"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}})),
                    env("REQM", serde_json::json!({"resourceFieldRef": {"resource": "requests.cpu", "divisor": "1m"}})),
                ]}),
            &img,
        )
        .unwrap();
        let got: Vec<&str> = p.env.iter().skip(2).map(String::as_str).collect();
        assert_eq!(
            got,
            [
                "NAME=web",
                "NS=prod",
                "UID=u-9",
                "LABEL=web",
                "ANN=c",
                "NODE=node1",
                "HOSTIP=10.0.0.5",
                "CPU=2",
                "MEM=67108864",
                "MEMMI=64",
                "REQM=250"
            ]
        );
        // No limit: node allocatable.
        let p = run(
            serde_json::json!({"name": "c", "env": [env("CPU", serde_json::json!({"resourceFieldRef": {"resource": "limits.cpu"}}))]}),
            &img,
        )
        .unwrap();
        assert!(p.env.contains(&"CPU=2".to_string()));
    }

    #[test]
    fn missing_config_map_keys_are_config_errors_unless_optional() {
        let img = image(&[], &["sh"], &[], "");
        let cm: k8s_openapi::api::core::v1::ConfigMap =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "cfg", "namespace": "prod"}, "data": {"k": "v"}})).unwrap();
        let objects = Objects::new(vec![cm], vec![]);
        let go = |r: serde_json::Value| {
            let (p, c) = pod(
                serde_json::json!({"name": "c", "env": [{"name": "X", "valueFrom": {"configMapKeyRef": r}}]}),
            );
            process(&p, &c, &img, &objects, &dw(), &no_files)
        };
        assert!(go(serde_json::json!({"name": "cfg", "key": "k"}))
            .unwrap()
            .env
            .contains(&"X=v".to_string()));
        assert_eq!(
            go(serde_json::json!({"name": "cfg", "key": "nope"}))
                .unwrap_err()
                .0,
            "couldn't find key nope in ConfigMap prod/cfg"
        );
        assert_eq!(
            go(serde_json::json!({"name": "other", "key": "k"}))
                .unwrap_err()
                .0,
            "configmap \"other\" not found"
        );
        let p = go(serde_json::json!({"name": "cfg", "key": "nope", "optional": true})).unwrap();
        assert!(!p.env.iter().any(|e| e.starts_with("X=")));
    }

    #[test]
    fn users_and_groups_from_names_numbers_and_security_context() {
        let passwd = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n";
        let group = "root:x:0:\napp:x:1001:\nextra:x:2000:app,other\nstaff:x:50:\n";
        let files = |p: &str| match p {
            "/etc/passwd" => Some(passwd.to_string()),
            "/etc/group" => Some(group.to_string()),
            _ => None,
        };
        let go = |user: &str, c: serde_json::Value| {
            let (p, c) = pod(c);
            process(
                &p,
                &c,
                &image(&[], &["sh"], &[], user),
                &Objects::default(),
                &dw(),
                &files,
            )
        };
        let base = serde_json::json!({"name": "c"});
        let p = go("app", base.clone()).unwrap();
        assert_eq!(
            (p.uid, p.gid, p.additional_gids),
            (1000, 1001, vec![2000, 5000])
        );
        let p = go("app:staff", base.clone()).unwrap();
        assert_eq!((p.uid, p.gid), (1000, 50));
        let p = go("1000:7", base.clone()).unwrap();
        assert_eq!((p.uid, p.gid), (1000, 7));
        let p = go("", serde_json::json!({"name": "c", "securityContext": {"runAsUser": 1000, "runAsGroup": 3}})).unwrap();
        assert_eq!((p.uid, p.gid), (1000, 3));
        assert_eq!(
            go("ghost", base.clone()).unwrap_err().0,
            "unable to find user ghost: no matching entries in passwd file"
        );
        let e = go(
            "",
            serde_json::json!({"name": "c", "securityContext": {"runAsNonRoot": true}}),
        )
        .unwrap_err();
        assert!(
            e.0.starts_with("container has runAsNonRoot and image will run as root"),
            "{e}"
        );
        let e = go(
            "app",
            serde_json::json!({"name": "c", "securityContext": {"runAsNonRoot": true}}),
        )
        .unwrap_err();
        assert!(e.0.contains("non-numeric user (app)"), "{e}");
        let p = go(
            "",
            serde_json::json!({"name": "c", "securityContext": {"capabilities": {"add": ["net_admin"], "drop": ["ALL"]}, "allowPrivilegeEscalation": true, "readOnlyRootFilesystem": true}}),
        )
        .unwrap();
        assert_eq!(
            (p.cap_add, p.cap_drop),
            (vec!["CAP_NET_ADMIN".to_string()], vec!["ALL".to_string()])
        );
        assert!(!p.no_new_privileges);
        assert!(p.readonly_rootfs);
    }
}

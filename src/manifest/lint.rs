//! Warnings about pods that are valid but will not work as meant: the API
//! server accepts them, the kubelet fails at run time.

use k8s_openapi::api::core::v1::{
    Container, HTTPGetAction, LifecycleHandler, Pod, Probe, TCPSocketAction,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::manifest::field::Path;

/// Named ports of probes and hooks that the container does not declare:
/// the kubelet fails such a probe ("couldn't find port") on every try.
pub fn undeclared_named_ports(pod: &Pod) -> Vec<String> {
    let Some(spec) = &pod.spec else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let none = Vec::new();
    let lists = [
        ("containers", &spec.containers),
        (
            "initContainers",
            spec.init_containers.as_ref().unwrap_or(&none),
        ),
    ];
    for (list, containers) in lists {
        for (i, c) in containers.iter().enumerate() {
            let base = Path::new("spec").child(list).index(i);
            for (field, port) in handler_ports(c) {
                let IntOrString::String(name) = port else {
                    continue;
                };
                let declared = c
                    .ports
                    .iter()
                    .flatten()
                    .any(|p| p.name.as_deref() == Some(name.as_str()));
                if !declared {
                    out.push(format!(
                        "{}.{field}: port {name:?} is not a named port of container {:?}: the probe or hook will fail",
                        base.as_str(),
                        c.name
                    ));
                }
            }
        }
    }
    out
}

/// (field path below the container, port) of every httpGet/tcpSocket.
fn handler_ports(c: &Container) -> Vec<(String, IntOrString)> {
    let mut out = Vec::new();
    let probes = [
        ("livenessProbe", &c.liveness_probe),
        ("readinessProbe", &c.readiness_probe),
        ("startupProbe", &c.startup_probe),
    ];
    for (name, p) in probes {
        if let Some(p) = p {
            out.extend(
                probe_ports(p)
                    .into_iter()
                    .map(|(f, v)| (format!("{name}.{f}"), v)),
            );
        }
    }
    if let Some(l) = &c.lifecycle {
        for (name, h) in [("postStart", &l.post_start), ("preStop", &l.pre_stop)] {
            if let Some(h) = h {
                out.extend(
                    hook_ports(h)
                        .into_iter()
                        .map(|(f, v)| (format!("lifecycle.{name}.{f}"), v)),
                );
            }
        }
    }
    out
}

/// The ports of a probe's or hook's httpGet and tcpSocket handlers.
fn ports(
    http: Option<&HTTPGetAction>,
    tcp: Option<&TCPSocketAction>,
) -> Vec<(&'static str, IntOrString)> {
    let http = http.map(|h| ("httpGet.port", h.port.clone()));
    let tcp = tcp.map(|t| ("tcpSocket.port", t.port.clone()));
    http.into_iter().chain(tcp).collect()
}

fn probe_ports(p: &Probe) -> Vec<(&'static str, IntOrString)> {
    ports(p.http_get.as_ref(), p.tcp_socket.as_ref())
}

fn hook_ports(h: &LifecycleHandler) -> Vec<(&'static str, IntOrString)> {
    ports(h.http_get.as_ref(), h.tcp_socket.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_undeclared_names_are_reported() {
        let pod: Pod = serde_norway::from_str(
            "metadata: {name: p}\nspec:\n  containers:\n  - name: a\n    image: i\n    ports: [{name: http, containerPort: 80}]\n    readinessProbe: {httpGet: {port: http}}\n    livenessProbe: {tcpSocket: {port: admin}}\n    startupProbe: {httpGet: {port: 8080}}\n    lifecycle: {preStop: {httpGet: {port: metrics}}}\n",
        )
        .unwrap();
        assert_eq!(
            undeclared_named_ports(&pod),
            [
                "spec.containers[0].livenessProbe.tcpSocket.port: port \"admin\" is not a named port of container \"a\": the probe or hook will fail",
                "spec.containers[0].lifecycle.preStop.httpGet.port: port \"metrics\" is not a named port of container \"a\": the probe or hook will fail",
            ]
        );
    }
}

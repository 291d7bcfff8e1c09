//! Probes (`validateProbe`) and lifecycle handlers (`validateLifecycle`).

use k8s_openapi::api::core::v1::{ExecAction, HTTPGetAction, Lifecycle, LifecycleHandler, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::names;
use crate::manifest::field::{forbidden, invalid, not_supported, required, ErrorList, Path};

const SCHEMES: &[&str] = &["HTTP", "HTTPS"];
const NONNEGATIVE: &str = "must be greater than or equal to 0";

pub(super) fn probe(p: &Probe, path: &Path) -> ErrorList {
    let mut errs = ErrorList::new();
    handlers(
        &mut errs,
        path,
        &[
            ("exec", p.exec.is_some()),
            ("httpGet", p.http_get.is_some()),
            ("tcpSocket", p.tcp_socket.is_some()),
            ("grpc", p.grpc.is_some()),
        ],
    );
    if let Some(e) = &p.exec {
        exec(&mut errs, e, &path.child("exec"));
    }
    if let Some(h) = &p.http_get {
        http_get(&mut errs, h, &path.child("httpGet"));
    }
    if let Some(t) = &p.tcp_socket {
        port_num_or_name(&mut errs, &t.port, &path.child("tcpSocket").child("port"));
    }
    if let Some(g) = &p.grpc {
        for m in names::port_number(g.port) {
            errs.push(invalid(&path.child("grpc").child("port"), g.port, &m));
        }
    }
    for (name, v) in [
        ("initialDelaySeconds", p.initial_delay_seconds),
        ("timeoutSeconds", p.timeout_seconds),
        ("periodSeconds", p.period_seconds),
        ("successThreshold", p.success_threshold),
        ("failureThreshold", p.failure_threshold),
    ] {
        if let Some(v) = v.filter(|v| *v < 0) {
            errs.push(invalid(&path.child(name), v, NONNEGATIVE));
        }
    }
    if let Some(t) = p.termination_grace_period_seconds.filter(|t| *t <= 0) {
        errs.push(invalid(
            &path.child("terminationGracePeriodSeconds"),
            t,
            "must be greater than 0",
        ));
    }
    errs
}

/// Liveness and startup probes only flip between failure and success once.
pub(super) fn success_threshold_is_one(p: &Probe, path: &Path) -> ErrorList {
    match p.success_threshold {
        Some(t) if t != 1 => vec![invalid(&path.child("successThreshold"), t, "must be 1")],
        _ => Vec::new(),
    }
}

pub(super) fn lifecycle(l: &Lifecycle, grace: Option<i64>, path: &Path) -> ErrorList {
    let mut errs = ErrorList::new();
    for (name, h) in [("postStart", &l.post_start), ("preStop", &l.pre_stop)] {
        if let Some(h) = h {
            handler(&mut errs, h, grace, &path.child(name));
        }
    }
    if l.stop_signal.is_some() {
        // ContainerStopSignals (alpha 1.33) requires spec.os.name; nodelet
        // does not implement it yet, and says so instead of ignoring it.
        errs.push(forbidden(&path.child("stopSignal"), "not supported yet by nodelet (ContainerStopSignals is alpha); the image's StopSignal or SIGTERM is used"));
    }
    errs
}

fn handler(errs: &mut ErrorList, h: &LifecycleHandler, grace: Option<i64>, path: &Path) {
    handlers(
        errs,
        path,
        &[
            ("exec", h.exec.is_some()),
            ("httpGet", h.http_get.is_some()),
            ("tcpSocket", h.tcp_socket.is_some()),
            ("sleep", h.sleep.is_some()),
        ],
    );
    if let Some(e) = &h.exec {
        exec(errs, e, &path.child("exec"));
    }
    if let Some(g) = &h.http_get {
        http_get(errs, g, &path.child("httpGet"));
    }
    if let Some(t) = &h.tcp_socket {
        port_num_or_name(errs, &t.port, &path.child("tcpSocket").child("port"));
    }
    if let (Some(s), Some(g)) = (&h.sleep, grace) {
        // validateSleepAction with PodLifecycleSleepActionAllowZero (GA 1.34).
        if s.seconds < 0 || s.seconds > g {
            errs.push(invalid(
                &path.child("sleep").child("seconds"),
                s.seconds,
                &format!("must be non-negative and less than terminationGracePeriodSeconds ({g})"),
            ));
        }
    }
}

/// Exactly one handler: none is Required at the handler's path; each extra
/// one is Forbidden at its own path (`validateHandler`), e.g.
/// `livenessProbe.tcpSocket: Forbidden: may not specify more than 1 handler type`.
fn handlers(errs: &mut ErrorList, path: &Path, set: &[(&str, bool)]) {
    let present: Vec<&str> = set.iter().filter(|(_, s)| *s).map(|(n, _)| *n).collect();
    if present.is_empty() {
        errs.push(required(path, "must specify a handler type"));
    }
    for extra in present.iter().skip(1) {
        errs.push(forbidden(
            &path.child(extra),
            "may not specify more than 1 handler type",
        ));
    }
}

fn exec(errs: &mut ErrorList, e: &ExecAction, path: &Path) {
    if e.command.as_ref().is_none_or(Vec::is_empty) {
        errs.push(required(&path.child("command"), ""));
    }
}

fn http_get(errs: &mut ErrorList, h: &HTTPGetAction, path: &Path) {
    if h.path.as_deref().unwrap_or_default().is_empty() {
        errs.push(required(&path.child("path"), ""));
    }
    port_num_or_name(errs, &h.port, &path.child("port"));
    let scheme = h.scheme.as_deref().unwrap_or_default();
    if !SCHEMES.contains(&scheme) {
        errs.push(not_supported(&path.child("scheme"), scheme, SCHEMES));
    }
    for (i, hdr) in h.http_headers.iter().flatten().enumerate() {
        let hp = path.child("httpHeaders").index(i).child("name");
        for m in names::http_header_name(&hdr.name) {
            errs.push(invalid(&hp, &hdr.name, &m));
        }
    }
}

fn port_num_or_name(errs: &mut ErrorList, port: &IntOrString, path: &Path) {
    match port {
        IntOrString::Int(n) => {
            for m in names::port_number(*n) {
                errs.push(invalid(path, *n, &m));
            }
        }
        IntOrString::String(s) if s.is_empty() => errs.push(required(path, "")),
        IntOrString::String(s) => {
            for m in names::port_name(s) {
                errs.push(invalid(path, s, &m));
            }
        }
    }
}

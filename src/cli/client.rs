//! CLI commands that talk to a running nodelet (`daemon` or `run`) over the
//! API socket: get, describe, logs, exec, delete, events. Output is shaped
//! like kubectl's.

use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use k8s_openapi::api::core::v1::{ContainerState, ContainerStatus, Event, Pod};

use super::{GlobalArgs, PodOutput};
use crate::api::client::Client;
use crate::api::ExecRequest;

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start async runtime")
}

fn client(global: &GlobalArgs) -> anyhow::Result<Client> {
    let cfg = super::effective_config(global)?;
    Ok(Client::new(&cfg.socket))
}

fn pod_path(ns: &str, name: &str) -> String {
    format!("/api/v1/namespaces/{ns}/pods/{name}")
}

fn to_pods(v: &serde_json::Value) -> anyhow::Result<Vec<Pod>> {
    serde_json::from_value(v["items"].clone()).context("decode pod list")
}

/// kubectl's age column: `45s`, `3m`, `2h`, `4d`.
pub fn age(since: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>) -> String {
    let Some(t) = since else {
        return "<unknown>".into();
    };
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let s = u64::try_from(now - t.0.as_second()).unwrap_or(0);
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

fn ready_condition(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn initialized(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "Initialized" && c.status == "True")
        })
}

/// kubectl's STATUS column (`printPod` in kubectl's printers).
pub fn pod_status_column(pod: &Pod) -> String {
    let status = pod.status.clone().unwrap_or_default();
    let mut reason = status
        .reason
        .clone()
        .or(status.phase.clone())
        .unwrap_or_default();
    let inits = status.init_container_statuses.clone().unwrap_or_default();
    let spec_inits = pod
        .spec
        .as_ref()
        .and_then(|s| s.init_containers.clone())
        .unwrap_or_default();
    let mut initializing = false;
    for (i, c) in inits.iter().enumerate() {
        let st = c.state.clone().unwrap_or_default();
        let sidecar = spec_inits
            .get(i)
            .is_some_and(|s| s.restart_policy.as_deref() == Some("Always"));
        if st.terminated.as_ref().is_some_and(|t| t.exit_code == 0)
            || (sidecar && c.started == Some(true))
        {
            continue;
        }
        reason = if let Some(t) = &st.terminated {
            match (&t.reason, t.signal) {
                (Some(r), _) if !r.is_empty() => format!("Init:{r}"),
                (_, Some(s)) if s != 0 => format!("Init:Signal:{s}"),
                _ => format!("Init:ExitCode:{}", t.exit_code),
            }
        } else if let Some(r) = st
            .waiting
            .as_ref()
            .and_then(|w| w.reason.clone())
            .filter(|r| !r.is_empty() && r != "PodInitializing")
        {
            format!("Init:{r}")
        } else {
            format!("Init:{i}/{}", spec_inits.len())
        };
        initializing = true;
        break;
    }
    if !initializing || initialized(pod) {
        let mut has_running = false;
        for c in status.container_statuses.iter().flatten().rev() {
            let st = c.state.clone().unwrap_or_default();
            if let Some(r) = st
                .waiting
                .as_ref()
                .and_then(|w| w.reason.clone())
                .filter(|r| !r.is_empty())
            {
                reason = r;
            } else if let Some(t) = &st.terminated {
                reason = match (&t.reason, t.signal) {
                    (Some(r), _) if !r.is_empty() => r.clone(),
                    (_, Some(s)) if s != 0 => format!("Signal:{s}"),
                    _ => format!("ExitCode:{}", t.exit_code),
                };
            } else if st.running.is_some() && c.ready {
                has_running = true;
            }
        }
        if reason == "Completed" && has_running {
            reason = if ready_condition(pod) {
                "Running".into()
            } else {
                "NotReady".into()
            };
        }
    }
    let paused = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == crate::pod::status::PAUSED_CONDITION && c.status == "True");
    if paused {
        reason = "Paused".into();
    }
    if pod.metadata.deletion_timestamp.is_some()
        && !matches!(status.phase.as_deref(), Some("Succeeded" | "Failed"))
    {
        reason = "Terminating".into();
    }
    reason
}

fn ready_column(pod: &Pod) -> String {
    let status = pod.status.clone().unwrap_or_default();
    let spec_inits = pod
        .spec
        .as_ref()
        .and_then(|s| s.init_containers.clone())
        .unwrap_or_default();
    let sidecars: Vec<&ContainerStatus> = status
        .init_container_statuses
        .iter()
        .flatten()
        .filter(|c| {
            spec_inits
                .iter()
                .any(|s| s.name == c.name && s.restart_policy.as_deref() == Some("Always"))
        })
        .collect();
    let apps: Vec<&ContainerStatus> = status.container_statuses.iter().flatten().collect();
    let total = apps.len() + sidecars.len();
    let ready = apps
        .iter()
        .chain(sidecars.iter())
        .filter(|c| c.ready)
        .count();
    format!("{ready}/{total}")
}

fn restarts(pod: &Pod) -> i32 {
    let s = pod.status.clone().unwrap_or_default();
    s.container_statuses
        .iter()
        .flatten()
        .chain(s.init_container_statuses.iter().flatten())
        .map(|c| c.restart_count)
        .sum()
}

fn print_pods(pods: &[Pod], wide: bool, node: &str) {
    print_pods_rows(pods, wide, node, false, true);
}

fn print_pods_rows(pods: &[Pod], wide: bool, node: &str, watching: bool, header: bool) {
    let mut rows = vec![if wide {
        vec!["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE"]
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>()
    } else {
        vec!["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
            .into_iter()
            .map(String::from)
            .collect()
    }];
    for p in pods {
        let st = p.status.clone().unwrap_or_default();
        let mut row = vec![
            p.metadata.name.clone().unwrap_or_default(),
            ready_column(p),
            pod_status_column(p),
            restarts(p).to_string(),
            age(p
                .metadata
                .creation_timestamp
                .as_ref()
                .or(st.start_time.as_ref())),
        ];
        if wide {
            row.push(st.pod_ip.clone().unwrap_or_else(|| "<none>".into()));
            row.push(node.to_string());
        }
        rows.push(row);
    }
    // Rows printed one change at a time line up with the first header.
    const MIN: [usize; 7] = [24, 7, 20, 10, 6, 15, 10];
    let lines = columns(&rows, if watching { &MIN } else { &[] });
    let skip = usize::from(watching && !header);
    for l in lines.iter().skip(skip) {
        println!("{l}");
    }
}

fn print_data(v: &serde_json::Value, yaml: bool) -> anyhow::Result<()> {
    if yaml {
        print!("{}", serde_norway::to_string(v).context("encode YAML")?);
    } else {
        println!(
            "{}",
            serde_json::to_string_pretty(v).context("encode JSON")?
        );
    }
    Ok(())
}

fn fail(e: &crate::api::client::ClientError) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::FAILURE
}

pub fn get_pods(
    global: &GlobalArgs,
    name: Option<&str>,
    output: Option<PodOutput>,
    ns: &str,
) -> anyhow::Result<ExitCode> {
    let c = client(global)?;
    let node = super::effective_config(global)?.node_name;
    runtime()?.block_on(async {
        let v = match name {
            Some(n) => c.get_json(&pod_path(ns, n)).await,
            None => c.get_json("/api/v1/pods").await,
        };
        let v = match v {
            Ok(v) => v,
            Err(e) => return Ok(fail(&e)),
        };
        match output {
            Some(PodOutput::Json) => print_data(&v, false)?,
            Some(PodOutput::Yaml) => print_data(&v, true)?,
            wide => {
                let pods = if name.is_some() {
                    vec![serde_json::from_value(v).context("decode pod")?]
                } else {
                    to_pods(&v)?
                };
                let pods: Vec<Pod> = pods
                    .into_iter()
                    .filter(|p| name.is_some() || p.metadata.namespace.as_deref() == Some(ns))
                    .collect();
                if pods.is_empty() {
                    eprintln!("No resources found in {ns} namespace.");
                } else {
                    print_pods(
                        &pods,
                        wide == Some(PodOutput::Wide),
                        &crate::pod::node::node_name(&node),
                    );
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn describe_state(s: Option<&ContainerState>, indent: &str) -> String {
    let s = s.cloned().unwrap_or_default();
    let t = |x: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>| {
        x.as_ref().map(|t| t.0.to_string()).unwrap_or_default()
    };
    if let Some(r) = s.running {
        format!("Running\n{indent}  Started:      {}", t(&r.started_at))
    } else if let Some(x) = s.terminated {
        let mut out = format!(
            "Terminated\n{indent}  Reason:       {}",
            x.reason.unwrap_or_default()
        );
        if let Some(m) = x.message.filter(|m| !m.is_empty()) {
            out.push_str(&format!("\n{indent}  Message:      {m}"));
        }
        out.push_str(&format!("\n{indent}  Exit Code:    {}", x.exit_code));
        if let Some(sig) = x.signal {
            out.push_str(&format!("\n{indent}  Signal:       {sig}"));
        }
        out.push_str(&format!(
            "\n{indent}  Started:      {}\n{indent}  Finished:     {}",
            t(&x.started_at),
            t(&x.finished_at)
        ));
        out
    } else if let Some(w) = s.waiting {
        let mut out = format!(
            "Waiting\n{indent}  Reason:       {}",
            w.reason.unwrap_or_default()
        );
        if let Some(m) = w.message {
            out.push_str(&format!("\n{indent}  Message:      {m}"));
        }
        out
    } else {
        "<none>".into()
    }
}

fn describe_containers(
    title: &str,
    list: &[ContainerStatus],
    spec: &[k8s_openapi::api::core::v1::Container],
) -> String {
    if list.is_empty() {
        return String::new();
    }
    let mut out = format!("{title}:\n");
    for c in spec {
        let Some(s) = list.iter().find(|s| s.name == c.name) else {
            continue;
        };
        out.push_str(&format!("  {}:\n", c.name));
        out.push_str(&format!(
            "    Container ID:   {}\n",
            s.container_id.clone().unwrap_or_default()
        ));
        out.push_str(&format!(
            "    Image:          {}\n",
            c.image.clone().unwrap_or_default()
        ));
        out.push_str(&format!("    Image ID:       {}\n", s.image_id));
        if let Some(cmd) = &c.command {
            out.push_str(&format!("    Command:        {}\n", cmd.join(" ")));
        }
        if let Some(a) = &c.args {
            out.push_str(&format!("    Args:           {}\n", a.join(" ")));
        }
        out.push_str(&format!(
            "    State:          {}\n",
            describe_state(s.state.as_ref(), "    ")
        ));
        let last = s
            .last_state
            .as_ref()
            .filter(|l| l.terminated.is_some() || l.running.is_some() || l.waiting.is_some());
        if last.is_some() {
            out.push_str(&format!(
                "    Last State:     {}\n",
                describe_state(last, "    ")
            ));
        }
        out.push_str(&format!(
            "    Ready:          {}\n",
            if s.ready { "True" } else { "False" }
        ));
        out.push_str(&format!("    Restart Count:  {}\n", s.restart_count));
    }
    out
}

pub fn describe_pod(global: &GlobalArgs, name: &str, ns: &str) -> anyhow::Result<ExitCode> {
    let c = client(global)?;
    runtime()?.block_on(async {
        let pod: Pod = match c.get_json(&pod_path(ns, name)).await {
            Ok(v) => serde_json::from_value(v).context("decode pod")?,
            Err(e) => return Ok(fail(&e)),
        };
        let events: Vec<Event> = match c.get_json("/api/v1/events").await {
            Ok(v) => serde_json::from_value(v["items"].clone()).unwrap_or_default(),
            Err(e) => return Ok(fail(&e)),
        };
        let st = pod.status.clone().unwrap_or_default();
        let spec = pod.spec.clone().unwrap_or_default();
        let m = &pod.metadata;
        let kv = |m: &Option<std::collections::BTreeMap<String, String>>| {
            let v: Vec<String> = m
                .iter()
                .flatten()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            if v.is_empty() {
                "<none>".to_string()
            } else {
                v.join("\n              ")
            }
        };
        println!("Name:         {}", m.name.clone().unwrap_or_default());
        println!("Namespace:    {}", m.namespace.clone().unwrap_or_default());
        println!("UID:          {}", m.uid.clone().unwrap_or_default());
        println!(
            "Node:         {}/{}",
            spec.node_name.clone().unwrap_or_default(),
            st.host_ip.clone().unwrap_or_default()
        );
        println!(
            "Start Time:   {}",
            st.start_time
                .as_ref()
                .map(|t| t.0.to_string())
                .unwrap_or_default()
        );
        println!("Labels:       {}", kv(&m.labels));
        println!("Annotations:  {}", kv(&m.annotations));
        println!("Status:       {}", pod_status_column(&pod));
        if let Some(r) = &st.reason {
            println!("Reason:       {r}");
        }
        if let Some(msg) = &st.message {
            println!("Message:      {msg}");
        }
        println!("IP:           {}", st.pod_ip.clone().unwrap_or_default());
        print!(
            "{}",
            describe_containers(
                "Init Containers",
                st.init_container_statuses.as_deref().unwrap_or_default(),
                spec.init_containers.as_deref().unwrap_or_default()
            )
        );
        print!(
            "{}",
            describe_containers(
                "Containers",
                st.container_statuses.as_deref().unwrap_or_default(),
                &spec.containers
            )
        );
        println!("Conditions:\n  Type                        Status");
        for cond in st.conditions.iter().flatten() {
            println!("  {:<27} {}", cond.type_, cond.status);
        }
        println!("QoS Class:    {}", st.qos_class.clone().unwrap_or_default());
        let mine: Vec<&Event> = events
            .iter()
            .filter(|e| e.involved_object.uid == m.uid)
            .collect();
        if mine.is_empty() {
            println!("Events:       <none>");
        } else {
            println!(
                "Events:\n  {:<8} {:<22} {:<10} {:<8} Message",
                "Type", "Reason", "Age", "From"
            );
            println!(
                "  {:<8} {:<22} {:<10} {:<8} -------",
                "----", "------", "----", "----"
            );
            for e in mine {
                let a = if e.count.unwrap_or(1) > 1 {
                    format!(
                        "{} (x{} over {})",
                        age(e.last_timestamp.as_ref()),
                        e.count.unwrap_or(1),
                        age(e.first_timestamp.as_ref())
                    )
                } else {
                    age(e.last_timestamp.as_ref())
                };
                println!(
                    "  {:<8} {:<22} {:<10} {:<8} {}",
                    e.type_.clone().unwrap_or_default(),
                    e.reason.clone().unwrap_or_default(),
                    a,
                    "kubelet",
                    e.message.clone().unwrap_or_default()
                );
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

pub struct LogArgs<'a> {
    pub pod: &'a str,
    pub follow: bool,
    pub container: Option<&'a str>,
    pub previous: bool,
    pub tail: Option<i64>,
    pub timestamps: bool,
    pub namespace: &'a str,
}

pub fn logs(global: &GlobalArgs, a: &LogArgs) -> anyhow::Result<ExitCode> {
    let c = client(global)?;
    let mut q = vec![
        format!("previous={}", a.previous),
        format!("timestamps={}", a.timestamps),
    ];
    if let Some(cn) = a.container {
        q.push(format!("container={cn}"));
    }
    if let Some(t) = a.tail.filter(|t| *t >= 0) {
        q.push(format!("tailLines={t}"));
    }
    if a.follow {
        q.push("follow=true".into());
    }
    let path = format!("{}/log?{}", pod_path(a.namespace, a.pod), q.join("&"));
    runtime()?.block_on(async {
        if a.follow {
            use std::io::Write;
            let mut out = std::io::stdout();
            let r = c
                .stream(&path, |b| {
                    let _ = out.write_all(b);
                    let _ = out.flush();
                })
                .await;
            return Ok(r.map_or_else(|e| fail(&e), |()| ExitCode::SUCCESS));
        }
        match c.call("GET", &path, None).await {
            Ok(b) => {
                use std::io::Write;
                std::io::stdout().write_all(&b).context("write logs")?;
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => Ok(fail(&e)),
        }
    })
}

pub fn exec(
    global: &GlobalArgs,
    pod: &str,
    container: Option<&str>,
    ns: &str,
    command: &[String],
) -> anyhow::Result<ExitCode> {
    let c = client(global)?;
    let req = ExecRequest {
        container: container.map(str::to_string),
        command: command.to_vec(),
        timeout_seconds: None,
    };
    runtime()?.block_on(async {
        let body = serde_json::to_value(&req).context("encode exec request")?;
        match c
            .call("POST", &format!("{}/exec", pod_path(ns, pod)), Some(body))
            .await
        {
            Ok(b) => {
                let r: crate::runtime::api::ExecResult =
                    serde_json::from_slice(&b).context("decode exec result")?;
                print!("{}", r.stdout);
                eprint!("{}", r.stderr);
                if r.timed_out {
                    eprintln!("error: command timed out");
                }
                Ok(ExitCode::from(u8::try_from(r.exit_code).unwrap_or(1)))
            }
            Err(e) => Ok(fail(&e)),
        }
    })
}

pub fn delete_pod(
    global: &GlobalArgs,
    name: &str,
    ns: &str,
    grace: Option<i64>,
    force: bool,
    wait: bool,
) -> anyhow::Result<ExitCode> {
    if force && grace != Some(0) {
        eprintln!("error: --force requires --grace-period=0");
        return Ok(ExitCode::from(super::EXIT_USAGE));
    }
    let c = client(global)?;
    let mut path = pod_path(ns, name);
    if let Some(g) = grace {
        path.push_str(&format!("?gracePeriodSeconds={g}"));
    }
    runtime()?.block_on(async {
        if let Err(e) = c.call("DELETE", &path, None).await {
            return Ok(fail(&e));
        }
        println!("pod \"{name}\" deleted");
        if !wait {
            return Ok(ExitCode::SUCCESS);
        }
        loop {
            match c.get_json(&pod_path(ns, name)).await {
                // Gone from the API, or the `nodelet run` serving it ended
                // (before or while answering).
                Err(
                    crate::api::client::ClientError::Status { code: 404, .. }
                    | crate::api::client::ClientError::Connect { .. }
                    | crate::api::client::ClientError::Http { .. },
                ) => break,
                Ok(v) if matches!(v["status"]["phase"].as_str(), Some("Succeeded" | "Failed")) => {
                    break
                }
                Err(e) => return Ok(fail(&e)),
                Ok(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// `nodelet get --raw PATH`: the reply body as it is.
pub fn get_raw(global: &GlobalArgs, path: &str) -> anyhow::Result<ExitCode> {
    let c = client(global)?;
    runtime()?.block_on(async {
        match c.call("GET", path, None).await {
            Ok(b) => {
                use std::io::Write;
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(&b);
                if !b.ends_with(b"\n") {
                    let _ = out.write_all(b"\n");
                }
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => Ok(fail(&e)),
        }
    })
}

/// kubectl's CPU column: millicores.
fn cpu_cell(v: &serde_json::Value) -> String {
    v["usageNanoCores"]
        .as_u64()
        .map_or_else(|| "<unknown>".into(), |n| format!("{}m", n / 1_000_000))
}

/// kubectl's MEMORY column: the working set in MiB.
fn memory_cell(v: &serde_json::Value) -> String {
    format!("{}Mi", v["workingSetBytes"].as_u64().unwrap_or(0) >> 20)
}

/// `nodelet top pods [-n NS | -A] [--containers]`: usage from
/// `/stats/summary`. CPU is a rate, so a first look without one asks
/// again a second later.
pub fn top_pods(
    global: &GlobalArgs,
    ns: Option<&str>,
    containers: bool,
) -> anyhow::Result<ExitCode> {
    let c = client(global)?;
    runtime()?.block_on(async {
        let mut summary = match c.get_json("/stats/summary").await {
            Ok(v) => v,
            Err(e) => return Ok(fail(&e)),
        };
        let pods = |v: &serde_json::Value| -> Vec<serde_json::Value> {
            v["pods"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| ns.is_none_or(|n| p["podRef"]["namespace"] == n))
                .cloned()
                .collect()
        };
        if pods(&summary)
            .iter()
            .any(|p| p["cpu"]["usageNanoCores"].is_null())
        {
            tokio::time::sleep(Duration::from_secs(1)).await;
            summary = match c.get_json("/stats/summary").await {
                Ok(v) => v,
                Err(e) => return Ok(fail(&e)),
            };
        }
        let mut list = pods(&summary);
        list.sort_by_key(|p| {
            (
                p["podRef"]["namespace"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                p["podRef"]["name"].as_str().unwrap_or_default().to_string(),
            )
        });
        let mut rows = vec![];
        let mut head = vec![];
        if ns.is_none() {
            head.push("NAMESPACE");
        }
        head.extend(if containers {
            vec!["POD", "NAME", "CPU(cores)", "MEMORY(bytes)"]
        } else {
            vec!["NAME", "CPU(cores)", "MEMORY(bytes)"]
        });
        rows.push(head.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        for p in &list {
            let mut lead = vec![];
            if ns.is_none() {
                lead.push(
                    p["podRef"]["namespace"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                );
            }
            let name = p["podRef"]["name"].as_str().unwrap_or_default().to_string();
            if containers {
                for ct in p["containers"].as_array().into_iter().flatten() {
                    let mut r = lead.clone();
                    r.push(name.clone());
                    r.push(ct["name"].as_str().unwrap_or_default().to_string());
                    r.push(cpu_cell(&ct["cpu"]));
                    r.push(memory_cell(&ct["memory"]));
                    rows.push(r);
                }
            } else {
                let mut r = lead;
                r.push(name);
                r.push(cpu_cell(&p["cpu"]));
                r.push(memory_cell(&p["memory"]));
                rows.push(r);
            }
        }
        if rows.len() == 1 {
            eprintln!("No resources found");
            return Ok(ExitCode::SUCCESS);
        }
        for l in columns(&rows, &[]) {
            println!("{l}");
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Left-aligned columns, three spaces apart, as kubectl's tables; each at
/// least as wide as `min` says.
fn columns(rows: &[Vec<String>], min: &[usize]) -> Vec<String> {
    let n = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..n)
        .map(|i| {
            let w = rows.iter().map(|r| r.get(i).map_or(0, String::len)).max();
            w.unwrap_or(0).max(min.get(i).copied().unwrap_or(0))
        })
        .collect();
    rows.iter()
        .map(|r| {
            let cells: Vec<String> = r
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            cells.join("   ").trim_end().to_string()
        })
        .collect()
}

/// `nodelet pause|unpause POD [-c C]`: exit 1 when the pod or container
/// is not running, already paused, or not paused.
pub fn pause(
    global: &GlobalArgs,
    name: &str,
    container: Option<&str>,
    ns: &str,
    freeze: bool,
) -> anyhow::Result<ExitCode> {
    let c = client(global)?;
    let verb = if freeze { "pause" } else { "unpause" };
    let mut path = format!("{}/{verb}", pod_path(ns, name));
    if let Some(cn) = container {
        path.push_str(&format!("?container={cn}"));
    }
    runtime()?.block_on(async {
        if let Err(e) = c.call("POST", &path, None).await {
            return Ok(fail(&e));
        }
        match container {
            Some(cn) => println!("container \"{cn}\" of pod \"{name}\" {verb}d"),
            None => println!("pod \"{name}\" {verb}d"),
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn event_row(e: &Event) -> String {
    format!(
        "{:<9} {:<8} {:<22} {:<28} {}",
        age(e.last_timestamp.as_ref()),
        e.type_.clone().unwrap_or_default(),
        e.reason.clone().unwrap_or_default(),
        format!("pod/{}", e.involved_object.name.clone().unwrap_or_default()),
        e.message.clone().unwrap_or_default()
    )
}

/// Splits a watch stream into its JSON lines and hands each `object` on.
fn watch_lines(buf: &mut Vec<u8>, chunk: &[u8], mut each: impl FnMut(&str, serde_json::Value)) {
    buf.extend_from_slice(chunk);
    while let Some(i) = buf.iter().position(|b| *b == b'\n') {
        let line: Vec<u8> = buf.drain(..=i).collect();
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&line) {
            each(v["type"].as_str().unwrap_or_default(), v["object"].clone());
        }
    }
}

pub fn events(global: &GlobalArgs, watch: bool) -> anyhow::Result<ExitCode> {
    let c = client(global)?;
    runtime()?.block_on(async {
        println!(
            "{:<9} {:<8} {:<22} {:<28} MESSAGE",
            "LAST SEEN", "TYPE", "REASON", "OBJECT"
        );
        if watch {
            let mut buf = Vec::new();
            let r = c
                .stream("/api/v1/events?watch=true", |chunk| {
                    watch_lines(&mut buf, chunk, |_, obj| {
                        if let Ok(e) = serde_json::from_value::<Event>(obj) {
                            println!("{}", event_row(&e));
                        }
                    });
                })
                .await;
            return Ok(r.map_or_else(|e| fail(&e), |()| ExitCode::SUCCESS));
        }
        let events: Vec<Event> = match c.get_json("/api/v1/events").await {
            Ok(v) => serde_json::from_value(v["items"].clone()).context("decode events")?,
            Err(e) => return Ok(fail(&e)),
        };
        for e in events {
            println!("{}", event_row(&e));
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// `get pods -w`: the table, then a row for every change.
pub fn watch_pods(global: &GlobalArgs, ns: &str, wide: bool) -> anyhow::Result<ExitCode> {
    let c = client(global)?;
    let node = crate::pod::node::node_name(&super::effective_config(global)?.node_name);
    runtime()?.block_on(async {
        let mut buf = Vec::new();
        let mut header = true;
        let r = c
            .stream("/api/v1/pods?watch=true", |chunk| {
                watch_lines(&mut buf, chunk, |_, obj| {
                    let Ok(p) = serde_json::from_value::<Pod>(obj) else {
                        return;
                    };
                    if p.metadata.namespace.as_deref() == Some(ns) {
                        print_pods_rows(&[p], wide, &node, true, header);
                        header = false;
                    }
                });
            })
            .await;
        Ok(r.map_or_else(|e| fail(&e), |()| ExitCode::SUCCESS))
    })
}

/// `apply -f`: create each pod, or replace it when its spec changed (a
/// graceful delete, then a create), or leave it when unchanged.
pub fn apply(global: &GlobalArgs, files: &[String], strict: bool) -> anyhow::Result<ExitCode> {
    let prepared = crate::manifest::prepare(files, crate::manifest::PrepareOptions { strict });
    for d in &prepared.diagnostics {
        eprintln!("{d}");
    }
    if prepared.exit_code() != 0 {
        return Ok(ExitCode::from(
            u8::try_from(prepared.exit_code()).unwrap_or(2),
        ));
    }
    let c = client(global)?;
    runtime()?.block_on(async {
        // The objects first: pods that reference them find them at once.
        for cm in prepared.config_maps {
            if let Err(e) = apply_object(&c, cm).await {
                return Ok(fail(&e));
            }
        }
        for secret in prepared.secrets {
            if let Err(e) = apply_object(&c, secret).await {
                return Ok(fail(&e));
            }
        }
        for m in prepared.pods {
            let ns = m
                .pod
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into());
            let name = m.pod.metadata.name.clone().unwrap_or_default();
            let body = serde_json::to_value(&m.pod).context("encode pod")?;
            let create = format!("/api/v1/namespaces/{ns}/pods");
            match c.call("POST", &create, Some(body.clone())).await {
                Ok(_) => println!("pod/{name} created"),
                Err(crate::api::client::ClientError::Status {
                    code: 409, reason, ..
                }) if reason == "AlreadyExists" => {
                    let current: Pod =
                        serde_json::from_value(c.get_json(&pod_path(&ns, &name)).await?)
                            .context("decode pod")?;
                    let mut want = m.pod.spec.clone().unwrap_or_default();
                    let have = current.spec.clone().unwrap_or_default();
                    want.node_name.clone_from(&have.node_name);
                    if want == have {
                        println!("pod/{name} unchanged");
                        continue;
                    }
                    c.call("DELETE", &pod_path(&ns, &name), None).await?;
                    loop {
                        match c.call("POST", &create, Some(body.clone())).await {
                            Ok(_) => break,
                            Err(crate::api::client::ClientError::Status { code: 409, .. }) => {
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                            Err(e) => return Ok(fail(&e)),
                        }
                    }
                    println!("pod/{name} configured");
                }
                Err(e) => return Ok(fail(&e)),
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Creates a ConfigMap or Secret, or replaces it when it exists: prints
/// `<kind>/<name> created|configured|unchanged` as kubectl does.
async fn apply_object<T: crate::pod::objects::Stored>(
    c: &crate::api::client::Client,
    obj: T,
) -> Result<(), crate::api::client::ClientError> {
    let meta = obj.meta();
    let ns = meta.namespace.clone().unwrap_or_else(|| "default".into());
    let name = meta.name.clone().unwrap_or_default();
    let shown = format!("{}/{name}", T::KIND.to_lowercase());
    let body = serde_json::to_value(&obj).unwrap_or_default();
    let collection = format!("/api/v1/namespaces/{ns}/{}", T::RESOURCE);
    match c.call("POST", &collection, Some(body.clone())).await {
        Ok(_) => println!("{shown} created"),
        Err(crate::api::client::ClientError::Status {
            code: 409, reason, ..
        }) if reason == "AlreadyExists" => {
            let path = format!("{collection}/{name}");
            let version = |v: &serde_json::Value| v["metadata"]["resourceVersion"].clone();
            let before = version(&c.get_json(&path).await?);
            let put = c.call("PUT", &path, Some(body)).await?;
            let after = version(&serde_json::from_slice(&put).unwrap_or_default());
            if before == after {
                println!("{shown} unchanged");
            } else {
                println!("{shown} configured");
            }
        }
        Err(e) => return Err(e),
    }
    Ok(())
}

/// `get configmaps|secrets`: one row each, keys counted, values never shown.
pub fn get_objects<T: crate::pod::objects::Stored>(
    global: &GlobalArgs,
    ns: &str,
) -> anyhow::Result<ExitCode> {
    let c = client(global)?;
    runtime()?.block_on(async {
        let v = match c
            .get_json(&format!("/api/v1/namespaces/{ns}/{}", T::RESOURCE))
            .await
        {
            Ok(v) => v,
            Err(e) => return Ok(fail(&e)),
        };
        let items = v["items"].as_array().cloned().unwrap_or_default();
        let secrets = T::KIND == "Secret";
        if secrets {
            println!("{:<32} {:<36} {:<6} AGE", "NAME", "TYPE", "DATA");
        } else {
            println!("{:<32} {:<6} AGE", "NAME", "DATA");
        }
        for o in items {
            let count = |f: &str| o[f].as_object().map_or(0, serde_json::Map::len);
            let keys = count("data") + count("binaryData");
            let name = o["metadata"]["name"].as_str().unwrap_or_default();
            let created = serde_json::from_value(o["metadata"]["creationTimestamp"].clone()).ok();
            let age = age(created.as_ref());
            if secrets {
                let ty = o["type"].as_str().unwrap_or("Opaque");
                println!("{name:<32} {ty:<36} {keys:<6} {age}");
            } else {
                println!("{name:<32} {keys:<6} {age}");
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// `delete configmap|secret NAME`.
pub fn delete_object<T: crate::pod::objects::Stored>(
    global: &GlobalArgs,
    name: &str,
    ns: &str,
) -> anyhow::Result<ExitCode> {
    let c = client(global)?;
    let path = format!("/api/v1/namespaces/{ns}/{}/{name}", T::RESOURCE);
    runtime()?.block_on(async {
        if let Err(e) = c.call("DELETE", &path, None).await {
            return Ok(fail(&e));
        }
        println!("{} \"{name}\" deleted", T::KIND.to_lowercase());
        Ok(ExitCode::SUCCESS)
    })
}

/// `version`: this binary's version and, when one runs, the API's.
pub fn version(global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    println!("Client Version: v{}", env!("CARGO_PKG_VERSION"));
    let c = client(global)?;
    runtime()?.block_on(async {
        match c.get_json("/version").await {
            Ok(v) => println!(
                "Server Version: {}",
                v["gitVersion"].as_str().unwrap_or_default()
            ),
            Err(e) => eprintln!("{e}"),
        }
    });
    Ok(ExitCode::SUCCESS)
}

/// `get sources`: the static pod files the daemon read, and their errors.
pub fn get_sources(global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let c = client(global)?;
    runtime()?.block_on(async {
        let v = match c.get_json("/api/v1/sources").await {
            Ok(v) => v,
            Err(e) => return Ok(fail(&e)),
        };
        let list: Vec<crate::pod::engine::SourceStatus> =
            serde_json::from_value(v["items"].clone()).context("decode sources")?;
        println!("{:<8} {:<48} STATUS", "SOURCE", "FILE");
        for s in list {
            let status = match (&s.pod, &s.error) {
                (_, Some(e)) => format!("error: {e}"),
                (Some(p), None) => format!("pod {p}"),
                (None, None) => String::new(),
            };
            println!("{:<8} {:<48} {status}", s.source, s.path);
        }
        Ok(ExitCode::SUCCESS)
    })
}

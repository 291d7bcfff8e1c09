//! `nodelet image …`: pull, ls, inspect, rm, import, prune.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use super::{DataOutput, GlobalArgs, ImageCommand};
use crate::config::NodeletConfiguration;
use crate::image::digest::Digest;
use crate::image::platform::Platform;
use crate::image::reference::Reference;
use crate::image::registry::Credentials;
use crate::image::store::{ImageStore, Progress, ProgressSink, PullOptions, PullReport};

pub fn run(global: &GlobalArgs, command: ImageCommand) -> anyhow::Result<ExitCode> {
    let cfg = super::effective_config(global)?;
    let rt = super::async_runtime()?;
    // A serving nodelet owns the store: go through it.
    if std::os::unix::net::UnixStream::connect(&cfg.socket).is_ok() {
        let client = crate::api::client::Client::new(&cfg.socket);
        return rt.block_on(remote(&client, command));
    }
    rt.block_on(async move {
        let store = ImageStore::open(&cfg.root_dir).with_context(|| format!("open image store in {}", cfg.root_dir.display()))?;
        match command {
            ImageCommand::Pull { reference, platform, creds, quiet } => pull(&store, &cfg, &reference, platform.as_deref(), creds.as_deref(), quiet).await,
            ImageCommand::Import { path, name } => import(&store, &cfg, &path, name.as_deref()).await,
            ImageCommand::Ls { output } => ls(&store, output),
            ImageCommand::Inspect { reference } => {
                let (rec, manifest, config) = store.inspect(&reference)?;
                let snapshots: Vec<String> = store.lower_dirs(&rec).iter().rev().map(|p| p.display().to_string()).collect();
                let v = serde_json::json!({"image": rec, "manifest": manifest, "config": config, "snapshots": snapshots});
                println!("{}", serde_json::to_string_pretty(&v)?);
                Ok(ExitCode::SUCCESS)
            }
            ImageCommand::Rm { reference, force } => {
                // Pods exist only in the daemon, which lands later; until then
                // no image is in use and --force changes nothing.
                let rec = store.remove(&reference, force, &[])?;
                println!("Untagged: {}", rec.name);
                Ok(ExitCode::SUCCESS)
            }
            ImageCommand::Prune => {
                let (blobs, snaps) = store.prune()?;
                println!("Removed {blobs} blobs and {snaps} snapshots");
                Ok(ExitCode::SUCCESS)
            }
        }
    })
}

/// A query-string value, percent-encoded (RFC 3986 unreserved kept).
fn query_value(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The image commands through the API of a running daemon (or `nodelet
/// run`), which owns the store.
async fn remote(
    client: &crate::api::client::Client,
    command: ImageCommand,
) -> anyhow::Result<ExitCode> {
    use crate::image::metadata::ImageRecord;
    let record = |v: &serde_json::Value| -> anyhow::Result<ImageRecord> {
        Ok(serde_json::from_value(v["image"].clone())?)
    };
    let report = |v: serde_json::Value| -> anyhow::Result<PullReport> {
        Ok(PullReport {
            record: record(&v)?,
            downloaded: v["downloadedBytes"].as_u64().unwrap_or(0),
            reused_layers: usize::try_from(v["reusedLayers"].as_u64().unwrap_or(0)).unwrap_or(0),
            elapsed: std::time::Duration::from_secs_f64(
                v["elapsedSeconds"].as_f64().unwrap_or(0.0),
            ),
        })
    };
    let json = |b: hyper::body::Bytes| -> anyhow::Result<serde_json::Value> {
        Ok(serde_json::from_slice(&b)?)
    };
    match command {
        ImageCommand::Pull {
            reference,
            platform,
            creds,
            quiet,
        } => {
            if !quiet {
                eprintln!("{reference}: pulling through the running nodelet");
            }
            let body =
                serde_json::json!({"image": reference, "platform": platform, "creds": creds});
            let v = json(
                client
                    .call("POST", "/images/pull", Some(body))
                    .await
                    .with_context(|| format!("pull {reference}"))?,
            )?;
            report_line(&report(v)?, quiet, "Pulled");
        }
        ImageCommand::Import { path, name } => {
            let abs = std::fs::canonicalize(&path)
                .with_context(|| format!("import {}", path.display()))?;
            let body = serde_json::json!({"path": abs, "name": name});
            let v = json(
                client
                    .call("POST", "/images/import", Some(body))
                    .await
                    .with_context(|| format!("import {}", path.display()))?,
            )?;
            report_line(&report(v)?, false, "Imported");
        }
        ImageCommand::Ls { output } => {
            let v = client.get_json("/images").await?;
            let images: Vec<ImageRecord> = serde_json::from_value(v["items"].clone())?;
            print_images(&images, output)?;
        }
        ImageCommand::Inspect { reference } => {
            let v = client
                .get_json(&format!("/images/inspect?name={}", query_value(&reference)))
                .await?;
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        ImageCommand::Rm {
            reference,
            force: _,
        } => {
            // The daemon never removes an image a live pod uses, --force
            // or not (crictl rmi refuses as well).
            let v = json(
                client
                    .call(
                        "DELETE",
                        &format!("/images?name={}", query_value(&reference)),
                        None,
                    )
                    .await?,
            )?;
            println!("Untagged: {}", record(&v)?.name);
        }
        ImageCommand::Prune => {
            let v = json(client.call("POST", "/images/prune", None).await?)?;
            println!(
                "Removed {} blobs and {} snapshots",
                v["blobs"], v["snapshots"]
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Credentials for a registry: `--creds`, else the config's `registries.auths`,
/// else `~/.docker/config.json` / `$DOCKER_CONFIG` (with credential helpers).
pub fn credentials_for(
    registry: &str,
    flag: Option<&str>,
    cfg: &NodeletConfiguration,
) -> anyhow::Result<Option<Credentials>> {
    if let Some(f) = flag {
        return Credentials::parse(f)
            .map(Some)
            .context("--creds takes USER:PASSWORD");
    }
    if let Some(a) = cfg.registries.auths.iter().find(|a| a.registry == registry) {
        return Ok(Some(Credentials {
            username: a.username.clone(),
            password: a.password.clone(),
        }));
    }
    let server = if registry == "docker.io" {
        "https://index.docker.io/v1/"
    } else {
        registry
    };
    match docker_credential::get_credential(server) {
        Ok(docker_credential::DockerCredential::UsernamePassword(u, p)) => Ok(Some(Credentials {
            username: u,
            password: p,
        })),
        Ok(docker_credential::DockerCredential::IdentityToken(_)) => {
            tracing::warn!(registry, "docker config holds an identity token, which nodelet does not use yet; pulling anonymously");
            Ok(None)
        }
        Err(_) => Ok(None),
    }
}

fn options(
    cfg: &NodeletConfiguration,
    platform: Option<&str>,
    creds: Option<Credentials>,
) -> anyhow::Result<PullOptions> {
    Ok(PullOptions {
        platform: match platform {
            Some(p) => Platform::parse(p)?,
            None => Platform::host(),
        },
        creds,
        insecure: cfg.registries.insecure.clone(),
        max_concurrent_downloads: usize::try_from(cfg.max_concurrent_downloads).unwrap_or(3),
    })
}

async fn pull(
    store: &Arc<ImageStore>,
    cfg: &NodeletConfiguration,
    reference: &str,
    platform: Option<&str>,
    creds: Option<&str>,
    quiet: bool,
) -> anyhow::Result<ExitCode> {
    let r = Reference::parse(reference)?;
    let creds = credentials_for(&r.registry, creds, cfg)?;
    let opts = options(cfg, platform, creds)?;
    let display = Display::new(quiet);
    let report = store
        .pull(reference, &opts, &display)
        .await
        .with_context(|| format!("pull {r}"))?;
    display.finish();
    report_line(&report, quiet, "Pulled");
    Ok(ExitCode::SUCCESS)
}

async fn import(
    store: &Arc<ImageStore>,
    cfg: &NodeletConfiguration,
    path: &Path,
    name: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let opts = options(cfg, None, None)?;
    let display = Display::new(false);
    let report = store
        .import(path, name, &opts, &display)
        .await
        .with_context(|| format!("import {}", path.display()))?;
    display.finish();
    report_line(&report, false, "Imported");
    Ok(ExitCode::SUCCESS)
}

fn report_line(report: &PullReport, quiet: bool, verb: &str) {
    let rec = &report.record;
    if quiet {
        println!("{}", rec.repo_digest());
    } else {
        println!(
            "{verb} {} ({}) in {:.3}s, {}",
            rec.name,
            rec.repo_digest(),
            report.elapsed.as_secs_f64(),
            human_size(rec.size)
        );
    }
}

/// Decimal units, as `docker images` prints them.
pub fn human_size(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < UNITS.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n}B")
    } else {
        format!("{v:.3}{}", UNITS[u]).replace(".000", "")
    }
}

fn ls(store: &ImageStore, output: Option<DataOutput>) -> anyhow::Result<ExitCode> {
    print_images(&store.list()?, output)?;
    Ok(ExitCode::SUCCESS)
}

fn print_images(
    images: &[crate::image::metadata::ImageRecord],
    output: Option<DataOutput>,
) -> anyhow::Result<()> {
    match output {
        Some(DataOutput::Json) => println!("{}", serde_json::to_string_pretty(&images)?),
        Some(DataOutput::Yaml) => print!("{}", serde_norway::to_string(&images)?),
        None => {
            let rows: Vec<[String; 5]> = images
                .iter()
                .map(|i| {
                    [
                        i.repository.clone(),
                        i.tag.clone().unwrap_or_else(|| "<none>".into()),
                        i.repo_digest().short().to_string(),
                        human_size(i.size),
                        i.created.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            print_table(&["REPOSITORY", "TAG", "DIGEST", "SIZE", "CREATED"], &rows);
        }
    }
    Ok(())
}

pub fn print_table<const N: usize>(header: &[&str; N], rows: &[[String; N]]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == N {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}   ", w = widths[i]));
            }
        }
        println!("{}", s.trim_end());
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

/// Per-layer progress bars on a terminal; one line per finished layer otherwise.
struct Display {
    multi: Option<MultiProgress>,
    bars: Mutex<HashMap<Digest, ProgressBar>>,
    quiet: bool,
}

impl Display {
    fn new(quiet: bool) -> Self {
        let multi = (!quiet && std::io::stderr().is_terminal()).then(MultiProgress::new);
        Display {
            multi,
            bars: Mutex::new(HashMap::new()),
            quiet,
        }
    }

    fn finish(&self) {
        if let Some(m) = &self.multi {
            let _ = m.clear();
        }
    }
}

impl ProgressSink for Display {
    fn event(&self, p: Progress) {
        if self.quiet {
            return;
        }
        let mut bars = self
            .bars
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match p {
            Progress::Resolved {
                reference,
                manifest,
                layers,
            } => {
                if let Some(m) = &self.multi {
                    let style = ProgressStyle::with_template(
                        "{prefix} {bar:30} {bytes}/{total_bytes} {msg}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar());
                    for (d, size) in layers {
                        let b = m.add(ProgressBar::new(size));
                        b.set_style(style.clone());
                        b.set_prefix(d.short().to_string());
                        bars.insert(d, b);
                    }
                } else {
                    eprintln!("{reference}: resolved {manifest}, {} layers", layers.len());
                }
            }
            Progress::LayerBytes { digest, done } => {
                if let Some(b) = bars.get(&digest) {
                    b.set_position(done);
                }
            }
            Progress::LayerReused { digest } => match bars.get(&digest) {
                Some(b) => b.finish_with_message("already present"),
                None => eprintln!("{}: already present", digest.short()),
            },
            Progress::LayerDone { digest } => match bars.get(&digest) {
                Some(b) => b.finish_with_message("done"),
                None => eprintln!("{}: pulled and unpacked", digest.short()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(
            query_value("127.0.0.1:5000/a/b:1@sha256:ab"),
            "127.0.0.1%3A5000%2Fa%2Fb%3A1%40sha256%3Aab"
        );
    }

    #[test]
    fn sizes_print_in_decimal_units() {
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(2_154_823), "2.155MB");
        assert_eq!(human_size(5_000_000), "5MB");
    }
}

//! `nodelet validate`: every error and warning; exit 0 valid, 1 invalid,
//! 2 unreadable input. With `-o json|yaml` the defaulted pods are printed
//! on stdout as a `v1` `List`.

use std::process::ExitCode;

use anyhow::Context;

use super::DataOutput;
use crate::manifest::{self, PrepareOptions};

pub fn run(files: &[String], output: Option<DataOutput>, strict: bool) -> anyhow::Result<ExitCode> {
    let prepared = manifest::prepare(files, PrepareOptions { strict });
    for d in &prepared.diagnostics {
        eprintln!("{d}");
    }
    let code = prepared.exit_code();
    match output {
        Some(format) if code == 0 => {
            let list = serde_json::json!({
                "apiVersion": "v1",
                "kind": "List",
                "metadata": {},
                "items": prepared.pods.iter().map(|p| &p.pod).collect::<Vec<_>>(),
            });
            let text = match format {
                DataOutput::Json => {
                    serde_json::to_string_pretty(&list).context("encode pods as JSON")? + "\n"
                }
                DataOutput::Yaml => {
                    serde_norway::to_string(&list).context("encode pods as YAML")?
                }
            };
            print!("{text}");
        }
        Some(_) => {}
        None => {
            for p in &prepared.pods {
                let meta = &p.pod.metadata;
                println!(
                    "{}: pod \"{}/{}\" is valid",
                    p.origin,
                    meta.namespace.as_deref().unwrap_or_default(),
                    meta.name.as_deref().unwrap_or_default()
                );
            }
        }
    }
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(2)))
}

//! Builds the test images (the same code the integration tests use) into an
//! OCI layout, for `make bench` and for trying nodelet by hand:
//!
//!     cargo run --example testbed -- DIR [--big]
//!
//! Tags: busybox-1, layered-1, multiarch-1, zstd-1, and with --big, big-1
//! (5 layers of incompressible data, about 100 MB compressed).

#![allow(clippy::unwrap_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use common::oci::{base_layer, layer, noise, Comp, LayoutBuilder};
use common::tarball::Layer;
use serde_json::json;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(dir) = args.first() else {
        eprintln!("usage: testbed DIR [--big]");
        std::process::exit(2);
    };
    let big = args.iter().any(|a| a == "--big");
    let mut lb = LayoutBuilder::new(std::path::Path::new(dir));
    let base = base_layer();
    let small = lb.image(&[layer(&base, Comp::Gzip)], "amd64", &["sh"], json!({}));
    lb.tag(small.clone(), "busybox-1");
    // `make run` imports it as 127.0.0.1:5000/nodelet/busybox:1 (tag "1").
    lb.tag(small.clone(), "1");
    let z = lb.image(&[layer(&base, Comp::Zstd)], "amd64", &["sh"], json!({}));
    lb.tag(z, "zstd-1");
    if big {
        let layers: Vec<_> = (0..5u64)
            .map(|i| {
                let mut l = Layer::new().dir(&format!("data{i}"), 0o755);
                // Many files, like a real image, of data that does not compress.
                for f in 0..200u64 {
                    l = l.file(&format!("data{i}/f{f}"), &noise(100 * 1024, i * 1000 + f));
                }
                layer(&l.build(), Comp::Gzip)
            })
            .collect();
        let img = lb.image(&layers, "amd64", &["sh"], json!({}));
        lb.tag(img, "big-1");
    }
    lb.finish();
    println!("{dir}");
}

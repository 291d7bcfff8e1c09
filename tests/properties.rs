//! Property tests (proptest, a fixed number of cases each, so `make test`
//! takes the same time every run): hostile or random input never panics a
//! parser, and what a parser accepts means what it should. Layer unpacking
//! needs root (ownership, xattrs); the rest does not.

#![allow(clippy::unwrap_used, clippy::needless_pass_by_value)]

mod common;

use std::cell::Cell;

use nodelet::manifest::bounded::{budget_for, value, Paths};
use nodelet::probe::http1::Reader;
use nodelet::runtime::native::protocol::{Op, Request};
use proptest::prelude::*;
use serde_json::Value;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// JSON values a few levels deep: what manifests are made of.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        "[a-zA-Z0-9 _./:-]{0,20}".prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-z][a-zA-Z0-9]{0,8}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn decode_json(text: &str) -> Result<Value, String> {
    let budget = Cell::new(budget_for(text.len()));
    let mut de = serde_json::Deserializer::from_str(text);
    value(&mut de, &budget, Paths::Named).map_err(|e| e.to_string())
}

fn decode_yaml(text: &str) -> Result<Value, String> {
    let budget = Cell::new(budget_for(text.len()));
    let Some(doc) = serde_norway::Deserializer::from_str(text).next() else {
        return Ok(Value::Null);
    };
    value(doc, &budget, Paths::LeftToDecoder).map_err(|e| e.to_string())
}

proptest! {
    #![proptest_config(config())]

    /// Manifest decoding: a value written as JSON or YAML comes back the same.
    #[test]
    fn manifest_values_round_trip_through_the_bounded_decoder(v in json_value()) {
        let json = serde_json::to_string(&v).unwrap();
        prop_assert_eq!(decode_json(&json).unwrap(), v.clone());
        let yaml = serde_norway::to_string(&v).unwrap();
        prop_assert_eq!(decode_yaml(&yaml).unwrap(), v);
    }

    /// Manifest decoding: any text is decoded or refused, never a panic, and
    /// what is decoded stays within the expansion budget.
    #[test]
    fn any_manifest_text_is_decoded_or_refused(text in "[a-z:{}\\[\\]&*,\\- \n\"'0-9]{0,300}") {
        for v in [decode_yaml(&text), decode_json(&text)].into_iter().flatten() {
            prop_assert!(v.to_string().len() <= budget_for(text.len()) * 2);
        }
    }

    /// The shim protocol: a request survives encoding, and bytes that are
    /// not a request are refused, never a panic.
    #[test]
    fn shim_requests_round_trip_and_garbage_is_refused(
        id in "[a-f0-9]{1,64}",
        signal in 1i32..64,
        args in prop::collection::vec("[ -~]{0,20}", 0..5),
        timeout_ms in any::<u64>(),
        garbage in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        for op in [
            Op::Start { id: id.clone() },
            Op::State { id: id.clone() },
            Op::List,
            Op::Remove { id: id.clone() },
            Op::Signal { id: id.clone(), signal, kill_at: None },
            Op::Exec { id: id.clone(), args: args.clone(), timeout_ms, max_output: 1024 },
        ] {
            let r = Request { v: 1, op };
            let text = serde_json::to_vec(&r).unwrap();
            prop_assert_eq!(serde_json::from_slice::<Request>(&text).unwrap(), r);
        }
        let _ = serde_json::from_slice::<Request>(&garbage);
    }

    /// The HTTP/1 reader: a response read in any number of pieces is the
    /// same response.
    #[test]
    fn http_responses_read_the_same_however_they_are_split(
        code in 200u16..600,
        body in prop::collection::vec(any::<u8>(), 0..300),
        cuts in prop::collection::vec(0usize..400, 0..6),
        chunked in any::<bool>(),
    ) {
        let mut wire = format!("HTTP/1.1 {code} X\r\n").into_bytes();
        if chunked {
            wire.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
            for part in body.chunks(37) {
                wire.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
                wire.extend_from_slice(part);
                wire.extend_from_slice(b"\r\n");
            }
            wire.extend_from_slice(b"0\r\n\r\n");
        } else {
            wire.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
            wire.extend_from_slice(&body);
        }
        let mut points: Vec<usize> = cuts.into_iter().map(|c| c.min(wire.len())).collect();
        points.sort_unstable();
        let mut reader = Reader::new(10_000);
        let mut got = None;
        let mut last = 0;
        for p in points.into_iter().chain(std::iter::once(wire.len())) {
            if let Some(r) = reader.push(&wire[last..p]).unwrap() {
                got = Some(r);
                break;
            }
            last = p;
        }
        let r = match got {
            Some(r) => r,
            None => reader.end().unwrap(),
        };
        prop_assert_eq!(r.code, code);
        let want: &[u8] = if matches!(code, 204 | 304) { &[] } else { &body };
        prop_assert_eq!(r.body.as_slice(), want);
    }

    /// The HTTP/1 reader: arbitrary bytes give a response or an error,
    /// never a panic, and never more body than asked for.
    #[test]
    fn any_bytes_from_a_server_are_read_or_refused(
        bytes in prop::collection::vec(any::<u8>(), 0..500),
        prefix in any::<bool>(),
    ) {
        let mut wire = if prefix { b"HTTP/1.1 200 OK\r\n".to_vec() } else { Vec::new() };
        wire.extend_from_slice(&bytes);
        let mut reader = Reader::new(64);
        match reader.push(&wire) {
            Ok(Some(r)) => prop_assert!(r.body.len() <= 64),
            Ok(None) => {
                if let Ok(r) = reader.end() {
                    prop_assert!(r.body.len() <= 64);
                }
            }
            Err(_) => {}
        }
    }
}

/// Layer unpack: entries with any names (`..`, absolute, through
/// symlinks) are unpacked inside the snapshot or refused; nothing outside
/// it is ever written.
#[test]
fn unpacked_layers_never_write_outside_the_snapshot() {
    if !common::require_root() {
        return;
    }
    let segment = prop_oneof![
        Just("..".to_string()),
        Just(".".to_string()),
        Just("".to_string()),
        Just("link".to_string()),
        Just("outside".to_string()),
        "[a-c]{1,3}".prop_map(|s| s),
    ];
    let name = prop::collection::vec(segment, 1..5).prop_map(|s| s.join("/"));
    let entry = (name.clone(), 0u8..3, name);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 128,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    // Some layers must unpack, or the property says nothing.
    let unpacked = std::cell::Cell::new(0usize);
    runner
        .run(&prop::collection::vec(entry, 1..8), |entries| {
            let tmp = tempfile::tempdir().unwrap();
            let snap = tmp.path().join("snap");
            std::fs::create_dir(&snap).unwrap();
            std::fs::create_dir(tmp.path().join("outside")).unwrap();
            std::fs::write(tmp.path().join("outside/canary"), b"untouched").unwrap();
            let mut layer = common::tarball::Layer::new();
            for (path, kind, target) in &entries {
                let path = if path.trim_matches('/').is_empty() {
                    "x"
                } else {
                    path.as_str()
                };
                layer = match kind {
                    0 => layer.file(path, b"data"),
                    1 => layer.symlink(path, &format!("../../{target}")),
                    _ => layer.dir(path, 0o755),
                };
            }
            let bytes = layer.build();
            if let Ok(mut a) = nodelet::image::unpack::LayerApplier::new(&snap) {
                if a.apply(&bytes[..]).is_ok() && a.finish(&[]).is_ok() {
                    unpacked.set(unpacked.get() + 1);
                }
            }
            let mut names: Vec<String> = std::fs::read_dir(tmp.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            prop_assert_eq!(names, ["outside", "snap"]);
            prop_assert_eq!(
                std::fs::read_dir(tmp.path().join("outside"))
                    .unwrap()
                    .count(),
                1
            );
            prop_assert_eq!(
                std::fs::read(tmp.path().join("outside/canary")).unwrap(),
                b"untouched"
            );
            Ok(())
        })
        .unwrap();
    assert!(unpacked.get() > 0, "no generated layer unpacked");
}

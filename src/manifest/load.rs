//! Reading Kubernetes objects from files, directories and stdin.
//!
//! YAML (multi-document) or JSON; `v1` `Pod`, `List` of objects, `ConfigMap`
//! and `Secret`. Decoding is strict like `kubectl apply --validate=strict`:
//! an unknown field is an error naming its path.

use std::fmt;
use std::io::Read;
use std::path::{Path as FsPath, PathBuf};

use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// kubectl and the API server cap a request at 3 MiB; a single manifest file
/// bigger than this is almost certainly a mistake (a log, a binary).
pub const MAX_MANIFEST_BYTES: u64 = 1024 * 1024;

/// Kinds we read, all in `apiVersion: v1`.
pub const SUPPORTED_KINDS: &[&str] = &["Pod", "List", "ConfigMap", "Secret"];

/// Where an object came from, for messages: `pods.yaml (document 2, items[1])`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: String,
    /// 1-based document number within the file.
    pub document: usize,
    /// Whether the file holds more than one document (then messages name it).
    pub multi_document: bool,
    /// Index inside a `kind: List`.
    pub item: Option<usize>,
}

impl Origin {
    fn new(file: &str, document: usize) -> Self {
        Origin {
            file: file.to_string(),
            document,
            multi_document: false,
            item: None,
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        match (self.multi_document, self.item) {
            (false, None) => Ok(()),
            (true, None) => write!(f, " (document {})", self.document),
            (false, Some(i)) => write!(f, " (items[{i}])"),
            (true, Some(i)) => write!(f, " (document {}, items[{i}])", self.document),
        }
    }
}

/// A decoded object.
#[derive(Debug, Clone)]
pub enum Object {
    Pod(Box<Pod>),
    ConfigMap(Box<ConfigMap>),
    Secret(Box<Secret>),
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: file is {size} bytes, larger than the {MAX_MANIFEST_BYTES}-byte (1 MiB) limit for a manifest", path.display())]
    TooLarge { path: PathBuf, size: u64 },
    #[error("{}: not a text file: invalid UTF-8 at byte {offset}", path.display())]
    NotUtf8 { path: PathBuf, offset: usize },
    #[error("{}: no manifests in directory (looked for *.yaml, *.yml, *.json; dotfiles are skipped)", path.display())]
    NoManifests { path: PathBuf },
    #[error("{file}: no Kubernetes objects in file (empty or only empty documents)")]
    Empty { file: String },
    #[error("{origin}: YAML syntax error at line {line}, column {column}: {message}")]
    YamlSyntax {
        origin: Origin,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{origin}: JSON syntax error at line {line}, column {column}: {message}")]
    JsonSyntax {
        origin: Origin,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{origin}: document is not an object (found {found}); expected a Kubernetes object with apiVersion and kind")]
    NotAnObject { origin: Origin, found: &'static str },
    #[error("{origin}: {field}: Required value: every object needs apiVersion and kind")]
    MissingTypeMeta { origin: Origin, field: &'static str },
    #[error("{origin}: unsupported object apiVersion {api_version:?}, kind {kind:?} (supported: apiVersion \"v1\" with kind Pod, List, ConfigMap or Secret)")]
    UnsupportedKind {
        origin: Origin,
        api_version: String,
        kind: String,
    },
    #[error("{origin}: {field}: unknown field {name:?}")]
    UnknownField {
        origin: Origin,
        field: String,
        name: String,
    },
    #[error("{origin}: {field}: {message}")]
    Decode {
        origin: Origin,
        field: String,
        message: String,
    },
}

impl LoadError {
    /// Input that could not be read at all (exit code 2) as opposed to input
    /// that was read and found invalid (exit code 1).
    pub fn is_unreadable(&self) -> bool {
        matches!(
            self,
            LoadError::Read { .. }
                | LoadError::TooLarge { .. }
                | LoadError::NotUtf8 { .. }
                | LoadError::NoManifests { .. }
        )
    }
}

/// Everything read from a set of inputs: the objects that decoded, and an
/// error for each one that did not. Loading never stops at the first error.
#[derive(Debug, Default)]
pub struct Loaded {
    pub objects: Vec<(Origin, Object)>,
    pub errors: Vec<LoadError>,
}

/// Reads every input: a file, a directory (its `*.yaml|*.yml|*.json`
/// files, sorted, no recursion, dotfiles skipped) or `-` for stdin.
pub fn load_inputs(inputs: &[String]) -> Loaded {
    let mut out = Loaded::default();
    for input in inputs {
        if input == "-" {
            let mut buf = Vec::new();
            let res = std::io::stdin()
                .take(MAX_MANIFEST_BYTES + 1)
                .read_to_end(&mut buf);
            match res {
                Ok(_) => load_bytes("<stdin>", FsPath::new("<stdin>"), &buf, &mut out),
                Err(source) => out.errors.push(LoadError::Read {
                    path: PathBuf::from("<stdin>"),
                    source,
                }),
            }
            continue;
        }
        let path = FsPath::new(input);
        match std::fs::metadata(path) {
            Ok(m) if m.is_dir() => load_dir(path, &mut out),
            Ok(_) => load_file(path, &mut out),
            Err(source) => out.errors.push(LoadError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }
    out
}

fn load_dir(dir: &FsPath, out: &mut Loaded) {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(source) => {
            out.errors.push(LoadError::Read {
                path: dir.to_path_buf(),
                source,
            });
            return;
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| is_manifest_name(p) && p.is_file())
        .collect();
    files.sort();
    if files.is_empty() {
        out.errors.push(LoadError::NoManifests {
            path: dir.to_path_buf(),
        });
    }
    for f in files {
        load_file(&f, out);
    }
}

/// `*.yaml|*.yml|*.json`, not a dotfile (editors' swap files, `..data` links).
pub fn is_manifest_name(p: &FsPath) -> bool {
    let Some(name) = p.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    !name.starts_with('.')
        && matches!(
            p.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        )
}

fn load_file(path: &FsPath, out: &mut Loaded) {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(source) => {
            out.errors.push(LoadError::Read {
                path: path.to_path_buf(),
                source,
            });
            return;
        }
    };
    let mut buf = Vec::new();
    if let Err(source) = file.take(MAX_MANIFEST_BYTES + 1).read_to_end(&mut buf) {
        out.errors.push(LoadError::Read {
            path: path.to_path_buf(),
            source,
        });
        return;
    }
    load_bytes(&path.display().to_string(), path, &buf, out);
}

fn load_bytes(name: &str, path: &FsPath, buf: &[u8], out: &mut Loaded) {
    if buf.len() as u64 > MAX_MANIFEST_BYTES {
        let size = std::fs::metadata(path).map_or(buf.len() as u64, |m| m.len());
        out.errors.push(LoadError::TooLarge {
            path: path.to_path_buf(),
            size,
        });
        return;
    }
    let text = match std::str::from_utf8(buf) {
        Ok(t) => t,
        Err(e) => {
            out.errors.push(LoadError::NotUtf8 {
                path: path.to_path_buf(),
                offset: e.valid_up_to(),
            });
            return;
        }
    };
    let before = out.objects.len() + out.errors.len();
    let (docs, syntax) = parse_documents(name, text, &mut out.errors);
    let multi = docs.len() > 1;
    for (document, value) in docs {
        let mut origin = Origin::new(name, document);
        origin.multi_document = multi;
        decode_object(origin, value, syntax, out);
    }
    if out.objects.len() + out.errors.len() == before {
        out.errors.push(LoadError::Empty {
            file: name.to_string(),
        });
    }
}

/// How a document was written; YAML scalars get YAML 1.1 treatment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Syntax {
    Json,
    Yaml,
}

/// Splits text into non-empty documents (1-based numbers). JSON input (first
/// non-blank byte `{` or `[`) goes through serde_json for precise errors.
fn parse_documents(
    name: &str,
    text: &str,
    errors: &mut Vec<LoadError>,
) -> (Vec<(usize, Value)>, Syntax) {
    let mut docs = Vec::new();
    let first = text.trim_start().as_bytes().first().copied();
    if matches!(first, Some(b'{' | b'[')) {
        // One budget for the whole file: many documents cannot add up past it.
        let budget = std::cell::Cell::new(super::bounded::budget_for(text.len()));
        let mut de = serde_json::Deserializer::from_str(text);
        let mut i = 0;
        while de.end().is_err() {
            i += 1;
            match super::bounded::value(&mut de, &budget, super::bounded::Paths::Named) {
                Ok(v) => docs.push((i, v)),
                Err(e) => {
                    errors.push(LoadError::JsonSyntax {
                        origin: Origin::new(name, i),
                        line: e.line(),
                        column: e.column(),
                        message: strip_location(&e.to_string()),
                    });
                    break;
                }
            }
        }
        return (docs, Syntax::Json);
    }
    if let Some((line, column)) = super::bounded::flow_depth_past_limit(text) {
        // Refused before the YAML scanner, whose cost grows with the
        // square of the depth, ever sees it.
        let document = 1 + text
            .lines()
            .take(line.saturating_sub(1))
            .filter(|l| l.starts_with("---"))
            .count();
        errors.push(LoadError::YamlSyntax {
            origin: Origin::new(name, document),
            line,
            column,
            message: format!(
                "nested deeper than {} levels (limit on nesting)",
                super::bounded::MAX_DEPTH
            ),
        });
        return (docs, Syntax::Yaml);
    }
    let budget = std::cell::Cell::new(super::bounded::budget_for(text.len()));
    for (i, doc) in serde_norway::Deserializer::from_str(text).enumerate() {
        match super::bounded::value(doc, &budget, super::bounded::Paths::LeftToDecoder) {
            Ok(Value::Null) => {} // an empty document between `---` markers
            Ok(v) => docs.push((i + 1, v)),
            Err(e) => {
                let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
                errors.push(LoadError::YamlSyntax {
                    origin: Origin::new(name, i + 1),
                    line,
                    column,
                    message: strip_location(&e.to_string()),
                });
                // libyaml cannot resume after a syntax error.
                break;
            }
        }
    }
    (docs, Syntax::Yaml)
}

/// serde_json and serde_norway append " at line L column C"; we print the
/// location ourselves. A path prefix of a hundred levels (a document
/// refused for its nesting) keeps its two ends.
fn strip_location(msg: &str) -> String {
    let msg = match msg.find(" at line ") {
        Some(i) => &msg[..i],
        None => msg,
    };
    const KEEP: usize = 40;
    match msg.split_once(": ") {
        Some((path, rest)) if path.len() > 3 * KEEP && path.is_ascii() => {
            format!("{}…{}: {rest}", &path[..KEEP], &path[path.len() - KEEP..])
        }
        _ => msg.to_string(),
    }
}

fn value_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn decode_object(origin: Origin, value: Value, syntax: Syntax, out: &mut Loaded) {
    let Value::Object(map) = &value else {
        out.errors.push(LoadError::NotAnObject {
            origin,
            found: value_kind(&value),
        });
        return;
    };
    let text = |k: &str| {
        map.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let (api_version, kind) = (text("apiVersion"), text("kind"));
    if api_version.is_empty() {
        out.errors.push(LoadError::MissingTypeMeta {
            origin,
            field: "apiVersion",
        });
        return;
    }
    if kind.is_empty() {
        out.errors.push(LoadError::MissingTypeMeta {
            origin,
            field: "kind",
        });
        return;
    }
    if api_version != "v1" || !SUPPORTED_KINDS.contains(&kind.as_str()) {
        out.errors.push(LoadError::UnsupportedKind {
            origin,
            api_version,
            kind,
        });
        return;
    }
    match kind.as_str() {
        "List" => decode_list(origin, value, syntax, out),
        "Pod" => push_decoded(origin, value, syntax, out, |p: Pod| {
            Object::Pod(Box::new(p))
        }),
        "ConfigMap" => push_decoded(origin, value, syntax, out, |c: ConfigMap| {
            Object::ConfigMap(Box::new(c))
        }),
        _ => push_decoded(origin, value, syntax, out, |s: Secret| {
            Object::Secret(Box::new(s))
        }),
    }
}

fn decode_list(origin: Origin, mut value: Value, syntax: Syntax, out: &mut Loaded) {
    let items = match value.get_mut("items").map(Value::take) {
        Some(Value::Array(items)) => items,
        Some(Value::Null) | None => Vec::new(),
        Some(other) => {
            out.errors.push(LoadError::Decode {
                origin,
                field: "items".into(),
                message: format!("invalid type: {}, expected a list", value_kind(&other)),
            });
            return;
        }
    };
    if let Value::Object(map) = &value {
        for key in map
            .keys()
            .filter(|k| !matches!(k.as_str(), "apiVersion" | "kind" | "items" | "metadata"))
        {
            out.errors.push(LoadError::UnknownField {
                origin: origin.clone(),
                field: key.clone(),
                name: key.clone(),
            });
        }
    }
    for (i, item) in items.into_iter().enumerate() {
        let mut o = origin.clone();
        o.item = Some(i);
        if matches!(item.get("kind").and_then(Value::as_str), Some("List")) {
            out.errors.push(LoadError::UnsupportedKind {
                origin: o,
                api_version: "v1".into(),
                kind: "List".into(),
            });
            continue;
        }
        decode_object(o, item, syntax, out);
    }
}

fn push_decoded<T: DeserializeOwned>(
    origin: Origin,
    value: Value,
    syntax: Syntax,
    out: &mut Loaded,
    wrap: impl FnOnce(T) -> Object,
) {
    let decoded = match syntax {
        Syntax::Json => decode_strict::<T>(&value),
        Syntax::Yaml => decode_strict_yaml11::<T>(value),
    };
    match decoded {
        Ok(obj) => out.objects.push((origin, wrap(obj))),
        Err(errs) => out.errors.extend(errs.into_iter().map(|e| match e {
            StrictError::Unknown { field, name } => LoadError::UnknownField {
                origin: origin.clone(),
                field,
                name,
            },
            StrictError::Type { field, message } => LoadError::Decode {
                origin: origin.clone(),
                field,
                message,
            },
        })),
    }
}

pub(crate) enum StrictError {
    Unknown { field: String, name: String },
    Type { field: String, message: String },
}

/// kubectl reads YAML with go-yaml v2 (YAML 1.1) into typed fields: an
/// unquoted `0400` in an integer field is octal 256, `yes`/`on` in a boolean
/// field is true. serde_norway follows YAML 1.2 and hands such scalars over
/// as strings, so when a typed field rejects a string that is a YAML 1.1
/// literal of the wanted type, we convert it in place and decode again.
fn decode_strict_yaml11<T: DeserializeOwned>(mut value: Value) -> Result<T, Vec<StrictError>> {
    // Each round fixes one scalar; a manifest has few such literals.
    for _ in 0..256 {
        match decode_once::<T>(&value) {
            Err(DecodeFailure::Type {
                path,
                message,
                unknown,
            }) => {
                let fixed = value_at(&mut value, &path).and_then(|slot| {
                    let s = slot.as_str()?;
                    let new = yaml11_scalar(s, message.contains("expected a boolean"))?;
                    *slot = new;
                    Some(())
                });
                if fixed.is_none() {
                    return Err(DecodeFailure::Type {
                        path,
                        message,
                        unknown,
                    }
                    .into_errors());
                }
            }
            other => return other.map_err(DecodeFailure::into_errors),
        }
    }
    decode_strict(&value)
}

/// A YAML 1.1 int (`0o`-less octal `0644`, `0x1f`, `0b101`, `1_000`) or, when
/// a boolean is wanted, a YAML 1.1 bool (`yes`, `On`, `n`…).
fn yaml11_scalar(s: &str, want_bool: bool) -> Option<Value> {
    if want_bool {
        return match s {
            "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" | "true" | "True" | "TRUE" => {
                Some(Value::Bool(true))
            }
            "n" | "N" | "no" | "No" | "NO" | "off" | "Off" | "OFF" | "false" | "False"
            | "FALSE" => Some(Value::Bool(false)),
            _ => None,
        };
    }
    let (neg, body) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let body = body.replace('_', "");
    let (digits, radix) = if let Some(h) = body.strip_prefix("0x") {
        (h.to_string(), 16)
    } else if let Some(b) = body.strip_prefix("0b") {
        (b.to_string(), 2)
    } else if body.len() > 1 && body.starts_with('0') {
        (body[1..].to_string(), 8)
    } else {
        (body, 10)
    };
    if digits.is_empty() {
        return None;
    }
    let v = i64::from_str_radix(&digits, radix).ok()?;
    Some(Value::from(if neg { -v } else { v }))
}

/// The value at a serde_path_to_error path.
fn value_at<'a>(root: &'a mut Value, path: &serde_path_to_error::Path) -> Option<&'a mut Value> {
    use serde_path_to_error::Segment;
    let mut cur = root;
    for seg in path.iter() {
        cur = match seg {
            Segment::Seq { index } => cur.get_mut(*index)?,
            Segment::Map { key } => cur.get_mut(key.as_str())?,
            Segment::Enum { .. } | Segment::Unknown => return None,
        };
    }
    Some(cur)
}

enum DecodeFailure {
    Unknown(Vec<(String, String)>),
    Type {
        path: serde_path_to_error::Path,
        message: String,
        unknown: Vec<(String, String)>,
    },
}

impl DecodeFailure {
    fn into_errors(self) -> Vec<StrictError> {
        let unknown_errs = |u: Vec<(String, String)>| {
            u.into_iter()
                .map(|(field, name)| StrictError::Unknown { field, name })
        };
        match self {
            DecodeFailure::Unknown(u) => unknown_errs(u).collect(),
            DecodeFailure::Type {
                path,
                message,
                unknown,
            } => {
                let mut errs: Vec<StrictError> = unknown_errs(unknown).collect();
                errs.push(StrictError::Type {
                    field: path.to_string(),
                    message,
                });
                errs
            }
        }
    }
}

fn decode_once<T: DeserializeOwned>(value: &Value) -> Result<T, DecodeFailure> {
    let mut unknown = Vec::new();
    let res: Result<T, _> = {
        let mut record = |p: serde_ignored::Path<'_>| unknown.push(ignored_path(&p));
        let de = serde_ignored::Deserializer::new(value, &mut record);
        serde_path_to_error::deserialize(de)
    };
    match res {
        Ok(v) if unknown.is_empty() => Ok(v),
        Ok(_) => Err(DecodeFailure::Unknown(unknown)),
        Err(e) => {
            let path = e.path().clone();
            let message = e.into_inner().to_string();
            Err(DecodeFailure::Type {
                path,
                message,
                unknown,
            })
        }
    }
}

/// Decodes `T`, failing on any field `T` does not know (k8s-openapi types
/// skip unknown fields silently) and naming the path of a type error.
pub(crate) fn decode_strict<T: DeserializeOwned>(value: &Value) -> Result<T, Vec<StrictError>> {
    decode_once(value).map_err(DecodeFailure::into_errors)
}

/// Renders a serde_ignored path as a field path (`spec.containers[0].imagee`)
/// and returns it with the unknown key itself.
fn ignored_path(p: &serde_ignored::Path<'_>) -> (String, String) {
    fn walk(p: &serde_ignored::Path<'_>, out: &mut String) {
        use serde_ignored::Path as P;
        match p {
            P::Root => {}
            P::Seq { parent, index } => {
                walk(parent, out);
                out.push_str(&format!("[{index}]"));
            }
            P::Map { parent, key } => {
                walk(parent, out);
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
                walk(parent, out)
            }
        }
    }
    let mut s = String::new();
    walk(p, &mut s);
    let name = match p {
        serde_ignored::Path::Map { key, .. } => key.clone(),
        _ => s.clone(),
    };
    (s, name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn load_str(name: &str, text: &str) -> Loaded {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        let mut loaded = load_inputs(&[p.display().to_string()]);
        // Make messages independent of the temp dir.
        for (o, _) in &mut loaded.objects {
            o.file = name.to_string();
        }
        loaded
    }

    fn messages(l: &Loaded) -> Vec<String> {
        l.errors.iter().map(|e| e.to_string()).collect()
    }

    const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n  - name: app\n    image: busybox\n";

    #[test]
    fn a_yaml_pod_loads() {
        let l = load_str("pod.yaml", POD);
        assert!(l.errors.is_empty(), "{:?}", messages(&l));
        assert_eq!(l.objects.len(), 1);
        let Object::Pod(p) = &l.objects[0].1 else {
            panic!("not a pod")
        };
        assert_eq!(p.metadata.name.as_deref(), Some("web"));
    }

    #[test]
    fn multi_document_yaml_skips_empty_documents_and_numbers_the_rest() {
        let text = format!("---\n{POD}---\n---\n{}", POD.replace("web", "db"));
        let l = load_str("pods.yaml", &text);
        assert!(l.errors.is_empty(), "{:?}", messages(&l));
        assert_eq!(l.objects.len(), 2);
        assert!(l.objects[1].0.multi_document);
        assert_eq!(l.objects[1].0.to_string(), "pods.yaml (document 3)");
    }

    #[test]
    fn json_and_lists_load() {
        let pod: Value = serde_json::from_str(
            &serde_json::to_string(&serde_norway::from_str::<Value>(POD).unwrap()).unwrap(),
        )
        .unwrap();
        let list =
            serde_json::json!({"apiVersion": "v1", "kind": "List", "items": [pod.clone(), pod]});
        let l = load_str("list.json", &list.to_string());
        assert!(l.errors.is_empty(), "{:?}", messages(&l));
        assert_eq!(l.objects.len(), 2);
        assert_eq!(l.objects[1].0.to_string(), "list.json (items[1])");
    }

    #[test]
    fn unknown_fields_are_errors_with_their_path() {
        let l = load_str("pod.yaml", &POD.replace("image: busybox", "image: busybox\n    imagee: x\n    ports:\n    - containerPort: 80\n      nmae: http"));
        let m = messages(&l);
        assert!(
            m[0].ends_with("/pod.yaml: spec.containers[0].imagee: unknown field \"imagee\""),
            "{m:?}"
        );
        assert!(
            m[1].ends_with("/pod.yaml: spec.containers[0].ports[0].nmae: unknown field \"nmae\""),
            "{m:?}"
        );
        assert_eq!(m.len(), 2);
        assert!(l.objects.is_empty());
    }

    #[test]
    fn yaml_1_1_octal_and_booleans_decode_like_kubectl() {
        let text = format!("{POD}    stdin: yes\n  volumes:\n  - name: s\n    secret: {{secretName: x, defaultMode: 0400, items: [{{key: k, path: p, mode: 0x1ff}}]}}\n");
        let l = load_str("pod.yaml", &text);
        assert!(l.errors.is_empty(), "{:?}", messages(&l));
        let Object::Pod(p) = &l.objects[0].1 else {
            panic!("not a pod")
        };
        let spec = p.spec.as_ref().unwrap();
        let secret = spec.volumes.as_ref().unwrap()[0].secret.as_ref().unwrap();
        assert_eq!(secret.default_mode, Some(0o400));
        assert_eq!(secret.items.as_ref().unwrap()[0].mode, Some(0o777));
        assert_eq!(spec.containers[0].stdin, Some(true));
    }

    #[test]
    fn strings_that_are_not_yaml_1_1_literals_stay_type_errors() {
        let l = load_str("pod.yaml", &format!("{POD}    stdin: maybe\n"));
        assert!(
            matches!(&l.errors[..], [LoadError::Decode { field, .. }] if field == "spec.containers[0].stdin"),
            "{:?}",
            messages(&l)
        );
    }

    #[test]
    fn type_errors_name_the_field() {
        let l = load_str(
            "pod.yaml",
            &POD.replace("image: busybox", "image: busybox\n    ports: 80"),
        );
        let m = messages(&l);
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(m[0].ends_with("/pod.yaml: spec.containers[0].ports: invalid type: integer `80`, expected a sequence"), "{m:?}");
    }

    #[test]
    fn yaml_syntax_errors_give_line_and_column() {
        let l = load_str(
            "bad.yaml",
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: [web\n",
        );
        let m = messages(&l);
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(
            m[0].contains("/bad.yaml: YAML syntax error at line 5, column 1: "),
            "{m:?}"
        );
    }

    #[test]
    fn json_syntax_errors_give_line_and_column() {
        let l = load_str("bad.json", "{\"apiVersion\": \"v1\",\n \"kind\": }");
        assert!(
            matches!(
                &l.errors[..],
                [LoadError::JsonSyntax {
                    line: 2,
                    column: 10,
                    ..
                }]
            ),
            "{:?}",
            messages(&l)
        );
    }

    #[test]
    fn wrong_api_version_or_kind_is_rejected() {
        let l = load_str(
            "d.yaml",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n",
        );
        assert!(
            matches!(&l.errors[..], [LoadError::UnsupportedKind { kind, .. }] if kind == "Deployment")
        );
        let l = load_str("d.yaml", "kind: Pod\nmetadata: {name: x}\n");
        assert!(matches!(
            &l.errors[..],
            [LoadError::MissingTypeMeta {
                field: "apiVersion",
                ..
            }]
        ));
        let l = load_str("d.yaml", "- a\n- b\n");
        assert!(matches!(
            &l.errors[..],
            [LoadError::NotAnObject {
                found: "a list",
                ..
            }]
        ));
    }

    #[test]
    fn empty_files_are_errors() {
        for text in ["", "---\n", "# only a comment\n", "---\n---\n"] {
            let l = load_str("empty.yaml", text);
            assert!(
                matches!(&l.errors[..], [LoadError::Empty { .. }]),
                "{text:?}: {:?}",
                messages(&l)
            );
        }
    }

    #[test]
    fn binary_and_oversized_files_are_unreadable() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin.yaml");
        std::fs::write(&bin, [0x61, 0xff, 0xfe, 0x00]).unwrap();
        let big = dir.path().join("big.yaml");
        let mut f = std::fs::File::create(&big).unwrap();
        f.write_all(&vec![
            b'#';
            usize::try_from(MAX_MANIFEST_BYTES).unwrap() + 10
        ])
        .unwrap();
        let l = load_inputs(&[bin.display().to_string(), big.display().to_string()]);
        assert!(matches!(&l.errors[0], LoadError::NotUtf8 { offset: 1, .. }));
        assert!(
            matches!(&l.errors[1], LoadError::TooLarge { size, .. } if *size == MAX_MANIFEST_BYTES + 10)
        );
        assert!(l.errors.iter().all(LoadError::is_unreadable));
        assert!(l.errors[1].to_string().contains("1 MiB"));
    }

    #[test]
    fn missing_files_and_empty_directories_are_unreadable() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".hidden.yaml"), POD).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "x").unwrap();
        let l = load_inputs(&[
            dir.path().display().to_string(),
            "/nonexistent/pod.yaml".into(),
        ]);
        assert!(matches!(
            &l.errors[..],
            [LoadError::NoManifests { .. }, LoadError::Read { .. }]
        ));
        assert!(l.errors.iter().all(LoadError::is_unreadable));
    }

    #[test]
    fn directories_load_sorted_manifest_files_only() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b.yaml"), POD.replace("web", "b")).unwrap();
        std::fs::write(
            dir.path().join("a.json"),
            serde_json::to_string(
                &serde_norway::from_str::<Value>(&POD.replace("web", "a")).unwrap(),
            )
            .unwrap(),
        )
        .unwrap();
        std::fs::write(dir.path().join(".c.yaml"), POD).unwrap();
        let l = load_inputs(&[dir.path().display().to_string()]);
        let names: Vec<_> = l
            .objects
            .iter()
            .map(|(_, o)| match o {
                Object::Pod(p) => p.metadata.name.clone().unwrap(),
                _ => String::new(),
            })
            .collect();
        assert_eq!(names, ["a", "b"]);
    }
}

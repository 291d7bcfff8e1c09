//! Pod manifests: load (YAML/JSON, strict), default (as the API server
//! does), validate (every error at once, with field paths) and classify the
//! fields nodelet does not fully support.

pub mod bounded;
pub mod defaults;
pub mod field;
pub mod lint;
pub mod load;
pub mod support;
pub mod validate;

use std::collections::HashMap;
use std::fmt;

use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};

pub use load::{LoadError, Object, Origin};
use support::{Finding, Support};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Info,
    Warning,
    Error,
}

/// One line of feedback about the input.
#[derive(Debug, Clone)]
pub struct Diagnostic {
    pub severity: Severity,
    /// The file (and document) it is about.
    pub origin: String,
    pub message: String,
    /// The input could not be read at all (exit code 2 rather than 1).
    pub unreadable: bool,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.severity {
            Severity::Error => write!(f, "{}: {}", self.origin, self.message),
            Severity::Warning => write!(f, "{}: warning: {}", self.origin, self.message),
            Severity::Info => write!(f, "{}: info: {}", self.origin, self.message),
        }
    }
}

/// A pod read from a manifest, defaulted and valid.
#[derive(Debug, Clone)]
pub struct PodManifest {
    pub origin: Origin,
    pub pod: Pod,
    /// Fields set in the manifest that nodelet does not act on yet; the pod
    /// worker reports them as an event.
    pub unsupported: Vec<Finding>,
}

/// The outcome of reading a set of inputs.
#[derive(Debug, Default)]
pub struct Prepared {
    pub pods: Vec<PodManifest>,
    pub config_maps: Vec<ConfigMap>,
    pub secrets: Vec<Secret>,
    pub diagnostics: Vec<Diagnostic>,
}

impl Prepared {
    pub fn has_errors(&self) -> bool {
        self.diagnostics
            .iter()
            .any(|d| d.severity == Severity::Error)
    }

    /// 0 valid, 1 invalid, 2 some input unreadable.
    pub fn exit_code(&self) -> i32 {
        if self.diagnostics.iter().any(|d| d.unreadable) {
            2
        } else if self.has_errors() {
            1
        } else {
            0
        }
    }
}

/// Options for [`prepare`].
#[derive(Debug, Clone, Copy, Default)]
pub struct PrepareOptions {
    /// Not-yet-supported fields are errors instead of warnings.
    pub strict: bool,
}

/// Loads, defaults and validates every input. Pods with errors are left out
/// of `pods`; every problem is in `diagnostics`.
pub fn prepare(inputs: &[String], opts: PrepareOptions) -> Prepared {
    let loaded = load::load_inputs(inputs);
    let mut out = Prepared::default();
    for e in &loaded.errors {
        out.diagnostics.push(load_diagnostic(e));
    }
    let mut seen: HashMap<(String, String), String> = HashMap::new();
    for (origin, obj) in loaded.objects {
        match obj {
            Object::Pod(raw) => {
                if let Some(p) = prepare_pod(origin, *raw, opts, &mut seen, &mut out.diagnostics) {
                    out.pods.push(p);
                }
            }
            Object::ConfigMap(c) => {
                let mut c = *c;
                validate::objects::default_namespace(&mut c.metadata.namespace);
                let errs = validate::objects::validate_config_map(&c);
                if object_ok(&origin, &errs, &mut out.diagnostics) {
                    out.config_maps.push(c);
                }
            }
            Object::Secret(s) => {
                let mut s = *s;
                validate::objects::normalize_secret(&mut s);
                let errs = validate::objects::validate_secret(&s);
                if object_ok(&origin, &errs, &mut out.diagnostics) {
                    out.secrets.push(s);
                }
            }
        }
    }
    out
}

/// Records `errs` of an object from `origin`; true when there are none.
fn object_ok(origin: &Origin, errs: &field::ErrorList, diags: &mut Vec<Diagnostic>) -> bool {
    diags.extend(errs.iter().map(|e| Diagnostic {
        severity: Severity::Error,
        origin: origin.to_string(),
        message: e.to_string(),
        unreadable: false,
    }));
    errs.is_empty()
}

fn load_diagnostic(e: &LoadError) -> Diagnostic {
    // LoadError's message already starts with its file; split it off so all
    // diagnostics print the same way.
    let text = e.to_string();
    let (origin, message) = match e {
        LoadError::Read { path, .. }
        | LoadError::TooLarge { path, .. }
        | LoadError::NotUtf8 { path, .. }
        | LoadError::NoManifests { path } => (path.display().to_string(), text.clone()),
        LoadError::Empty { file } => (file.clone(), text.clone()),
        LoadError::YamlSyntax { origin, .. }
        | LoadError::JsonSyntax { origin, .. }
        | LoadError::NotAnObject { origin, .. }
        | LoadError::MissingTypeMeta { origin, .. }
        | LoadError::UnsupportedKind { origin, .. }
        | LoadError::UnknownField { origin, .. }
        | LoadError::Decode { origin, .. } => (origin.to_string(), text.clone()),
    };
    let message = message
        .strip_prefix(&format!("{origin}: "))
        .map_or(message.clone(), str::to_string);
    Diagnostic {
        severity: Severity::Error,
        origin,
        message,
        unreadable: e.is_unreadable(),
    }
}

fn prepare_pod(
    origin: Origin,
    raw: Pod,
    opts: PrepareOptions,
    seen: &mut HashMap<(String, String), String>,
    diags: &mut Vec<Diagnostic>,
) -> Option<PodManifest> {
    let where_ = origin.to_string();
    let diag = |severity, message: String| Diagnostic {
        severity,
        origin: where_.clone(),
        message,
        unreadable: false,
    };
    let raw_json = serde_json::to_value(&raw).unwrap_or_default();
    let mut pod = raw;
    defaults::apply(&mut pod);
    let errors = validate::validate_pod(&pod);
    let findings = support::check(&raw_json);
    let mut ok = errors.is_empty();
    diags.extend(errors.iter().map(|e| diag(Severity::Error, e.to_string())));

    diags.extend(
        lint::undeclared_named_ports(&pod)
            .into_iter()
            .map(|w| diag(Severity::Warning, w)),
    );
    let ignored: Vec<&str> = findings
        .iter()
        .filter(|f| f.support == Support::IgnoredOnSingleNode)
        .map(|f| f.path.as_str())
        .collect();
    if !ignored.is_empty() {
        diags.push(diag(
            Severity::Info,
            format!("ignored on a single node: {}", ignored.join(", ")),
        ));
    }
    let not_yet: Vec<&Finding> = findings
        .iter()
        .filter(|f| f.support == Support::NotSupportedYet)
        .collect();
    if opts.strict {
        for f in &not_yet {
            diags.push(diag(
                Severity::Error,
                format!(
                    "{}: Forbidden: not supported yet by nodelet (--strict)",
                    f.path
                ),
            ));
        }
        ok &= not_yet.is_empty();
    } else if !not_yet.is_empty() {
        let paths: Vec<&str> = not_yet.iter().map(|f| f.path.as_str()).collect();
        diags.push(diag(
            Severity::Warning,
            format!("not supported yet, will be ignored: {}", paths.join(", ")),
        ));
    }

    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    if !name.is_empty() {
        if let Some(first) = seen.get(&(ns.clone(), name.clone())) {
            diags.push(diag(
                Severity::Error,
                format!("metadata.name: Duplicate value: {name:?}: pod {ns}/{name} is already defined in {first}"),
            ));
            ok = false;
        } else {
            seen.insert((ns, name), where_.clone());
        }
    }
    ok.then(|| PodManifest {
        origin,
        pod,
        unsupported: findings
            .into_iter()
            .filter(|f| f.support == Support::NotSupportedYet)
            .collect(),
    })
}

//! Field paths and field errors in the API server's own words.
//!
//! Mirrors `k8s.io/apimachinery/pkg/util/validation/field` (`Path`, `Error`,
//! `ErrorType`) so that messages read exactly like `kubectl apply` output,
//! e.g. `spec.initContainers[1].name: Duplicate value: "app"`.

use std::fmt;

/// A path to a field, such as `spec.containers[0].ports[1].name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path(String);

impl Path {
    pub fn new(root: &str) -> Self {
        Path(root.to_string())
    }

    /// `a.b` for a struct member.
    pub fn child(&self, name: &str) -> Self {
        if self.0.is_empty() {
            Path(name.to_string())
        } else {
            Path(format!("{}.{name}", self.0))
        }
    }

    /// `a[3]` for a list element.
    pub fn index(&self, i: usize) -> Self {
        Path(format!("{}[{i}]", self.0))
    }

    /// `a[key]` for a map entry (apimachinery prints keys unquoted).
    pub fn key(&self, key: &str) -> Self {
        Path(format!("{}[{key}]", self.0))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// apimachinery's `field.ErrorType`, with its `String()` spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum ErrorType {
    NotFound,
    Required,
    Duplicate,
    Invalid,
    NotSupported,
    Forbidden,
    TooLong,
    TooMany,
}

impl ErrorType {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorType::NotFound => "Not found",
            ErrorType::Required => "Required value",
            ErrorType::Duplicate => "Duplicate value",
            ErrorType::Invalid => "Invalid value",
            ErrorType::NotSupported => "Unsupported value",
            ErrorType::Forbidden => "Forbidden",
            ErrorType::TooLong => "Too long",
            ErrorType::TooMany => "Too many",
        }
    }

    /// Types whose message shows the type only, never the bad value
    /// (apimachinery `Error.ErrorBody`).
    fn omits_value(self) -> bool {
        matches!(
            self,
            ErrorType::Required | ErrorType::Forbidden | ErrorType::TooLong | ErrorType::TooMany
        )
    }
}

/// The offending value, printed like Go's `%q` for strings and `%d` for ints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadValue {
    Str(String),
    Int(i64),
    Bool(bool),
    None,
}

impl From<&str> for BadValue {
    fn from(s: &str) -> Self {
        BadValue::Str(s.to_string())
    }
}
impl From<&String> for BadValue {
    fn from(s: &String) -> Self {
        BadValue::Str(s.clone())
    }
}
impl From<i64> for BadValue {
    fn from(v: i64) -> Self {
        BadValue::Int(v)
    }
}
impl From<i32> for BadValue {
    fn from(v: i32) -> Self {
        BadValue::Int(i64::from(v))
    }
}
impl From<bool> for BadValue {
    fn from(v: bool) -> Self {
        BadValue::Bool(v)
    }
}

impl fmt::Display for BadValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // serde_json's string escaping matches Go's %q for everything a
            // manifest can hold in practice (quotes, backslashes, control chars).
            BadValue::Str(s) => write!(f, "{}", serde_json::Value::String(s.clone())),
            BadValue::Int(v) => write!(f, "{v}"),
            BadValue::Bool(v) => write!(f, "{v}"),
            BadValue::None => f.write_str("null"),
        }
    }
}

/// One validation failure at one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub kind: ErrorType,
    pub field: Path,
    pub value: BadValue,
    pub detail: String,
}

impl FieldError {
    pub fn body(&self) -> String {
        let mut s = if self.kind.omits_value() {
            self.kind.as_str().to_string()
        } else {
            format!("{}: {}", self.kind.as_str(), self.value)
        };
        if !self.detail.is_empty() {
            s.push_str(": ");
            s.push_str(&self.detail);
        }
        s
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.body())
    }
}

impl std::error::Error for FieldError {}

pub type ErrorList = Vec<FieldError>;

pub fn required(field: &Path, detail: &str) -> FieldError {
    FieldError {
        kind: ErrorType::Required,
        field: field.clone(),
        value: BadValue::None,
        detail: detail.to_string(),
    }
}

pub fn invalid(field: &Path, value: impl Into<BadValue>, detail: &str) -> FieldError {
    FieldError {
        kind: ErrorType::Invalid,
        field: field.clone(),
        value: value.into(),
        detail: detail.to_string(),
    }
}

pub fn duplicate(field: &Path, value: impl Into<BadValue>) -> FieldError {
    FieldError {
        kind: ErrorType::Duplicate,
        field: field.clone(),
        value: value.into(),
        detail: String::new(),
    }
}

pub fn not_found(field: &Path, value: impl Into<BadValue>) -> FieldError {
    FieldError {
        kind: ErrorType::NotFound,
        field: field.clone(),
        value: value.into(),
        detail: String::new(),
    }
}

pub fn forbidden(field: &Path, detail: &str) -> FieldError {
    FieldError {
        kind: ErrorType::Forbidden,
        field: field.clone(),
        value: BadValue::None,
        detail: detail.to_string(),
    }
}

pub fn too_long(field: &Path, max_bytes: usize) -> FieldError {
    FieldError {
        kind: ErrorType::TooLong,
        field: field.clone(),
        value: BadValue::None,
        detail: format!("may not be more than {max_bytes} bytes"),
    }
}

/// `Unsupported value: "x": supported values: "a", "b"`.
pub fn not_supported(field: &Path, value: impl Into<BadValue>, allowed: &[&str]) -> FieldError {
    let list: Vec<String> = allowed.iter().map(|a| format!("\"{a}\"")).collect();
    FieldError {
        kind: ErrorType::NotSupported,
        field: field.clone(),
        value: value.into(),
        detail: format!("supported values: {}", list.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_render_like_apimachinery() {
        let p = Path::new("spec")
            .child("containers")
            .index(0)
            .child("env")
            .index(2);
        assert_eq!(p.to_string(), "spec.containers[0].env[2]");
        assert_eq!(
            Path::new("metadata").child("labels").key("a/b").to_string(),
            "metadata.labels[a/b]"
        );
    }

    #[test]
    fn messages_render_like_apimachinery() {
        let p = Path::new("spec")
            .child("initContainers")
            .index(1)
            .child("name");
        assert_eq!(
            duplicate(&p, "app").to_string(),
            "spec.initContainers[1].name: Duplicate value: \"app\""
        );
        assert_eq!(
            required(&p, "").to_string(),
            "spec.initContainers[1].name: Required value"
        );
        assert_eq!(
            not_supported(&Path::new("spec.restartPolicy"), "Sometimes", &["Always", "OnFailure", "Never"]).to_string(),
            "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\""
        );
        assert_eq!(
            invalid(&Path::new("spec.activeDeadlineSeconds"), 0i64, "must be between 1 and 2147483647, inclusive").to_string(),
            "spec.activeDeadlineSeconds: Invalid value: 0: must be between 1 and 2147483647, inclusive"
        );
        assert_eq!(
            forbidden(
                &Path::new("spec.containers[0].livenessProbe"),
                "may not specify more than 1 handler type"
            )
            .to_string(),
            "spec.containers[0].livenessProbe: Forbidden: may not specify more than 1 handler type"
        );
    }
}

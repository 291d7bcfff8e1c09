//! Decoding a YAML or JSON document into a `serde_json::Value` within
//! bounds, as the API server's strict decoding would have it:
//!
//! - a key may appear once per mapping (sigs.k8s.io/yaml and the strict
//!   JSON decoder refuse duplicates: `kubectl apply --validate=strict`);
//! - nesting is at most [`MAX_DEPTH`] levels;
//! - what the document expands to (YAML aliases replay their anchor's
//!   content) is at most a budget of a few times the input: an alias bomb
//!   or one large value referenced a thousand times stops at the budget,
//!   before it is built.
//!
//! Each refusal names the limit and where it was reached.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Deepest nesting of mappings and lists. Pods are a dozen levels deep;
/// serde_norway stops at 128 on its own, with a less helpful message.
pub const MAX_DEPTH: usize = 100;
/// Expanded bytes allowed per input byte (plus [`BUDGET_FLOOR`]).
pub const EXPANSION_FACTOR: usize = 4;
/// Expanded bytes a small document may always use.
pub const BUDGET_FLOOR: usize = 64 * 1024;
/// What a node costs against the budget besides its text.
const NODE_COST: usize = 16;

/// The expansion budget for an input of `len` bytes.
pub fn budget_for(len: usize) -> usize {
    len.saturating_mul(EXPANSION_FACTOR)
        .saturating_add(BUDGET_FLOOR)
}

/// Where `text` opens its flow collection past [`MAX_DEPTH`] levels
/// (`[[[[…` or `{a: {a: …`), as (line, column), 1-based. The YAML parser
/// scans a whole document before anything decodes it, and its scanner
/// checks every open flow level on every token: a megabyte of `[` costs
/// it minutes of CPU (quadratic) before the depth limit could be seen. So
/// the text is measured first, in one pass: a bracket opens a collection
/// where a value may start (after `:`, `-`, `,`, `?`, another bracket, or
/// at the start of a line; anchors and tags skipped), not inside quotes,
/// comments or block scalars (`|`, `>`).
pub fn flow_depth_past_limit(text: &str) -> Option<(usize, usize)> {
    let b = text.as_bytes();
    let (mut depth, mut line, mut line_start) = (0usize, 1usize, 0usize);
    // The last significant byte; a value may start after these.
    let mut prev = b'\n';
    // Inside a plain (unquoted) scalar: brackets there are text.
    let mut plain = false;
    // Inside a block scalar: lines indented deeper than this belong to it.
    let mut block_indent: Option<usize> = None;
    let indent_at = |start: usize| b[start..].iter().take_while(|&&c| c == b' ').count();
    let line_end = |from: usize| {
        b[from..]
            .iter()
            .position(|&x| x == b'\n')
            .map_or(b.len(), |p| from + p)
    };
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if i == line_start {
            if let Some(parent) = block_indent {
                let ind = indent_at(i);
                let blank = matches!(b.get(i + ind), None | Some(b'\n' | b'\r'));
                if blank || ind > parent {
                    // A line of the block scalar: skipped to its newline.
                    let end = line_end(i);
                    if end > i {
                        i = end;
                        continue;
                    }
                } else {
                    block_indent = None;
                }
            }
        }
        let after_space = i == 0 || matches!(b[i - 1], b' ' | b'\t' | b'\n');
        if c == b'#' && after_space {
            i = line_end(i);
            continue;
        }
        if plain {
            // A plain scalar ends at its line's end, at `: `, and in a
            // flow collection at `,`, `]` or `}`.
            let ends_here = match c {
                b'\n' => true,
                b':' => matches!(b.get(i + 1), None | Some(b' ' | b'\t' | b'\n' | b'\r')),
                b',' | b']' | b'}' => depth > 0,
                _ => false,
            };
            if !ends_here {
                i += 1;
                continue;
            }
            plain = false;
        }
        let starts_value = matches!(prev, b'\n' | b':' | b'-' | b',' | b'?' | b'[' | b'{');
        match c {
            b'\n' => {
                line += 1;
                line_start = i + 1;
                prev = b'\n';
            }
            b' ' | b'\t' | b'\r' => {}
            b'"' | b'\'' if starts_value => {
                // To the closing quote (`\"` and `''` escapes inside).
                let mut j = i + 1;
                while j < b.len() {
                    if b[j] == b'\n' {
                        line += 1;
                        line_start = j + 1;
                    } else if c == b'"' && b[j] == b'\\' {
                        j += 1;
                    } else if b[j] == c {
                        if c == b'\'' && b.get(j + 1) == Some(&b'\'') {
                            j += 1;
                        } else {
                            break;
                        }
                    }
                    j += 1;
                }
                i = j;
                prev = c;
            }
            b'&' | b'!' if starts_value => {
                // An anchor or tag before the value: the value is still to come.
                while i + 1 < b.len()
                    && !matches!(b[i + 1], b' ' | b'\t' | b'\n' | b',' | b']' | b'}')
                {
                    i += 1;
                }
            }
            b'|' | b'>' if starts_value => {
                block_indent = Some(indent_at(line_start));
                prev = c;
            }
            b'[' | b'{' if starts_value => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Some((line, i - line_start + 1));
                }
                prev = c;
            }
            b']' | b'}' | b',' | b':' | b'?' => {
                if matches!(c, b']' | b'}') {
                    depth = depth.saturating_sub(1);
                }
                prev = c;
            }
            b'-' if starts_value
                && matches!(b.get(i + 1), None | Some(b' ' | b'\t' | b'\n' | b'\r')) =>
            {
                prev = c;
            }
            _ => {
                plain = true;
                prev = c;
            }
        }
        i += 1;
    }
    None
}

/// Whether messages carry the node's path: serde_norway prefixes its own
/// errors with it, serde_json gives only a line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Paths {
    Named,
    LeftToDecoder,
}

/// Decodes one document from `de` within `budget` (shared by the
/// documents of one file, so many documents cannot add up past it).
pub fn value<'de, D: de::Deserializer<'de>>(
    de: D,
    budget: &Cell<usize>,
    paths: Paths,
) -> Result<Value, D::Error> {
    Node {
        budget,
        depth: 0,
        path: &Path::Root,
        paths,
    }
    .deserialize(de)
}

/// Where a node sits, for messages: `metadata.labels` or `items[2]`.
enum Path<'a> {
    Root,
    Key(&'a Path<'a>, String),
    Index(&'a Path<'a>, usize),
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Root => f.write_str("<document>"),
            Path::Key(Path::Root, k) => f.write_str(k),
            Path::Key(p, k) => write!(f, "{p}.{k}"),
            Path::Index(p, i) => write!(f, "{p}[{i}]"),
        }
    }
}

struct Node<'b, 'p> {
    budget: &'b Cell<usize>,
    depth: usize,
    path: &'p Path<'p>,
    paths: Paths,
}

impl Node<'_, '_> {
    /// `what`, after the node's path when messages name it.
    fn message(&self, what: &str) -> String {
        match self.paths {
            Paths::Named => format!("{}: {what}", self.path),
            Paths::LeftToDecoder => what.to_string(),
        }
    }

    fn spend<E: de::Error>(&self, bytes: usize) -> Result<(), E> {
        let left = self.budget.get();
        let cost = bytes.saturating_add(NODE_COST);
        if cost > left {
            return Err(E::custom(self.message(&format!(
                "the document expands to more than {EXPANSION_FACTOR} times its size (limit on expanded size, YAML aliases included)"
            ))));
        }
        self.budget.set(left - cost);
        Ok(())
    }

    fn deeper<E: de::Error>(&self) -> Result<usize, E> {
        if self.depth >= MAX_DEPTH {
            return Err(E::custom(self.message(&format!(
                "nested deeper than {MAX_DEPTH} levels (limit on nesting)"
            ))));
        }
        Ok(self.depth + 1)
    }
}

impl<'de> DeserializeSeed<'de> for Node<'_, '_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, de: D) -> Result<Value, D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_, '_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML or JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        self.spend(0)?;
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        self.spend(0)?;
        Ok(Value::from(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        self.spend(0)?;
        Ok(Value::from(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        self.spend(0)?;
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        self.spend(v.len())?;
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        self.spend(v.len())?;
        Ok(Value::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.spend(0)?;
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }

    fn visit_some<D: de::Deserializer<'de>>(self, de: D) -> Result<Value, D::Error> {
        self.deserialize(de)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.spend(0)?;
        let depth = self.deeper()?;
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(Node {
            budget: self.budget,
            depth,
            path: &Path::Index(self.path, out.len()),
            paths: self.paths,
        })? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.spend(0)?;
        let depth = self.deeper()?;
        let mut out = Map::new();
        while let Some(key) = map.next_key_seed(Key {
            budget: self.budget,
            path: self.path,
            paths: self.paths,
        })? {
            if out.contains_key(&key) {
                return Err(de::Error::custom(self.message(&format!(
                    "duplicate key {key:?} (a key may appear once in a mapping)"
                ))));
            }
            let v = map.next_value_seed(Node {
                budget: self.budget,
                depth,
                path: &Path::Key(self.path, key.clone()),
                paths: self.paths,
            })?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

/// A mapping key: a string, or a scalar written as its text (YAML allows
/// `1: x`; JSON objects only have string keys).
struct Key<'b, 'p> {
    budget: &'b Cell<usize>,
    path: &'p Path<'p>,
    paths: Paths,
}

impl<'de> DeserializeSeed<'de> for Key<'_, '_> {
    type Value = String;

    fn deserialize<D: de::Deserializer<'de>>(self, de: D) -> Result<String, D::Error> {
        let node = Node {
            budget: self.budget,
            depth: MAX_DEPTH,
            path: self.path,
            paths: self.paths,
        };
        let refused = node.message("a mapping key must be a scalar");
        let v = node.deserialize(de)?;
        match v {
            Value::String(s) => Ok(s),
            Value::Bool(b) => Ok(b.to_string()),
            Value::Number(n) => Ok(n.to_string()),
            Value::Null => Ok("null".into()),
            _ => Err(de::Error::custom(refused)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize as _;

    fn yaml(text: &str) -> Result<Value, String> {
        let budget = Cell::new(budget_for(text.len()));
        let doc = serde_norway::Deserializer::from_str(text)
            .next()
            .ok_or("no document")?;
        value(doc, &budget, Paths::LeftToDecoder).map_err(|e| e.to_string())
    }

    fn json(text: &str) -> Result<Value, String> {
        let budget = Cell::new(budget_for(text.len()));
        let mut de = serde_json::Deserializer::from_str(text);
        value(&mut de, &budget, Paths::Named).map_err(|e| e.to_string())
    }

    #[test]
    fn plain_documents_decode_as_serde_json_would() {
        let text = "a: 1\nb: [x, {c: true}]\nd: ~\n";
        let want =
            Value::deserialize(serde_norway::Deserializer::from_str(text).next().unwrap()).unwrap();
        assert_eq!(yaml(text).unwrap(), want);
    }

    #[test]
    fn duplicate_keys_are_refused_with_their_path() {
        let e = yaml("metadata:\n  name: a\n  labels: {x: '1', x: '2'}\n").unwrap_err();
        assert!(e.starts_with("metadata.labels: duplicate key \"x\""), "{e}");
        let e = yaml("kind: Pod\nkind: Pod\n").unwrap_err();
        assert!(e.starts_with("duplicate key \"kind\""), "{e}");
        let e = json(r#"{"metadata": {"labels": {"x": "1", "x": "2"}}}"#).unwrap_err();
        assert!(e.starts_with("metadata.labels: duplicate key \"x\""), "{e}");
    }

    #[test]
    fn flow_nesting_is_measured_before_parsing() {
        let deep = "spec: ".to_string() + &"[".repeat(200) + &"]".repeat(200);
        assert_eq!(flow_depth_past_limit(&deep), Some((1, 107)));
        let maps = "a: ".to_string() + &"{a: ".repeat(150);
        assert!(flow_depth_past_limit(&maps).is_some());
        let anchored = "a: ".to_string() + &"&x [".repeat(150);
        assert!(
            flow_depth_past_limit(&anchored).is_some(),
            "anchors do not hide a level"
        );
        let brackets = "[".repeat(150);
        for fine in [
            format!("command: [sh, -c, \"echo {brackets}\"]\n"),
            format!("command: [sh, -c, 'echo {brackets} ''x''']\n"),
            format!("a: 1 # {brackets}\nb: 2\n"),
            format!("script: |\n  {brackets}\n  {brackets}\n\n  x\nnext: [1, [2]]\n"),
            format!("name: foo{brackets}\n"),
            format!("a: {}{}\nb: [x]\n", "[".repeat(100), "]".repeat(100)),
        ] {
            assert_eq!(flow_depth_past_limit(&fine), None, "{fine}");
        }
        // After a block scalar ends, brackets count again.
        let after = format!("s: >\n  {brackets}\nt: {}\n", "[".repeat(101));
        assert_eq!(flow_depth_past_limit(&after), Some((3, 104)));
    }

    #[test]
    fn nesting_past_the_limit_is_refused_naming_it() {
        let deep = format!(
            "a: {}1{}\n",
            "[".repeat(MAX_DEPTH + 5),
            "]".repeat(MAX_DEPTH + 5)
        );
        let e = yaml(&deep).unwrap_err();
        assert!(
            e.contains("nested deeper than 100 levels (limit on nesting)"),
            "{e}"
        );
        let ok = format!("a: {}1{}\n", "[".repeat(90), "]".repeat(90));
        yaml(&ok).unwrap();
    }

    #[test]
    fn a_large_value_referenced_many_times_stops_at_the_budget() {
        let big = "x".repeat(200_000);
        let refs = vec!["*b"; 200].join(", ");
        let text = format!("a: &b \"{big}\"\nc: [{refs}]\n");
        let e = yaml(&text).unwrap_err();
        assert!(e.contains("expands to more than 4 times its size"), "{e}");
        assert!(e.starts_with("c["), "{e}");
    }
}

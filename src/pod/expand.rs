//! Kubernetes `$(VAR)` expansion in command, args and env values
//! (`k8s:third_party/forked/golang/expansion/expand.go`): a defined
//! `$(NAME)` becomes its value, an undefined one stays as written, `$$`
//! becomes `$`, and any other `$` is literal.

/// Expands `input` with `lookup`.
pub fn expand(input: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('(') {
            match body.find(')') {
                Some(end) => {
                    let name = &body[..end];
                    match lookup(name) {
                        Some(v) => out.push_str(&v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &body[end + 1..];
                }
                // Unclosed: the rest is literal.
                None => {
                    out.push('$');
                    out.push_str(after);
                    rest = "";
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "FOO" => Some("foo-value".into()),
            "BAR" => Some("bar-value".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn the_expansion_table() {
        for (input, want) in [
            ("$(FOO);;$(BAR)", "foo-value;;bar-value"),
            ("$(NOPE)", "$(NOPE)"),
            ("$$(FOO)", "$(FOO)"),
            ("$$$(FOO)", "$foo-value"),
            ("$FOO ${FOO}", "$FOO ${FOO}"),
            ("a$(FOO", "a$(FOO"),
            ("x$(EMPTY)y", "xy"),
            ("$", "$"),
            ("$$", "$"),
            ("100$ and $(FOO)$", "100$ and foo-value$"),
            ("$()", "$()"),
            ("héllo $(FOO) wörld", "héllo foo-value wörld"),
        ] {
            assert_eq!(expand(input, env), want, "{input}");
        }
    }
}

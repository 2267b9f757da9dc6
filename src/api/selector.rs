//! Kubernetes label and field selectors, as `kubectl -l` and `--field-selector`
//! send them: `app=web,tier!=db`, `env in (prod,staging)`, `!canary`, `release`.
//! The syntax and validation follow the API server's (`k8s.io/apimachinery`
//! `labels.Parse`), so a selector the agent accepts is one the API server would.

use std::collections::BTreeSet;

/// Why a selector was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SelectorError {
    #[error("unable to parse requirement \"{term}\": {reason}")]
    Requirement { term: String, reason: String },
    #[error("field label not supported: {field}")]
    UnsupportedField { field: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Operator {
    Equals(String),
    NotEquals(String),
    In(BTreeSet<String>),
    NotIn(BTreeSet<String>),
    Exists,
    DoesNotExist,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Requirement {
    key: String,
    operator: Operator,
}

/// A parsed selector: every requirement must hold. The empty selector matches all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

/// The pod fields the API server lets a field selector name.
pub const POD_FIELDS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "spec.nodeName",
    "status.phase",
    "status.podIP",
];

impl Selector {
    /// Parses a label selector with the API server's syntax and validation.
    pub fn labels(text: &str) -> Result<Self, SelectorError> {
        let requirements = split_terms(text)
            .into_iter()
            .map(parse_label_term)
            .collect::<Result<_, _>>()?;
        Ok(Self { requirements })
    }

    /// Parses a field selector (`=`, `==`, `!=` only) over the fields in `allowed`.
    pub fn fields(text: &str, allowed: &[&str]) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        for term in split_terms(text) {
            let (key, operator) = split_equality(term).ok_or_else(|| {
                requirement_error(
                    term,
                    "a field selector term is FIELD=VALUE, FIELD==VALUE or FIELD!=VALUE",
                )
            })?;
            if !allowed.contains(&key.as_str()) {
                return Err(SelectorError::UnsupportedField { field: key });
            }
            requirements.push(Requirement { key, operator });
        }
        Ok(Self { requirements })
    }

    /// True when every requirement holds for an object whose values `lookup` gives.
    pub fn matches<'a>(&self, lookup: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.requirements.iter().all(|req| {
            let value = lookup(&req.key);
            match &req.operator {
                Operator::Equals(want) => value == Some(want.as_str()),
                Operator::NotEquals(want) => value != Some(want.as_str()),
                Operator::In(set) => value.is_some_and(|v| set.contains(v)),
                Operator::NotIn(set) => !value.is_some_and(|v| set.contains(v)),
                Operator::Exists => value.is_some(),
                Operator::DoesNotExist => value.is_none(),
            }
        })
    }
}

/// The selector as the API server prints one (`app=web,env in (a,b),!canary`):
/// parsing it again gives the same selector.
impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, Requirement { key, operator }) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let set =
                |values: &BTreeSet<String>| values.iter().cloned().collect::<Vec<_>>().join(",");
            match operator {
                // `==`, not `=`: a field value may itself start with `=`.
                Operator::Equals(value) => write!(f, "{key}=={value}")?,
                Operator::NotEquals(value) => write!(f, "{key}!={value}")?,
                Operator::In(values) => write!(f, "{key} in ({})", set(values))?,
                Operator::NotIn(values) => write!(f, "{key} notin ({})", set(values))?,
                Operator::Exists => write!(f, "{key}")?,
                Operator::DoesNotExist => write!(f, "!{key}")?,
            }
        }
        Ok(())
    }
}

/// Splits on the commas that are not inside a `( ... )` value set.
fn split_terms(text: &str) -> Vec<&str> {
    let mut terms = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, ch) in text.char_indices() {
        match ch {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                terms.push(text[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(text[start..].trim());
    if terms.len() == 1 && terms[0].is_empty() {
        terms.clear();
    }
    terms
}

fn requirement_error(term: &str, reason: impl Into<String>) -> SelectorError {
    SelectorError::Requirement {
        term: term.to_string(),
        reason: reason.into(),
    }
}

/// `key=value`, `key==value` or `key!=value`.
fn split_equality(term: &str) -> Option<(String, Operator)> {
    if let Some((key, value)) = term.split_once("!=") {
        return Some((key.trim().into(), Operator::NotEquals(value.trim().into())));
    }
    let (key, value) = term.split_once("==").or_else(|| term.split_once('='))?;
    Some((key.trim().into(), Operator::Equals(value.trim().into())))
}

fn parse_label_term(term: &str) -> Result<Requirement, SelectorError> {
    if term.is_empty() {
        return Err(requirement_error(term, "empty term"));
    }
    let requirement = if let Some(key) = term.strip_prefix('!') {
        Requirement {
            key: key.trim().into(),
            operator: Operator::DoesNotExist,
        }
    } else if let Some((left, rest)) = term.split_once('(') {
        let values = rest
            .strip_suffix(')')
            .ok_or_else(|| requirement_error(term, "a value set must end with ')'"))?;
        let mut words = left.split_whitespace();
        let (Some(key), Some(op), None) = (words.next(), words.next(), words.next()) else {
            return Err(requirement_error(
                term,
                "expected KEY in (...) or KEY notin (...)",
            ));
        };
        let set: BTreeSet<String> = values.split(',').map(|v| v.trim().to_string()).collect();
        for value in &set {
            validate_value(term, value)?;
        }
        let operator = match op {
            "in" => Operator::In(set),
            "notin" => Operator::NotIn(set),
            other => {
                return Err(requirement_error(
                    term,
                    format!("unknown operator '{other}'; expected 'in' or 'notin'"),
                ));
            }
        };
        Requirement {
            key: key.into(),
            operator,
        }
    } else if let Some((key, operator)) = split_equality(term) {
        if let Operator::Equals(v) | Operator::NotEquals(v) = &operator {
            validate_value(term, v)?;
        }
        Requirement { key, operator }
    } else {
        Requirement {
            key: term.into(),
            operator: Operator::Exists,
        }
    };
    validate_key(term, &requirement.key)?;
    Ok(requirement)
}

/// A label name: at most 63 characters, alphanumeric at both ends, `-_.` inside.
fn is_label_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A DNS subdomain (RFC 1123): lower-case labels of `[a-z0-9-]` joined by dots.
fn is_dns_subdomain(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        })
}

fn validate_key(term: &str, key: &str) -> Result<(), SelectorError> {
    let valid = match key.split_once('/') {
        Some((prefix, name)) => is_dns_subdomain(prefix) && is_label_name(name),
        None => is_label_name(key),
    };
    if valid {
        Ok(())
    } else {
        Err(requirement_error(
            term,
            format!(
                "invalid label key \"{key}\": a key is an optional DNS subdomain prefix and '/', then at most 63 alphanumeric characters, '-', '_' or '.', starting and ending with an alphanumeric character"
            ),
        ))
    }
}

fn validate_value(term: &str, value: &str) -> Result<(), SelectorError> {
    if value.is_empty() || is_label_name(value) {
        Ok(())
    } else {
        Err(requirement_error(
            term,
            format!(
                "invalid label value \"{value}\": at most 63 alphanumeric characters, '-', '_' or '.', starting and ending with an alphanumeric character"
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn check(selector: &str, pairs: &[(&str, &str)]) -> bool {
        let map = labels(pairs);
        Selector::labels(selector)
            .unwrap()
            .matches(|k| map.get(k).map(String::as_str))
    }

    #[test]
    fn equality_terms() {
        assert!(check("app=web", &[("app", "web")]));
        assert!(check("app==web", &[("app", "web"), ("x", "y")]));
        assert!(!check("app=web", &[("app", "db")]));
        assert!(check("app!=web", &[("app", "db")]));
        assert!(check("app!=web", &[]));
        assert!(check(
            "app=web,tier=front",
            &[("app", "web"), ("tier", "front")]
        ));
        assert!(!check("app=web,tier=front", &[("app", "web")]));
        assert!(check("", &[]));
    }

    #[test]
    fn set_and_existence_terms() {
        assert!(check("env in (prod, staging)", &[("env", "prod")]));
        assert!(!check("env in (prod,staging)", &[("env", "dev")]));
        assert!(check("env notin (prod),app=x", &[("app", "x")]));
        assert!(check("release", &[("release", "")]));
        assert!(!check("!canary", &[("canary", "true")]));
        assert!(check(
            "example.com/team=sre",
            &[("example.com/team", "sre")]
        ));
    }

    #[test]
    fn bad_selectors_are_refused_with_the_reason() {
        for bad in [
            "app=we b",
            "=x",
            "a b",
            "env in (x",
            "env within (x)",
            "-app",
            "app=,",
        ] {
            assert!(Selector::labels(bad).is_err(), "accepted {bad:?}");
        }
        let err = Selector::labels("app=we b").unwrap_err().to_string();
        assert!(err.contains("invalid label value \"we b\""), "{err}");
    }

    #[test]
    fn field_selectors() {
        let sel = Selector::fields("metadata.name=web,status.phase!=Failed", POD_FIELDS).unwrap();
        assert!(sel.matches(|k| match k {
            "metadata.name" => Some("web"),
            "status.phase" => Some("Running"),
            _ => None,
        }));
        assert_eq!(
            Selector::fields("spec.schedulerName=x", POD_FIELDS).unwrap_err(),
            SelectorError::UnsupportedField {
                field: "spec.schedulerName".into()
            }
        );
    }
}

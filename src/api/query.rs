//! Query strings: axum's extraction as our 400s ([`QueryOf`], [`query`]),
//! label selectors, and the one grammar of query flags (`?stream=`, `?tty=`, `?reveal=`, ...),
//! whether a handler reads its query by hand (`exec`) or through serde.
//!
//! `true`, `True`, `TRUE`, `t`, `T`, `1` are true; `false`, `False`, `FALSE`,
//! `f`, `F`, `0` are false (Go's `strconv.ParseBool`, what the API server and
//! the kubelet accept); an empty value is the flag's default, as if it were
//! not given; anything else is a 400 that names the flag.

use serde::Deserialize;

use super::{ApiError, selector};

/// The value of `text`, or why it is none.
pub(super) fn parse(text: &str) -> Result<Option<bool>, String> {
    match text {
        "" => Ok(None),
        "true" | "True" | "TRUE" | "t" | "T" | "1" => Ok(Some(true)),
        "false" | "False" | "FALSE" | "f" | "F" | "0" => Ok(Some(false)),
        other => Err(format!("must be true or false, not {other:?}")),
    }
}

/// The flag `name` given as `text` (`None`: not given).
pub fn flag(name: &str, text: Option<&str>, default: bool) -> Result<bool, ApiError> {
    match parse(text.unwrap_or("")) {
        Ok(value) => Ok(value.unwrap_or(default)),
        Err(why) => Err(ApiError::bad_request(format!("{name} {why}"))),
    }
}

/// A flag in a serde query struct; `#[serde(default)]` makes it false when
/// it is not given.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flag(pub bool);

impl<'de> Deserialize<'de> for Flag {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        match parse(&text) {
            Ok(value) => Ok(Flag(value.unwrap_or(false))),
            Err(why) => Err(serde::de::Error::custom(why)),
        }
    }
}

/// A query string as axum extracted it: a malformed one becomes our 400
/// `v1.Status` instead of axum's plain-text rejection.
pub type QueryOf<T> = Result<axum::extract::Query<T>, axum::extract::rejection::QueryRejection>;

/// The parsed query, or a 400.
pub(super) fn query<T>(query: QueryOf<T>) -> Result<T, ApiError> {
    query
        .map(|axum::extract::Query(value)| value)
        .map_err(|err| ApiError::bad_request(err.body_text()))
}

/// A `labelSelector` query value, parsed with the API server's rules, or a 400.
pub(super) fn label_selector(text: Option<&str>) -> Result<selector::Selector, ApiError> {
    selector::Selector::labels(text.unwrap_or(""))
        .map_err(|err| ApiError::bad_request(format!("invalid labelSelector: {err}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_a_flag_means_the_same() {
        for text in ["true", "True", "TRUE", "t", "T", "1"] {
            assert!(flag("tty", Some(text), false).unwrap(), "{text}");
        }
        for text in ["false", "False", "FALSE", "f", "F", "0"] {
            assert!(!flag("tty", Some(text), true).unwrap(), "{text}");
        }
        assert!(flag("hosts", Some(""), true).unwrap());
        assert!(flag("hosts", None, true).unwrap());
        assert!(!flag("tty", None, false).unwrap());
        let err = flag("tty", Some("yes"), false).unwrap_err();
        assert_eq!(err.message(), "tty must be true or false, not \"yes\"");
    }

    #[derive(Debug, Deserialize)]
    struct Query {
        #[serde(default)]
        stream: Flag,
    }

    fn from_query(query: &str) -> Result<Query, String> {
        let uri: axum::http::Uri = format!("/x?{query}").parse().unwrap();
        axum::extract::Query::<Query>::try_from_uri(&uri)
            .map(|q| q.0)
            .map_err(|e| e.body_text())
    }

    #[test]
    fn a_serde_flag_takes_the_same_grammar() {
        assert_eq!(from_query("stream=1").unwrap().stream, Flag(true));
        assert_eq!(from_query("stream=T").unwrap().stream, Flag(true));
        assert_eq!(from_query("stream=false").unwrap().stream, Flag(false));
        assert_eq!(from_query("stream=").unwrap().stream, Flag(false));
        assert_eq!(from_query("").unwrap().stream, Flag(false));
        let err = from_query("stream=maybe").unwrap_err();
        assert!(err.contains("must be true or false"), "{err}");
    }
}

//! What every Kubernetes list endpoint shares: list options, and the
//! `meta.k8s.io/v1` `Table` that `kubectl get` asks for with `Accept: ...;as=Table`
//! and prints as-is (the API server, not kubectl, decides the columns).

use std::time::{Duration, SystemTime};

use axum::http::HeaderMap;
use axum::http::header::ACCEPT;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;
use serde_json::{Value, json};

use super::ApiError;

/// The list options the agent honours; the others kubectl sends (`limit`,
/// `resourceVersion`, ...) are accepted and have no effect on a node-sized list.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListOptions {
    pub label_selector: Option<String>,
    pub field_selector: Option<String>,
    watch: Option<String>,
    include_object: Option<String>,
}

/// The query string of a list or get request, as axum extracted it.
pub type ListQuery = super::QueryOf<ListOptions>;

impl ListOptions {
    /// The options of `query`, refusing what the agent cannot do.
    pub fn parse(query: ListQuery) -> Result<Self, ApiError> {
        let options = super::query(query)?;
        if super::query::flag("watch", options.watch.as_deref(), false)? {
            return Err(ApiError::bad_request(
                "watch is not supported by the nsdebug agent; list again instead",
            ));
        }
        Ok(options)
    }

    /// How much of each object a `Table` row carries (`?includeObject=`).
    pub fn include_object(&self) -> Result<IncludeObject, ApiError> {
        match self.include_object.as_deref() {
            None | Some("Metadata") => Ok(IncludeObject::Metadata),
            Some("None") => Ok(IncludeObject::None),
            Some("Object") => Ok(IncludeObject::Object),
            Some(other) => Err(ApiError::bad_request(format!(
                "includeObject must be None, Metadata or Object, not {other:?}"
            ))),
        }
    }
}

/// True when the client prefers the server-side printed `Table` (kubectl get).
pub fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|accept| accept.contains("as=Table"))
}

/// How much of each object a `Table` row carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncludeObject {
    None,
    Metadata,
    Object,
}

/// A `Table` column: `priority` 0 is always shown, 1 only with `-o wide`.
pub struct Column {
    pub name: &'static str,
    pub format: &'static str,
    pub priority: i32,
    pub description: &'static str,
}

/// One `Table` row: its cells and the object it shows.
pub struct Row {
    pub cells: Vec<Value>,
    pub metadata: ObjectMeta,
    /// The full object (with kind and apiVersion), built only when asked for.
    pub object: Box<dyn FnOnce() -> Value>,
}

/// The `Table` of `rows` under `columns`.
pub fn table(columns: &[Column], rows: Vec<Row>, include: IncludeObject) -> Value {
    let columns: Vec<Value> = columns
        .iter()
        .map(|c| {
            json!({"name": c.name, "type": "string", "format": c.format,
                   "priority": c.priority, "description": c.description})
        })
        .collect();
    let rows: Vec<Value> = rows
        .into_iter()
        .map(|row| {
            let object = match include {
                IncludeObject::None => Value::Null,
                IncludeObject::Metadata => json!({
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": row.metadata,
                }),
                IncludeObject::Object => (row.object)(),
            };
            json!({"cells": row.cells, "object": object})
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {},
        "columnDefinitions": columns,
        "rows": rows,
    })
}

/// The AGE cell of an object created at `unix_nanos`.
pub fn age(unix_nanos: i64) -> String {
    let created =
        SystemTime::UNIX_EPOCH + Duration::from_nanos(u64::try_from(unix_nanos).unwrap_or(0));
    SystemTime::now()
        .duration_since(created)
        .map(human_duration)
        .unwrap_or_else(|_| "0s".into())
}

/// Kubernetes' `duration.HumanDuration`, the AGE column's format.
pub fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    let minutes = secs / 60;
    let hours = secs / 3600;
    let with = |big: u64, unit: &str, small: u64, small_unit: &str| {
        if small == 0 {
            format!("{big}{unit}")
        } else {
            format!("{big}{unit}{small}{small_unit}")
        }
    };
    if secs < 120 {
        format!("{secs}s")
    } else if minutes < 10 {
        with(minutes, "m", secs % 60, "s")
    } else if minutes < 180 {
        format!("{minutes}m")
    } else if hours < 8 {
        with(hours, "h", minutes % 60, "m")
    } else if hours < 48 {
        format!("{hours}h")
    } else if hours < 24 * 8 {
        with(hours / 24, "d", hours % 24, "h")
    } else if hours < 24 * 365 * 2 {
        format!("{}d", hours / 24)
    } else if hours < 24 * 365 * 8 {
        with(hours / 24 / 365, "y", (hours / 24) % 365, "d")
    } else {
        format!("{}y", hours / 24 / 365)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations_match_kubernetes() {
        let cases = [
            (0, "0s"),
            (119, "119s"),
            (120, "2m"),
            (125, "2m5s"),
            (600, "10m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 60, "3h1m"),
            (47 * 3600, "47h"),
            (50 * 3600, "2d2h"),
            (10 * 86400, "10d"),
            (3 * 365 * 86400, "3y"),
            (9 * 365 * 86400, "9y"),
        ];
        for (secs, want) in cases {
            assert_eq!(human_duration(Duration::from_secs(secs)), want, "{secs}s");
        }
    }
}

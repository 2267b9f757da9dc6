//! [`Wanted`]: the target a request names, read the same way on every route
//! that has a pod form (`/v1/targets/{namespace}/{pod}/...?container=NAME`)
//! and a container-ID form (`/v1/containers/{id}/...`), so one handler serves
//! both.

use axum::extract::{FromRequestParts, RawPathParams};
use axum::http::request::Parts;

use super::ApiError;
use crate::resolve::TargetRef;

/// What the caller named, before anything is authorized or resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted(pub TargetRef);

impl<S: Send + Sync> FromRequestParts<S> for Wanted {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let params = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|err| ApiError::bad_request(err.body_text()))?;
        let param = |name: &str| {
            params
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| value.to_string())
        };
        let container = parts.uri.query().and_then(|query| {
            form_urlencoded::parse(query.as_bytes())
                .find(|(key, _)| key == "container")
                .map(|(_, value)| value.into_owned())
                .filter(|container| !container.is_empty())
        });
        if let Some(id) = param("id") {
            // Which one would win is a guess: refused, whatever the route.
            if container.is_some() {
                return Err(ApiError::bad_request(
                    "container= names a container of a pod; this route names one by ID already",
                ));
            }
            return Ok(Wanted(TargetRef::ContainerId(id)));
        }
        let (Some(namespace), Some(pod)) = (param("namespace"), param("pod")) else {
            return Err(ApiError::internal_with(
                "a target route names neither {namespace}/{pod} nor {id}",
            ));
        };
        Ok(Wanted(TargetRef::Pod {
            namespace,
            pod,
            container,
        }))
    }
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::routing::get;
    use tower::ServiceExt;

    use super::*;

    /// What `uri` names, through the two forms' routes.
    async fn wanted(uri: &str) -> String {
        async fn show(wanted: Result<Wanted, ApiError>) -> String {
            match wanted {
                Ok(Wanted(target)) => format!("{target:?}"),
                Err(err) => format!("{} {}", err.code().as_u16(), err.message()),
            }
        }
        let app = Router::new()
            .route("/v1/targets/{namespace}/{pod}/run", get(show))
            .route("/v1/containers/{id}/run", get(show));
        let request = axum::http::Request::get(uri)
            .body(axum::body::Body::empty())
            .unwrap();
        let response = app.oneshot(request).await.unwrap();
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        String::from_utf8(body.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn both_forms_name_their_target() {
        assert_eq!(
            wanted("/v1/targets/shop/web/run?container=app&stream=1").await,
            r#"Pod { namespace: "shop", pod: "web", container: Some("app") }"#
        );
        assert_eq!(
            wanted("/v1/targets/shop/web%2Dx/run?container=").await,
            r#"Pod { namespace: "shop", pod: "web-x", container: None }"#
        );
        assert_eq!(
            wanted("/v1/containers/0123abc/run").await,
            r#"ContainerId("0123abc")"#
        );
    }

    /// Capture refused `container=` with a container ID, while run, diag,
    /// files, probes and the lookup ran in the ID's container and ignored it.
    #[tokio::test]
    async fn a_container_id_with_a_container_name_is_refused() {
        assert_eq!(
            wanted("/v1/containers/0123abc/run?container=other").await,
            "400 container= names a container of a pod; this route names one by ID already"
        );
        assert_eq!(
            wanted("/v1/containers/0123abc/run?container=").await,
            r#"ContainerId("0123abc")"#
        );
    }
}

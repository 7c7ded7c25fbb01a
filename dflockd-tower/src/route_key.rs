//! Keys from the path parameters of the route axum matched (feature `axum`).

use std::fmt;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use axum::extract::rejection::RawPathParamsRejection;
use axum::extract::{FromRequestParts, RawPathParams};
use http::Request;
use http::request::Parts;

use crate::key::checked_name;
use crate::{Error, KeyExtractor};

/// A key made from the path parameters of the route axum matched:
/// `RouteKey::new("order:{id}")` on `.route("/orders/{id}/pay", ...)` locks `order:42` for
/// `POST /orders/42/pay`, without repeating the route.
///
/// Add the layer with [`Router::route_layer`](axum::Router::route_layer): it runs once
/// axum has matched the route, whose parameters are then in the request. `Router::layer`
/// also runs it for paths no route matches (the fallback): these have no parameters, so no
/// key, and would be rejected as [missing their key](crate::OnMissingKey) (500, not 404).
///
/// ```
/// use axum::{Router, routing::post};
/// use dflockd_tower::{LockLayer, Locked, RouteKey};
///
/// # fn app(client: dflockd_core::Client) -> Result<Router, dflockd_tower::Error> {
/// async fn pay(Locked(lock): Locked) -> String {
///     format!("paid under {}", lock.key())
/// }
/// let app = Router::new()
///     .route("/orders/{id}/pay", post(pay))
///     .route("/orders/{id}/refund", post(pay))
///     .route_layer(LockLayer::new(client, RouteKey::new("order:{id}")?));
/// # Ok(app) }
/// ```
///
/// Parameters are percent-decoded, as axum's `Path` sees them. A route without a parameter
/// the template names gives no key (rejected as missing by default: a renamed parameter does
/// not run unguarded); a parameter that is not UTF-8 once decoded gives an empty key, which
/// the layer rejects as [invalid](crate::Error::InvalidKey) (400).
#[derive(Clone)]
pub struct RouteKey {
    pieces: Vec<Piece>,
    source: Box<str>,
}

#[derive(Clone, Debug, PartialEq)]
enum Piece {
    Text(Box<str>),
    Param(Box<str>),
}

impl fmt::Debug for RouteKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RouteKey").field(&self.source).finish()
    }
}

impl RouteKey {
    /// Parses a key template: text with `{name}` placeholders, each the name of a path
    /// parameter of the routes the layer guards (`{id}` for `/orders/{id}`, `{path}` for
    /// `/files/{*path}`).
    ///
    /// Whether the routes have these parameters is known only when a request comes (axum
    /// does not show a route layer its routes): then a missing one means no key.
    ///
    /// # Errors
    /// [`Error::Template`] when a brace is unbalanced, a name is empty or not letters,
    /// digits, `_` or `-`, or the template names no parameter (for a fixed key, use a
    /// closure).
    pub fn new(template: &str) -> Result<RouteKey, Error> {
        let bad = |reason: &'static str| Error::Template {
            pattern: None,
            template: template.to_owned(),
            reason,
        };
        let mut pieces = Vec::new();
        let mut text = template;
        while let Some(at) = text.find(['{', '}']) {
            if at > 0 {
                pieces.push(Piece::Text(text[..at].into()));
            }
            let after = &text[at..];
            let Some(end) = after.find('}').filter(|_| after.starts_with('{')) else {
                return Err(bad("unbalanced brace in the template"));
            };
            let name = checked_name(&after[1..end]).map_err(bad)?;
            pieces.push(Piece::Param(name.into()));
            text = &after[end + 1..];
        }
        if !text.is_empty() {
            pieces.push(Piece::Text(text.into()));
        }
        if !pieces.iter().any(|p| matches!(p, Piece::Param(_))) {
            return Err(bad("the template names no path parameter"));
        }
        Ok(RouteKey {
            pieces,
            source: template.into(),
        })
    }

    /// The template, as given.
    #[must_use]
    pub fn template(&self) -> &str {
        &self.source
    }

    /// The key for the parameters in `parts`, which are put back as they were.
    fn key_for_parts(&self, parts: &mut Parts) -> Option<String> {
        let params = match matched_params(parts)? {
            Ok(params) => params,
            // Not UTF-8 once decoded: the client's doing. An empty key is rejected as
            // invalid (400), where no key would be a configuration mistake (500).
            Err(RawPathParamsRejection::InvalidUtf8InPathParam(_)) => return Some(String::new()),
            Err(_) => return None,
        };
        let mut key = String::with_capacity(self.source.len() + 16);
        for piece in &self.pieces {
            match piece {
                Piece::Text(text) => key.push_str(text),
                Piece::Param(name) => {
                    let Some((_, value)) = params.iter().find(|(n, _)| *n == &**name) else {
                        tracing::debug!(
                            param = &**name,
                            "the matched route has no such path parameter"
                        );
                        return None;
                    };
                    key.push_str(value);
                }
            }
        }
        Some(key)
    }
}

/// axum's `RawPathParams`, read from the request parts. Its extraction is an `async fn`
/// that never waits (it reads the extensions), so one poll finishes it; were that to change,
/// the request would have no key (and be rejected), not wait.
fn matched_params(parts: &mut Parts) -> Option<Result<RawPathParams, RawPathParamsRejection>> {
    let extraction = pin!(RawPathParams::from_request_parts(parts, &()));
    match extraction.poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(result) => Some(result),
        Poll::Pending => None,
    }
}

/// Request parts with nothing in them, to lend a request's extensions to.
fn empty_parts() -> Parts {
    Request::new(()).into_parts().0
}

impl<B> KeyExtractor<Request<B>> for RouteKey {
    type Key = String;

    /// Works on a copy of the request's extensions; the layer calls
    /// [`extract_mut`](Self::extract_mut), which lends them instead.
    fn extract(&self, req: &Request<B>) -> Option<String> {
        let mut parts = empty_parts();
        parts.extensions = req.extensions().clone();
        self.key_for_parts(&mut parts)
    }

    fn extract_mut(&self, req: &mut Request<B>) -> Option<String> {
        let mut parts = empty_parts();
        std::mem::swap(&mut parts.extensions, req.extensions_mut());
        let key = self.key_for_parts(&mut parts);
        std::mem::swap(&mut parts.extensions, req.extensions_mut());
        key
    }

    /// `route key order:{id}`.
    fn describe(&self) -> String {
        format!("route key {}", self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::body::Body;
    use axum::routing::get;
    use std::sync::{Arc, Mutex};
    use tower::ServiceExt;

    #[test]
    fn templates_are_checked_when_made() {
        let key = RouteKey::new("order:{id}:{part}").unwrap();
        assert_eq!(key.template(), "order:{id}:{part}");
        assert_eq!(
            KeyExtractor::<Request<()>>::describe(&key),
            "route key order:{id}:{part}"
        );
        for bad in [
            "order",
            "",
            "order:{id",
            "order:id}",
            "o:{}",
            "o:{a b}",
            "o:{*rest}",
        ] {
            let err = RouteKey::new(bad).unwrap_err();
            assert!(
                matches!(&err, Error::Template { pattern: None, .. }),
                "{bad}: {err:?}"
            );
            assert!(err.to_string().starts_with("bad key template"), "{err}");
        }
    }

    /// The keys `key` makes for requests to `path` routed by `route`, through a route layer
    /// that records them (from `extract_mut` and `extract`).
    async fn keys(route: &str, key: &str, path: &str) -> Vec<Option<String>> {
        let key = RouteKey::new(key).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let app = Router::new()
            .route(route, get(|| async { "ok" }))
            .route_layer(axum::middleware::from_fn(
                move |mut req: axum::extract::Request, next: axum::middleware::Next| {
                    let (key, s) = (key.clone(), s.clone());
                    async move {
                        let by_mut = key.extract_mut(&mut req);
                        let by_ref = key.extract(&req);
                        s.lock().unwrap().extend([by_mut, by_ref]);
                        next.run(req).await
                    }
                },
            ));
        let req = Request::get(path).body(Body::empty()).unwrap();
        assert!(app.oneshot(req).await.unwrap().status().is_success());
        seen.lock().unwrap().clone()
    }

    #[tokio::test]
    async fn keys_come_from_the_matched_parameters() {
        let both = |k: Option<&str>| vec![k.map(str::to_owned); 2];
        assert_eq!(
            keys("/orders/{id}/pay", "order:{id}", "/orders/42/pay").await,
            both(Some("order:42"))
        );
        assert_eq!(
            keys(
                "/t/{tenant}/f/{*path}",
                "{path}@{tenant}",
                "/t/acme/f/a/b%20c"
            )
            .await,
            both(Some("a/b c@acme")),
            "decoded, as axum's Path sees them"
        );
        assert_eq!(
            keys("/orders/{order_id}/pay", "order:{id}", "/orders/42/pay").await,
            both(None),
            "a renamed parameter gives no key"
        );
        assert_eq!(
            keys("/orders/{id}", "order:{id}", "/orders/%FF").await,
            both(Some("")),
            "not UTF-8: an empty key, rejected as invalid by the layer"
        );
    }

    #[test]
    fn without_a_router_there_is_no_key() {
        let key = RouteKey::new("order:{id}").unwrap();
        let mut req = Request::get("/orders/42").body(()).unwrap();
        req.extensions_mut().insert(7_u32);
        assert_eq!(key.extract_mut(&mut req), None);
        assert_eq!(key.extract(&req), None);
        assert_eq!(
            req.extensions().get::<u32>(),
            Some(&7),
            "extensions put back"
        );
    }
}

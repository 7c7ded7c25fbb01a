//! Where the lock key of a request comes from.

use std::fmt;

use http::Request;

use crate::Error;

/// Derives the lock key of a request; `None` means the request has no key (what then happens
/// is the layer's [`OnMissingKey`](crate::OnMissingKey) policy: by default it is rejected with
/// [`Error::MissingKey`]).
///
/// The key is a `String`, or a [`Slot`]: a key with a limit of its own, for semaphores whose
/// limit depends on the request (premium tenants get more).
///
/// Implemented for every closure `Fn(&Req) -> Option<String>` or `Fn(&Req) -> Option<Slot>`,
/// by [`PathKey`], and with the `axum` feature by `RouteKey` (keys from the route axum
/// matched).
///
/// ```
/// use dflockd_tower::{KeyExtractor, Slot, header};
/// use http::Request;
///
/// let by_tenant = |req: &Request<()>| header(req, "x-tenant").map(|t| format!("tenant:{t}"));
/// let req = Request::builder().header("x-tenant", "acme").body(()).unwrap();
/// assert_eq!(by_tenant.extract(&req).as_deref(), Some("tenant:acme"));
///
/// let tiered = |req: &Request<()>| {
///     let tenant = header(req, "x-tenant")?;
///     let limit = if tenant == "acme" { 8 } else { 2 };
///     Some(Slot::new(format!("tenant:{tenant}"), limit))
/// };
/// assert_eq!(tiered.extract(&req), Some(Slot::new("tenant:acme", 8)));
/// ```
pub trait KeyExtractor<Req> {
    /// What the extractor yields: `String` (the key) or [`Slot`] (the key and its limit).
    type Key: Into<Slot>;

    /// The key of `req`, if it has one.
    fn extract(&self, req: &Req) -> Option<Self::Key>;

    /// The key of `req`, with the request lent mutably: what the layer calls, as it owns the
    /// request. For extractors that read framework state through `&mut` (axum's
    /// extractors take the request's parts so); they implement both. Default is
    /// [`extract`](Self::extract).
    fn extract_mut(&self, req: &mut Req) -> Option<Self::Key> {
        self.extract(req)
    }

    /// How the extractor is named in logs and errors when no layer
    /// [name](crate::LockLayer::name) is set. Default is its type name (for a closure, the
    /// path of the function it was written in).
    fn describe(&self) -> String {
        std::any::type_name::<Self>().to_owned()
    }
}

impl<F, Req, T> KeyExtractor<Req> for F
where
    F: Fn(&Req) -> Option<T>,
    T: Into<Slot>,
{
    type Key = T;

    fn extract(&self, req: &Req) -> Option<T> {
        self(req)
    }
}

/// A key with a limit of its own: what a [`KeyExtractor`] returns to give a request's key
/// the limit that suits it, such as 8 concurrent requests for premium tenants and 2 for the
/// others.
///
/// A plain `String` key becomes a slot without a limit of its own: it gets the layer's
/// ([`SemaphoreLayer::new`](crate::SemaphoreLayer::new)'s `limit`, 1 for a
/// [`LockLayer`](crate::LockLayer)). A slot's own limit always makes a semaphore of that
/// limit, also in a `LockLayer`.
///
/// One key has one limit on the lock server at a time: see
/// [`SemaphoreLayer`](crate::SemaphoreLayer) for what happens when it changes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Slot {
    key: String,
    limit: Option<u32>,
}

impl Slot {
    /// `key`, with at most `limit` holders at once. A limit of zero makes the request fail
    /// with [`Error::Config`] (HTTP 500).
    #[must_use]
    pub fn new(key: impl Into<String>, limit: u32) -> Slot {
        Slot {
            key: key.into(),
            limit: Some(limit),
        }
    }

    /// The key.
    #[must_use]
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The slot's own limit; `None` for the layer's.
    #[must_use]
    pub fn limit(&self) -> Option<u32> {
        self.limit
    }

    /// The key and the limit.
    pub(crate) fn into_parts(self) -> (String, Option<u32>) {
        (self.key, self.limit)
    }
}

impl From<String> for Slot {
    /// A key with the layer's limit.
    fn from(key: String) -> Slot {
        Slot { key, limit: None }
    }
}

/// The value of header `name` as text, trimmed; `None` when absent, empty or not visible
/// ASCII.
///
/// ```
/// let req = http::Request::builder().header("x-tenant", " acme ").body(()).unwrap();
/// assert_eq!(dflockd_tower::header(&req, "x-tenant").as_deref(), Some("acme"));
/// assert_eq!(dflockd_tower::header(&req, "x-other"), None);
/// ```
#[must_use]
pub fn header<B>(req: &Request<B>, name: &str) -> Option<String> {
    let value = req.headers().get(name)?.to_str().ok()?.trim();
    (!value.is_empty()).then(|| value.to_owned())
}

/// Matches the request path against `pattern` and fills `template` with the captured
/// segments: `key_from_path(req, "/orders/{id}/pay", "order:{id}")` is `Some("order:42")` for
/// `POST /orders/42/pay` and `None` for any path that does not match.
///
/// The pattern is parsed on every call; [`PathKey`] parses it once (and reports a bad
/// pattern instead of returning `None`). See [`PathKey::new`] for the syntax.
///
/// ```
/// use dflockd_tower::key_from_path;
/// let req = http::Request::post("/orders/42/pay").body(()).unwrap();
/// assert_eq!(key_from_path(&req, "/orders/{id}/pay", "order:{id}").as_deref(), Some("order:42"));
/// assert_eq!(key_from_path(&req, "/users/{id}", "user:{id}"), None);
/// ```
#[must_use]
pub fn key_from_path<B>(req: &Request<B>, pattern: &str, template: &str) -> Option<String> {
    PathKey::new(pattern, template)
        .ok()?
        .key_for_path(req.uri().path())
}

/// A key made from path segments: a route pattern and a key template, parsed once.
///
/// ```
/// use dflockd_tower::{KeyExtractor, PathKey};
/// let key = PathKey::new("/tenants/{tenant}/files/{*path}", "file:{tenant}:{path}")?;
/// let req = http::Request::get("/tenants/acme/files/a/b.txt").body(())?;
/// assert_eq!(key.extract(&req).as_deref(), Some("file:acme:a/b.txt"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct PathKey {
    pattern: Vec<Segment>,
    template: Vec<Piece>,
    source: Box<str>,
}

#[derive(Clone, Debug, PartialEq)]
enum Segment {
    Literal(Box<str>),
    Capture(Box<str>),
    Rest(Box<str>),
}

#[derive(Clone, Debug, PartialEq)]
enum Piece {
    Text(Box<str>),
    /// Index into the captures, in pattern order.
    Capture(usize),
}

impl fmt::Debug for PathKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PathKey").field(&self.source).finish()
    }
}

impl PathKey {
    /// Parses a route pattern and a key template.
    ///
    /// The pattern is a path of `/`-separated segments: literal text, `{name}` (one
    /// non-empty segment) or, last, `{*name}` (the non-empty rest of the path, slashes
    /// included), as in axum routes. The whole path must match; the query is ignored.
    /// The template is text with `{name}` placeholders, each naming a capture of the pattern.
    /// Captured segments are used as they appear in the URI (still percent-encoded).
    ///
    /// # Errors
    /// [`Error::Template`] when the pattern does not start with `/`, a placeholder is
    /// malformed or repeated, a `{*rest}` is not last, or the template names a capture the
    /// pattern does not have.
    pub fn new(pattern: &str, template: &str) -> Result<PathKey, Error> {
        let bad = |reason: &'static str| Error::Template {
            pattern: Some(pattern.to_owned()),
            template: template.to_owned(),
            reason,
        };
        let Some(rest) = pattern.strip_prefix('/') else {
            return Err(bad("the pattern must start with '/'"));
        };
        let mut segments = Vec::new();
        let parts: Vec<&str> = rest.split('/').collect();
        for (i, part) in parts.iter().enumerate() {
            let segment = match placeholder(part).map_err(bad)? {
                Some(name) => match name.strip_prefix('*') {
                    Some(_) if i + 1 != parts.len() => {
                        return Err(bad("a {*rest} capture must be the last segment"));
                    }
                    Some(name) => Segment::Rest(checked_name(name).map_err(bad)?.into()),
                    None => Segment::Capture(checked_name(name).map_err(bad)?.into()),
                },
                None if part.contains(['{', '}']) => {
                    return Err(bad("a segment mixes text and a {capture}"));
                }
                None => Segment::Literal((*part).into()),
            };
            segments.push(segment);
        }
        let names: Vec<&str> = segments
            .iter()
            .filter_map(|s| match s {
                Segment::Capture(n) | Segment::Rest(n) => Some(&**n),
                Segment::Literal(_) => None,
            })
            .collect();
        if (1..names.len()).any(|i| names[..i].contains(&names[i])) {
            return Err(bad("a capture name is used twice in the pattern"));
        }

        let mut pieces = Vec::new();
        let mut text = template;
        while !text.is_empty() {
            match text.find(['{', '}']) {
                None => {
                    pieces.push(Piece::Text(text.into()));
                    break;
                }
                Some(at) => {
                    if at > 0 {
                        pieces.push(Piece::Text(text[..at].into()));
                    }
                    let after = &text[at..];
                    let Some(end) = after.find('}').filter(|_| after.starts_with('{')) else {
                        return Err(bad("unbalanced brace in the template"));
                    };
                    let name = &after[1..end];
                    let Some(index) = names.iter().position(|n| *n == name) else {
                        return Err(bad(
                            "the template names a capture the pattern does not have",
                        ));
                    };
                    pieces.push(Piece::Capture(index));
                    text = &after[end + 1..];
                }
            }
        }
        if pieces.is_empty() {
            return Err(bad("the template is empty"));
        }
        Ok(PathKey {
            pattern: segments,
            template: pieces,
            source: format!("{pattern} -> {template}").into(),
        })
    }

    /// The key for a request path (without query), or `None` when it does not match.
    #[must_use]
    pub fn key_for_path(&self, path: &str) -> Option<String> {
        let mut rest = path.strip_prefix('/')?;
        let mut captures: Vec<&str> = Vec::with_capacity(2);
        let last = self.pattern.len() - 1;
        for (i, segment) in self.pattern.iter().enumerate() {
            let (part, tail) = match segment {
                Segment::Rest(_) => (rest, None),
                _ => match rest.split_once('/') {
                    Some((part, tail)) => (part, Some(tail)),
                    None => (rest, None),
                },
            };
            match segment {
                Segment::Literal(lit) if **lit == *part => {}
                Segment::Capture(_) | Segment::Rest(_) if !part.is_empty() => captures.push(part),
                _ => return None,
            }
            match tail {
                Some(tail) if i < last => rest = tail,
                None if i == last => rest = "",
                // Path and pattern have different numbers of segments.
                _ => return None,
            }
        }
        debug_assert!(rest.is_empty());
        let mut key = String::with_capacity(path.len() + 16);
        for piece in &self.template {
            match piece {
                Piece::Text(text) => key.push_str(text),
                Piece::Capture(i) => key.push_str(captures[*i]),
            }
        }
        Some(key)
    }
}

impl<B> KeyExtractor<Request<B>> for PathKey {
    type Key = String;

    fn extract(&self, req: &Request<B>) -> Option<String> {
        self.key_for_path(req.uri().path())
    }

    /// `path key /orders/{id}/pay -> order:{id}`.
    fn describe(&self) -> String {
        format!("path key {}", self.source)
    }
}

/// `Some(name)` for `{name}`, `None` for a segment without braces.
fn placeholder(part: &str) -> Result<Option<&str>, &'static str> {
    match part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
        Some(name) => Ok(Some(name)),
        None if part.starts_with('{') || part.ends_with('}') => {
            Err("a {capture} must fill its whole segment")
        }
        None => Ok(None),
    }
}

pub(crate) fn checked_name(name: &str) -> Result<&str, &'static str> {
    if !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        Ok(name)
    } else {
        Err("a capture name must be letters, digits, '_' or '-'")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_match_whole_segments() {
        let k = PathKey::new("/orders/{id}/pay", "order:{id}").unwrap();
        let cases = [
            ("/orders/42/pay", Some("order:42")),
            ("/orders/a%20b/pay", Some("order:a%20b")),
            ("/orders//pay", None),
            ("/orders/42", None),
            ("/orders/42/pay/", None),
            ("/orders/42/pay/x", None),
            ("/orders/42/refund", None),
            ("orders/42/pay", None),
            ("/", None),
            ("", None),
        ];
        for (path, want) in cases {
            assert_eq!(k.key_for_path(path).as_deref(), want, "{path}");
        }
    }

    #[test]
    fn rest_and_several_captures() {
        let k = PathKey::new("/t/{tenant}/f/{*path}", "{path}@{tenant}").unwrap();
        assert_eq!(
            k.key_for_path("/t/acme/f/a/b/c").as_deref(),
            Some("a/b/c@acme")
        );
        assert_eq!(k.key_for_path("/t/acme/f/x").as_deref(), Some("x@acme"));
        assert_eq!(k.key_for_path("/t/acme/f/"), None);
        assert_eq!(k.key_for_path("/t/acme/f"), None);
        let root = PathKey::new("/", "root").unwrap();
        assert_eq!(root.key_for_path("/").as_deref(), Some("root"));
        assert_eq!(root.key_for_path("/x"), None);
    }

    #[test]
    fn bad_patterns_and_templates_are_errors() {
        let bad = [
            ("orders/{id}", "o:{id}"),
            ("/orders/{id", "o:{id}"),
            ("/orders/x{id}", "o:{id}"),
            ("/orders/{}", "o"),
            ("/orders/{a b}", "o"),
            ("/{*rest}/x", "o:{rest}"),
            ("/{id}/{id}", "o:{id}"),
            ("/orders/{id}", "o:{other}"),
            ("/orders/{id}", "o:{id"),
            ("/orders/{id}", "o:id}"),
            ("/orders/{id}", ""),
        ];
        for (pattern, template) in bad {
            let err = PathKey::new(pattern, template).unwrap_err();
            assert!(
                matches!(err, Error::Template { .. }),
                "{pattern} {template}"
            );
        }
    }

    #[test]
    fn helpers() {
        let req = Request::post("/orders/7/pay?x=1")
            .header("x-tenant", "acme")
            .header("x-empty", " ")
            .body(())
            .unwrap();
        assert_eq!(
            key_from_path(&req, "/orders/{id}/pay", "order:{id}").as_deref(),
            Some("order:7")
        );
        assert_eq!(key_from_path(&req, "bad", "order:{id}"), None);
        assert_eq!(header(&req, "x-tenant").as_deref(), Some("acme"));
        assert_eq!(header(&req, "x-empty"), None);
        let closure = |r: &Request<()>| header(r, "x-tenant");
        assert_eq!(closure.extract(&req).as_deref(), Some("acme"));
        assert!(
            closure.describe().contains("key::tests::helpers"),
            "{}",
            closure.describe()
        );
        let path = PathKey::new("/orders/{id}/pay", "order:{id}").unwrap();
        assert_eq!(
            KeyExtractor::<Request<()>>::describe(&path),
            "path key /orders/{id}/pay -> order:{id}"
        );
    }
}

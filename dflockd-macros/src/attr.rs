//! Parsing of the attribute arguments: `key`, durations, `limit`, `client`, `crate`.
//!
//! `key`, the durations and `limit` take a literal, checked here (template syntax, duration
//! syntax, the limit's range), or any other expression, evaluated at each call and
//! type-checked by the compiler. The template's placeholders are checked against the
//! function's parameters in `expand`.

use std::time::Duration;

use proc_macro2::Span;
use syn::ext::IdentExt;
use syn::parse::{ParseStream, Parser};
use syn::{Error, Expr, Ident, LitInt, LitStr, Result, Token};

mod kw {
    syn::custom_keyword!(key);
    syn::custom_keyword!(limit);
    syn::custom_keyword!(wait);
    syn::custom_keyword!(lease);
    syn::custom_keyword!(hold_at_least);
    syn::custom_keyword!(on_lease_loss);
    syn::custom_keyword!(client);
}

/// Which attribute is being expanded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `#[exclusive]`: a lock.
    Lock,
    /// `#[exclusive_semaphore]`: a counting semaphore with `limit` holders.
    Semaphore,
}

impl Kind {
    pub(crate) fn attribute(self) -> &'static str {
        match self {
            Kind::Lock => "#[dflockd::exclusive]",
            Kind::Semaphore => "#[dflockd::exclusive_semaphore]",
        }
    }

    fn valid_arguments(self) -> &'static str {
        match self {
            Kind::Lock => {
                "`key`, `wait`, `lease`, `hold_at_least`, `on_lease_loss`, `client`, `crate`"
            }
            Kind::Semaphore => {
                "`key`, `limit`, `wait`, `lease`, `hold_at_least`, `on_lease_loss`, `client`, \
                 `crate`"
            }
        }
    }
}

/// What to do when the lease is lost while the body runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OnLeaseLoss {
    /// Drop the body future and report the loss (the default).
    Cancel,
    /// Let the body finish; only report.
    Continue,
}

/// A duration argument parsed from a literal, with the literal's span.
#[derive(Clone, Debug)]
pub(crate) struct DurationLit {
    pub(crate) value: Duration,
    pub(crate) span: Span,
}

/// `wait`, `lease`, `hold_at_least`: a string literal parsed here, or an expression of type
/// `std::time::Duration` evaluated at each call.
#[derive(Clone)]
pub(crate) enum DurationArg {
    Literal(DurationLit),
    Expr(Expr),
}

/// The semaphore limit: a literal checked here, or an expression of type `u32`.
#[derive(Clone)]
pub(crate) enum Limit {
    Literal(u32, Span),
    Expr(Expr),
}

/// One piece of a key template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Segment {
    /// Literal text (braces unescaped).
    Text(String),
    /// `{name}` or `{name.field.0}`: the root and the member chain.
    Placeholder { root: String, members: Vec<String> },
}

/// A key template: the literal and its pieces.
#[derive(Clone)]
pub(crate) struct KeyTemplate {
    pub(crate) lit: LitStr,
    pub(crate) segments: Vec<Segment>,
}

/// The `key` argument: a string literal is a template; any other expression is the whole
/// key, formatted with `Display` at each call.
#[derive(Clone)]
pub(crate) enum Key {
    Template(KeyTemplate),
    Expr(Expr),
}

/// The parsed arguments of one attribute.
#[derive(Clone)]
pub(crate) struct Args {
    pub(crate) key: Key,
    pub(crate) limit: Option<Limit>,
    pub(crate) wait: Option<DurationArg>,
    pub(crate) lease: Option<DurationArg>,
    pub(crate) hold_at_least: Option<DurationArg>,
    pub(crate) on_lease_loss: OnLeaseLoss,
    pub(crate) client: Option<Expr>,
    pub(crate) krate: Option<syn::Path>,
}

impl Args {
    /// Parses the attribute's arguments for `kind`.
    pub(crate) fn parse(kind: Kind, tokens: proc_macro2::TokenStream) -> Result<Args> {
        (|input: ParseStream<'_>| parse_args(kind, input)).parse2(tokens)
    }
}

/// Values as they are collected; every slot may be set once.
#[derive(Default)]
struct Slots {
    key: Option<Key>,
    limit: Option<Limit>,
    wait: Option<DurationArg>,
    lease: Option<DurationArg>,
    hold_at_least: Option<DurationArg>,
    on_lease_loss: Option<OnLeaseLoss>,
    client: Option<Expr>,
    krate: Option<syn::Path>,
}

/// The one duplicate-argument check.
fn set_once<T>(slot: &mut Option<T>, value: T, name: &str, span: Span) -> Result<()> {
    if slot.is_some() {
        return Err(Error::new(
            span,
            format!("duplicate `{name}` argument: each argument may be given once"),
        ));
    }
    *slot = Some(value);
    Ok(())
}

fn parse_args(kind: Kind, input: ParseStream<'_>) -> Result<Args> {
    let mut slots = Slots::default();
    // Errors in values (a bad duration, a bad template) do not stop the parse, so that one
    // compilation reports all of them.
    let mut errors: Vec<Error> = Vec::new();
    let (mut seen_key, mut seen_limit) = (false, false);
    let mut keep = |result: Result<()>| {
        if let Err(e) = result {
            errors.push(e);
        }
    };

    while !input.is_empty() {
        let lookahead = input.lookahead1();
        if lookahead.peek(kw::key) {
            let name = input.parse::<kw::key>()?;
            seen_key = true;
            input.parse::<Token![=]>()?;
            let value = parse_key(input)?;
            keep(value.and_then(|key| set_once(&mut slots.key, key, "key", name.span)));
        } else if lookahead.peek(kw::limit) && kind == Kind::Semaphore {
            let name = input.parse::<kw::limit>()?;
            seen_limit = true;
            input.parse::<Token![=]>()?;
            let value = parse_limit(input)?;
            keep(value.and_then(|limit| set_once(&mut slots.limit, limit, "limit", name.span)));
        } else if lookahead.peek(kw::wait) {
            let name = input.parse::<kw::wait>()?;
            input.parse::<Token![=]>()?;
            let value = duration_arg(input, "wait", "\"10s\"")?;
            keep(value.and_then(|d| set_once(&mut slots.wait, d, "wait", name.span)));
        } else if lookahead.peek(kw::lease) {
            let name = input.parse::<kw::lease>()?;
            input.parse::<Token![=]>()?;
            let value = duration_arg(input, "lease", "\"30s\"")?;
            keep(value.and_then(|d| {
                if let DurationArg::Literal(lit) = &d {
                    if lit.value.is_zero() {
                        return Err(Error::new(
                            lit.span,
                            "`lease` must be longer than zero (the server rounds it up to whole \
                             seconds)",
                        ));
                    }
                }
                set_once(&mut slots.lease, d, "lease", name.span)
            }));
        } else if lookahead.peek(kw::hold_at_least) {
            let name = input.parse::<kw::hold_at_least>()?;
            input.parse::<Token![=]>()?;
            let value = duration_arg(input, "hold_at_least", "\"30s\"")?;
            keep(
                value.and_then(|d| {
                    set_once(&mut slots.hold_at_least, d, "hold_at_least", name.span)
                }),
            );
        } else if lookahead.peek(kw::on_lease_loss) {
            let name = input.parse::<kw::on_lease_loss>()?;
            input.parse::<Token![=]>()?;
            let lit = string_value(input, "on_lease_loss", "\"continue\"")?;
            let value = match lit.value().as_str() {
                "cancel" => Ok(OnLeaseLoss::Cancel),
                "continue" => Ok(OnLeaseLoss::Continue),
                other => Err(Error::new(
                    lit.span(),
                    format!(
                        "unknown `on_lease_loss` value {other:?}: expected \"cancel\" (drop the \
                         body and report the loss, the default) or \"continue\" (let the body \
                         finish and only report)"
                    ),
                )),
            };
            keep(
                value.and_then(|v| {
                    set_once(&mut slots.on_lease_loss, v, "on_lease_loss", name.span)
                }),
            );
        } else if lookahead.peek(kw::client) {
            let name = input.parse::<kw::client>()?;
            input.parse::<Token![=]>()?;
            let expr: Expr = input.parse()?;
            keep(set_once(&mut slots.client, expr, "client", name.span));
        } else if lookahead.peek(Token![crate]) {
            let name = input.parse::<Token![crate]>()?;
            input.parse::<Token![=]>()?;
            let lit = string_value(input, "crate", "\"::dflockd\"")?;
            keep(
                lit.parse::<syn::Path>()
                    .map_err(|_| {
                        Error::new(lit.span(), "`crate` must be a path, e.g. \"::dflockd\"")
                    })
                    .and_then(|path| set_once(&mut slots.krate, path, "crate", name.span)),
            );
        } else {
            return Err(unknown_argument(kind, input, lookahead.error()));
        }

        if input.is_empty() {
            break;
        }
        input.parse::<Token![,]>()?;
    }

    if !seen_key {
        errors.push(Error::new(
            Span::call_site(),
            format!(
                "missing `key` argument: {} needs the key to lock, e.g. \
                 `key = \"report:{{tenant_id}}\"`",
                kind.attribute(),
            ),
        ));
    }
    if kind == Kind::Semaphore && !seen_limit {
        errors.push(Error::new(
            Span::call_site(),
            "missing `limit` argument: #[dflockd::exclusive_semaphore] needs the number of \
             holders allowed at once, e.g. `limit = 4`",
        ));
    }
    let mut errors = errors.into_iter();
    if let Some(mut first) = errors.next() {
        for e in errors {
            first.combine(e);
        }
        return Err(first);
    }

    Ok(Args {
        key: slots.key.expect("checked above"),
        limit: slots.limit,
        wait: slots.wait,
        lease: slots.lease,
        hold_at_least: slots.hold_at_least,
        on_lease_loss: slots.on_lease_loss.unwrap_or(OnLeaseLoss::Cancel),
        client: slots.client,
        krate: slots.krate,
    })
}

/// A string-valued argument's value, with an error that shows an example.
fn string_value(input: ParseStream<'_>, name: &str, example: &str) -> Result<LitStr> {
    if input.peek(LitStr) {
        input.parse()
    } else {
        Err(input.error(format!(
            "`{name}` takes a string literal, e.g. `{name} = {example}`"
        )))
    }
}

/// An argument name that is not one of ours: say which ones exist.
fn unknown_argument(kind: Kind, input: ParseStream<'_>, fallback: Error) -> Error {
    let Ok(ident) = input.fork().call(Ident::parse_any) else {
        return fallback;
    };
    let mut message = format!(
        "unknown argument `{ident}` for {}; valid arguments are {}",
        kind.attribute(),
        kind.valid_arguments()
    );
    if ident == "limit" && kind == Kind::Lock {
        message.push_str(
            "\n(for a semaphore, use #[dflockd::exclusive_semaphore(key = \"...\", limit = N)])",
        );
    }
    Error::new(ident.span(), message)
}

/// `limit = 4` (checked) or `limit = EXPR` (a `u32` at run time). The outer `Result` is a
/// syntax error, the inner one a bad value.
fn parse_limit(input: ParseStream<'_>) -> Result<Result<Limit>> {
    if input.peek(LitInt) {
        let lit: LitInt = input.parse()?;
        let value = match lit.base10_parse::<u64>() {
            Ok(0) => Err(Error::new(
                lit.span(),
                "`limit` must be at least 1: it is how many holders may run at once",
            )),
            Ok(n) => u32::try_from(n)
                .map(|n| Limit::Literal(n, lit.span()))
                .map_err(|_| {
                    Error::new(
                        lit.span(),
                        format!("`limit` must fit in a u32 (at most {})", u32::MAX),
                    )
                }),
            Err(_) => Err(Error::new(
                lit.span(),
                "`limit` must be a positive integer, e.g. `limit = 4`",
            )),
        };
        Ok(value)
    } else {
        let expr: Expr = input.parse()?;
        if let Expr::Lit(lit) = &expr {
            return Ok(Err(Error::new_spanned(
                lit,
                "`limit` must be a positive integer, e.g. `limit = 4`, or an expression of type u32",
            )));
        }
        Ok(Ok(Limit::Expr(expr)))
    }
}

/// `key = "..."` (a template, checked) or `key = EXPR` (formatted with `Display` at each
/// call). The outer `Result` is a syntax error, the inner one a bad value.
fn parse_key(input: ParseStream<'_>) -> Result<Result<Key>> {
    if input.peek(LitStr) {
        let lit: LitStr = input.parse()?;
        return Ok(
            parse_template(&lit).map(|segments| Key::Template(KeyTemplate { lit, segments }))
        );
    }
    let expr: Expr = input.parse()?;
    if let Expr::Lit(lit) = &expr {
        return Ok(Err(Error::new_spanned(
            lit,
            "`key` takes a string template, e.g. `key = \"report:{tenant_id}\"`, or an \
             expression that implements `Display`, e.g. `key = format!(\"report:{}\", id)` or \
             `key = req.key()`",
        )));
    }
    Ok(Ok(Key::Expr(expr)))
}

/// `wait = "10s"` (checked) or `wait = EXPR` (a `std::time::Duration` at each call). The
/// outer `Result` is a syntax error, the inner one a bad value.
fn duration_arg(input: ParseStream<'_>, name: &str, example: &str) -> Result<Result<DurationArg>> {
    if input.peek(LitStr) {
        let lit: LitStr = input.parse()?;
        let value = parse_duration(&lit.value())
            .map(|value| {
                DurationArg::Literal(DurationLit {
                    value,
                    span: lit.span(),
                })
            })
            .map_err(|reason| Error::new(lit.span(), reason));
        return Ok(value);
    }
    let expr: Expr = input.parse()?;
    if let Expr::Lit(lit) = &expr {
        return Ok(Err(Error::new_spanned(
            lit,
            format!(
                "`{name}` takes a duration string, e.g. `{name} = {example}` (a plain number is \
                 seconds: `{name} = \"10\"`), or an expression of type `std::time::Duration`, \
                 e.g. `{name} = config.{name}`"
            ),
        )));
    }
    Ok(Ok(DurationArg::Expr(expr)))
}

/// Parses a duration literal with the grammar of the `DFLOCKD_*` variables: a plain number
/// is seconds (`"10"`, `"1.5"`), anything else is humantime's (`"500ms"`, `"1.5s"`,
/// `"1m30s"`). The same two lines as dflockd-core's `duration.rs` (the proc-macro cannot call
/// it without building the whole client for the compiler); the table in
/// `dflockd-core/src/duration/cases.rs` is tested against both.
pub(crate) fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let trimmed = text.trim();
    // The rule on top of humantime, the same two lines in dflockd-core's `duration.rs`: a plain
    // number is seconds.
    let plain = !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    let parsed = if plain {
        humantime::parse_duration(&format!("{trimmed}s"))
    } else {
        humantime::parse_duration(trimmed)
    };
    parsed.map_err(|e| {
        format!(r#"invalid duration {text:?}: {e}; e.g. "10" (seconds), "1.5s", "500ms", "1m30s""#)
    })
}

/// Parses a key template: text with `{param}` / `{param.field}` placeholders and `{{`, `}}`
/// escapes. Errors point at the literal.
fn parse_template(lit: &LitStr) -> Result<Vec<Segment>> {
    split_template(&lit.value()).map_err(|reason| Error::new(lit.span(), reason))
}

pub(crate) fn split_template(text: &str) -> std::result::Result<Vec<Segment>, String> {
    if text.is_empty() {
        return Err("the key must not be empty".into());
    }
    let mut segments = Vec::new();
    let mut literal = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                literal.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                literal.push('}');
            }
            '}' => {
                return Err("unmatched `}` in the key: write `}}` for a literal brace".into());
            }
            '{' => {
                let mut inner = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some('{') | None => {
                            return Err(format!(
                                "unclosed placeholder `{{{inner}` in the key: close it with `}}`, \
                                 or write `{{{{` for a literal brace"
                            ));
                        }
                        Some(c) => inner.push(c),
                    }
                }
                if !literal.is_empty() {
                    segments.push(Segment::Text(std::mem::take(&mut literal)));
                }
                segments.push(placeholder(&inner)?);
            }
            c if c.is_whitespace() || c.is_control() => {
                return Err(format!(
                    "the key contains {c:?}: keys cannot contain whitespace or control characters"
                ));
            }
            c => literal.push(c),
        }
    }
    if !literal.is_empty() {
        segments.push(Segment::Text(literal));
    }
    Ok(segments)
}

fn placeholder(inner: &str) -> std::result::Result<Segment, String> {
    if inner.trim().is_empty() {
        return Err(
            "empty placeholder `{}` in the key: name a parameter, e.g. `{tenant_id}`".into(),
        );
    }
    if inner.contains(':') {
        return Err(format!(
            "format specs are not supported in key placeholders (`{{{inner}}}`): placeholders \
             are formatted with `Display`"
        ));
    }
    let mut parts = inner.split('.');
    let root = parts.next().unwrap_or_default();
    let ident = |s: &str| {
        Ident::parse_any
            .parse_str(s)
            .map(|i| i.to_string())
            .map_err(|_| {
                format!(
                    "invalid placeholder `{{{inner}}}` in the key: expected a parameter name, \
                     optionally followed by fields (`{{param}}`, `{{param.field}}`)"
                )
            })
    };
    let root = ident(root)?;
    let members = parts
        .map(|m| {
            if !m.is_empty() && m.bytes().all(|b| b.is_ascii_digit()) {
                Ok(m.to_owned())
            } else {
                ident(m)
            }
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(Segment::Placeholder { root, members })
}

/// The grammar's table, shared with dflockd-core (which parses the `DFLOCKD_*` variables with
/// it). Only the tests read it, so the packaged crate does not need the file.
#[cfg(test)]
#[path = "../../dflockd-core/src/duration/cases.rs"]
mod duration_cases;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_follow_the_shared_table() {
        duration_cases::check(parse_duration);
    }

    fn text(s: &str) -> Segment {
        Segment::Text(s.into())
    }

    fn ph(root: &str, members: &[&str]) -> Segment {
        Segment::Placeholder {
            root: root.into(),
            members: members.iter().map(|m| (*m).to_owned()).collect(),
        }
    }

    #[test]
    fn templates() {
        assert_eq!(split_template("job"), Ok(vec![text("job")]));
        assert_eq!(
            split_template("report:{tenant_id}:{day.year}"),
            Ok(vec![
                text("report:"),
                ph("tenant_id", &[]),
                text(":"),
                ph("day", &["year"])
            ])
        );
        assert_eq!(
            split_template("{{x}}-{self.pair.0}"),
            Ok(vec![text("{x}-"), ph("self", &["pair", "0"])])
        );
        assert_eq!(split_template("{r#type}"), Ok(vec![ph("r#type", &[])]));
        for bad in [
            "", "a}", "{a", "{}", "{a:?}", "{a b}", "{a.}", "{1}", "a b", "a\tb", "{a{b}",
        ] {
            assert!(split_template(bad).is_err(), "{bad}");
        }
    }
}

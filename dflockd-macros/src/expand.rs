//! Expansion: checks the function against the arguments and wraps its body.
//!
//! ```text
//! #[exclusive(key = "report:{tenant}", wait = "10s")]
//! async fn build(tenant: u64) -> Result<Report, AppError> { BODY }
//! ```
//! becomes
//! ```text
//! async fn build(tenant: u64) -> Result<Report, AppError> {
//!     let __dflockd_client = ::dflockd::__private::default_client();
//!     let __dflockd_spec = ::dflockd::__private::Spec {
//!         function: concat!(module_path!(), "::", "build"),
//!         key: format!("report:{}", tenant),
//!         wait: Some(Duration::new(10, 0)),
//!         ..
//!     };
//!     let __dflockd_fallback = ::dflockd::__private::fallback::<Result<Report, AppError>>();
//!     let __dflockd_body = async move { BODY };
//!     ::dflockd::__private::run(__dflockd_spec, __dflockd_client, __dflockd_fallback, __dflockd_body)
//!         .await
//! }
//! ```
//! The body keeps its own tokens and spans, so errors in it land on the user's code.

use proc_macro2::{Literal, Span, TokenStream};
use quote::{ToTokens, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{AttrStyle, Error, Expr, FnArg, Ident, ItemFn, Pat, ReturnType, Signature};

use crate::attr::{
    Args, DurationArg, DurationLit, Key, KeyTemplate, Kind, Limit, OnLeaseLoss, Segment,
};

/// Expands one attribute. On any error the original item is emitted unchanged next to the
/// errors, so the rest of the crate (and the IDE) keep seeing the function.
pub(crate) fn expand(kind: Kind, args: TokenStream, item: TokenStream) -> TokenStream {
    match try_expand(kind, args, item.clone()) {
        Ok(tokens) => tokens,
        Err(error) => {
            let error = error.into_compile_error();
            quote! { #item #error }
        }
    }
}

fn try_expand(kind: Kind, args: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let mut errors = Errors::default();
    let args = errors.keep(Args::parse(kind, args));
    let func = errors.keep(syn::parse2::<ItemFn>(item).map_err(|e| {
        Error::new(
            e.span(),
            format!(
                "{} goes on an `async fn` with a body (a free function, a method, or a \
                 method of a trait impl): {e}",
                kind.attribute()
            ),
        )
    }));
    if let Some(func) = &func {
        errors.extend(check_signature(kind, &func.sig));
        if let Some(Args {
            key: Key::Template(template),
            ..
        }) = &args
        {
            errors.extend(check_template(template, &func.sig));
        }
    }
    errors.finish()?;
    let (Some(args), Some(func)) = (args, func) else {
        unreachable!("errors were reported above");
    };
    Ok(generate(&args, func))
}

/// Collects errors so that one compilation reports all of them.
#[derive(Default)]
struct Errors(Option<Error>);

impl Errors {
    fn push(&mut self, error: Error) {
        match &mut self.0 {
            Some(first) => first.combine(error),
            None => self.0 = Some(error),
        }
    }

    fn keep<T>(&mut self, result: syn::Result<T>) -> Option<T> {
        result.map_err(|e| self.push(e)).ok()
    }

    fn extend(&mut self, errors: Vec<Error>) {
        for e in errors {
            self.push(e);
        }
    }

    fn finish(self) -> syn::Result<()> {
        self.0.map_or(Ok(()), Err)
    }
}

fn check_signature(kind: Kind, sig: &Signature) -> Vec<Error> {
    let attribute = kind.attribute();
    let mut errors = Vec::new();
    if let Some(constness) = &sig.constness {
        errors.push(Error::new(
            constness.span,
            format!(
                "{attribute} cannot be used on a `const fn`: the lock is taken at run time; \
                 remove `const`"
            ),
        ));
    } else if sig.asyncness.is_none() {
        errors.push(Error::new(
            sig.fn_token.span,
            format!(
                "{attribute} needs an `async fn`: taking the lock awaits the server. Make the \
                 function `async`, or take the lock yourself with `dflockd::blocking` in \
                 synchronous code"
            ),
        ));
    }
    errors
}

/// The names a placeholder may start with: `self` for methods, and every parameter bound to
/// a plain identifier.
fn parameter_names(sig: &Signature) -> Vec<String> {
    sig.inputs
        .iter()
        .filter_map(|arg| match arg {
            FnArg::Receiver(_) => Some("self".to_owned()),
            FnArg::Typed(typed) => match &*typed.pat {
                Pat::Ident(pat) => Some(pat.ident.to_string()),
                _ => None,
            },
        })
        .collect()
}

fn check_template(template: &KeyTemplate, sig: &Signature) -> Vec<Error> {
    let names = parameter_names(sig);
    let mut errors = Vec::new();
    for segment in &template.segments {
        let Segment::Placeholder { root, .. } = segment else {
            continue;
        };
        if names.iter().any(|n| n == root) {
            continue;
        }
        let known = if names.is_empty() {
            format!("`{}` has no parameters", sig.ident)
        } else {
            let list: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
            format!("the parameters of `{}` are {}", sig.ident, list.join(", "))
        };
        let what = if root == "self" {
            "`{self}` needs a method with a `self` parameter".to_owned()
        } else {
            format!("`{root}` is not a parameter")
        };
        errors.push(Error::new(
            template.lit.span(),
            format!(
                "unknown placeholder `{{{root}}}` in the key: {what}; {known} (write `{{{{` and \
                 `}}}}` for literal braces)"
            ),
        ));
    }
    errors
}

fn ident(name: &str, span: Span) -> Ident {
    match name.strip_prefix("r#") {
        Some(raw) => Ident::new_raw(raw, span),
        None => Ident::new(name, span),
    }
}

/// The expression that makes the key: a template's `format!`, spanned at the literal (so that
/// a field that does not exist, or a value without `Display`, is reported there), or the
/// key expression's `Display`, spanned at the expression.
fn key_expr(key: &Key, krate: &TokenStream) -> TokenStream {
    let template = match key {
        Key::Template(template) => template,
        Key::Expr(expr) => {
            let key = borrowed(expr);
            return quote_spanned!(expr.span()=> #krate::__private::key_from(#key));
        }
    };
    let span = template.lit.span();
    let mut format = String::new();
    let mut values = Vec::new();
    for segment in &template.segments {
        match segment {
            Segment::Text(text) => format.push_str(&text.replace('{', "{{").replace('}', "}}")),
            Segment::Placeholder { root, members } => {
                format.push_str("{}");
                let root = ident(root, span);
                let members = members.iter().map(|m| match m.parse::<u32>() {
                    Ok(index) => syn::Index { index, span }.into_token_stream(),
                    Err(_) => ident(m, span).into_token_stream(),
                });
                values.push(quote_spanned!(span=> #root #(. #members)*));
            }
        }
    }
    let mut format = Literal::string(&format);
    format.set_span(span);
    if values.is_empty() {
        quote_spanned!(span=> #krate::__private::String::from(#format))
    } else {
        quote_spanned!(span=> #krate::__private::format!(#format, #(#values),*))
    }
}

/// `&expr`, so that the key expression does not move what the body uses. Parenthesized only
/// where precedence needs it: the compiler underlines an expression from its first token to
/// its last only when no parentheses with a single span of ours enclose it.
fn borrowed(expr: &Expr) -> TokenStream {
    let span = expr.span();
    match expr {
        Expr::Path(_)
        | Expr::Field(_)
        | Expr::MethodCall(_)
        | Expr::Call(_)
        | Expr::Macro(_)
        | Expr::Index(_)
        | Expr::Paren(_)
        | Expr::Lit(_) => quote_spanned!(span=> &#expr),
        _ => quote_spanned!(span=> &(#expr)),
    }
}

/// Whether a type mentions `impl Trait` (which cannot be written in a turbofish).
fn mentions_impl(tokens: TokenStream) -> bool {
    tokens.into_iter().any(|tree| match tree {
        proc_macro2::TokenTree::Ident(ident) => ident == "impl",
        proc_macro2::TokenTree::Group(group) => mentions_impl(group.stream()),
        _ => false,
    })
}

/// A duration argument as an `Option<Duration>`: a literal's value, or the expression through
/// `duration_from`, spanned at the expression so that a wrong type is reported there.
fn duration(krate: &TokenStream, value: Option<&DurationArg>) -> TokenStream {
    match value {
        Some(DurationArg::Literal(DurationLit { value, span })) => {
            let secs = Literal::u64_suffixed(value.as_secs());
            let nanos = Literal::u32_suffixed(value.subsec_nanos());
            quote_spanned!(*span=> #krate::__private::Some(#krate::__private::Duration::new(#secs, #nanos)))
        }
        Some(DurationArg::Expr(expr)) => {
            // By value: durations are `Copy`, and the whole expression is underlined on error.
            quote_spanned!(expr.span()=> #krate::__private::Some(#krate::__private::duration_from(#expr)))
        }
        None => quote!(#krate::__private::None),
    }
}

fn generate(args: &Args, func: ItemFn) -> TokenStream {
    let ItemFn {
        attrs,
        vis,
        sig,
        block,
        ..
    } = func;
    let (outer, inner): (Vec<_>, Vec<_>) = attrs
        .into_iter()
        .partition(|a| matches!(a.style, AttrStyle::Outer));
    let krate = match &args.krate {
        Some(path) => path.to_token_stream(),
        None => quote!(::dflockd),
    };

    let client = match &args.client {
        Some(expr) => {
            quote_spanned!(expr.span()=> #krate::__private::client_from(&(#expr)))
        }
        None => quote!(#krate::__private::default_client()),
    };
    let key = key_expr(&args.key, &krate);
    let limit = match &args.limit {
        Some(Limit::Literal(n, span)) => {
            let n = Literal::u32_suffixed(*n);
            quote_spanned!(*span=> #krate::__private::Some(#n))
        }
        Some(Limit::Expr(expr)) => quote_spanned!(expr.span()=> #krate::__private::Some(#expr)),
        None => quote!(#krate::__private::None),
    };
    let wait = duration(&krate, args.wait.as_ref());
    let lease = duration(&krate, args.lease.as_ref());
    let hold_at_least = duration(&krate, args.hold_at_least.as_ref());
    let on_lease_loss = match args.on_lease_loss {
        OnLeaseLoss::Cancel => quote!(#krate::__private::OnLeaseLoss::Cancel),
        OnLeaseLoss::Continue => quote!(#krate::__private::OnLeaseLoss::Continue),
    };
    let name = sig.ident.to_string();

    // How the return type says "not run" (`Outcome`), in a statement of its own spanned at
    // the return type, so that an unsupported type is reported once, there. `impl Trait`
    // cannot be named in a turbofish; such types are left to inference.
    let fallback = match &sig.output {
        ReturnType::Type(_, ty) if !mentions_impl(ty.to_token_stream()) => {
            quote_spanned!(ty.span()=> #krate::__private::fallback::<#ty>())
        }
        ReturnType::Type(_, ty) => quote_spanned!(ty.span()=> #krate::__private::fallback()),
        ReturnType::Default => quote!(#krate::__private::fallback::<()>()),
    };
    let body = quote_spanned! {block.span()=>
        #[allow(clippy::redundant_async_block)]
        let __dflockd_body = async move #block;
    };

    quote! {
        #(#outer)*
        #vis #sig {
            #(#inner)*
            let __dflockd_client = #client;
            let __dflockd_spec = #krate::__private::Spec {
                function: #krate::__private::concat!(#krate::__private::module_path!(), "::", #name),
                key: #key,
                limit: #limit,
                wait: #wait,
                lease: #lease,
                hold_at_least: #hold_at_least,
                on_lease_loss: #on_lease_loss,
            };
            let __dflockd_fallback = #fallback;
            #body
            #krate::__private::run(
                __dflockd_spec,
                __dflockd_client,
                __dflockd_fallback,
                __dflockd_body,
            )
            .await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    fn expand_str(args: TokenStream, item: TokenStream) -> String {
        expand(Kind::Lock, args, item).to_string()
    }

    #[test]
    fn names_parameters_and_self() {
        let func: ItemFn = syn::parse_quote! {
            async fn f(&self, id: u64, mut day: Day, (a, b): (u8, u8), _: u8) {}
        };
        assert_eq!(parameter_names(&func.sig), ["self", "id", "day"]);
    }

    #[test]
    fn finds_impl_trait_anywhere_in_a_type() {
        assert!(mentions_impl(quote!(Option<impl Display>)));
        assert!(mentions_impl(quote!(Result<(u8, Box<impl Fn()>), E>)));
        assert!(!mentions_impl(quote!(Result<Implementation, E>)));
    }

    #[test]
    fn wraps_the_body_and_names_the_return_type() {
        let out = expand_str(
            quote!(key = "k:{id}", wait = "1s", crate = "::renamed"),
            quote!(
                pub async fn f(id: u64) -> Result<u8, E> {
                    Ok(1)
                }
            ),
        );
        assert!(
            out.contains("pub async fn f (id : u64) -> Result < u8 , E >"),
            "{out}"
        );
        assert!(out.contains(":: renamed :: __private :: fallback :: < Result < u8 , E > >"));
        assert!(out.contains("async move { Ok (1) }"), "{out}");
        assert!(out.contains("Duration :: new (1u64 , 0u32)"), "{out}");
        assert!(
            !out.contains(":: dflockd ::"),
            "the crate override is used everywhere"
        );

        let out = expand_str(
            quote!(key = "k"),
            quote!(
                async fn f() -> Option<impl Display> {
                    None
                }
            ),
        );
        assert!(out.contains("__private :: fallback ()"), "{out}");
    }

    #[test]
    fn expressions_are_evaluated_in_the_body_and_borrowed() {
        let out = expand_str(
            quote!(
                key = req.key(),
                wait = cfg.wait,
                lease = "10",
                hold_at_least = a + b
            ),
            quote!(
                async fn f(req: Req, cfg: Cfg, a: Duration, b: Duration) {}
            ),
        );
        assert!(out.contains("key_from (& req . key ())"), "{out}");
        assert!(out.contains("duration_from (cfg . wait)"), "{out}");
        assert!(out.contains("duration_from (a + b)"), "{out}");
        assert!(out.contains("Duration :: new (10u64 , 0u32)"), "{out}");

        // Precedence: a binary expression is borrowed as a whole.
        let out = expand_str(
            quote!(key = prefix + &id),
            quote!(
                async fn f() {}
            ),
        );
        assert!(out.contains("key_from (& (prefix + & id))"), "{out}");
        // A template's placeholders are checked; an expression's names are the compiler's.
        let out = expand_str(
            quote!(key = nope),
            quote!(
                async fn f() {}
            ),
        );
        assert!(!out.contains("compile_error"), "{out}");
    }

    #[test]
    fn errors_keep_the_original_item() {
        let item = quote!(
            async fn f(id: u64) {}
        );
        let out = expand_str(quote!(key = "k:{nope}"), item.clone());
        assert!(out.starts_with(&item.to_string()), "{out}");
        assert!(out.contains("compile_error"), "{out}");
        assert!(!out.contains("__dflockd_"), "{out}");
    }
}

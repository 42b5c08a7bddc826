//! Code generation: collects the stacked attributes, builds the model, validates it
//! and the function, and rewrites the function's body into calls of the runtime's
//! `Site`, `Service`, `Call` and `Hooks` (see `docs/EXPANSION.md`).
//!
//! On any error the function is emitted unchanged (minus our attributes) next to the
//! errors, so the rest of the crate still type-checks and IDEs keep working.

use std::collections::HashSet;

use proc_macro2::{Group, Ident, Literal, Span, TokenStream, TokenTree};
use quote::{quote, quote_spanned, ToTokens};
use syn::spanned::Spanned as _;
use syn::visit_mut::{self, VisitMut};
use syn::{Attribute, Block, Expr, FnArg, Meta, Pat, PatIdent, ReturnType, Signature, Token, Type};

use crate::model::Model;
use crate::parse::{
    self, Attr, AttrArgs, AttrKind, Dur, FnPath, RateValue, ServiceValue, Spanned, WindowValue,
};
use crate::validate::{self, Shape};

/// The entry point of every attribute.
pub(crate) fn expand(kind: AttrKind, args: TokenStream, item: TokenStream) -> TokenStream {
    let mut func = match FnItem::parse(item.clone()) {
        Some(f) => f,
        None => {
            let name = kind.name();
            let e = syn::Error::new(
                Span::call_site(),
                format!("`#[{name}]` goes on a `fn` or `async fn` (a free function or a method)"),
            );
            return quote!(#item)
                .into_iter()
                .chain(e.to_compile_error())
                .collect();
        }
    };

    let mut errors = Vec::new();
    let mut attrs = vec![Attr {
        kind,
        span: Span::call_site(),
        args: AttrArgs::List(args),
    }];
    func.attrs_mut().retain(|a| match our_attr(a) {
        Some(found) => {
            attrs.push(found);
            false
        }
        None => true,
    });

    let mut model = Model::default();
    for attr in &attrs {
        match parse::parse_attr(attr) {
            Ok(parsed) => model.add(attr.span, parsed, &mut errors),
            Err(e) => errors.extend(parse::polish(e, &format!("`#[{}]`", attr.kind.name()))),
        }
    }

    let shape = match &func {
        FnItem::Trait(t) if t.default.is_none() => {
            let at = t.semi_token.map_or_else(|| t.sig.ident.span(), |s| s.span);
            errors.push(syn::Error::new(
                at,
                format!(
                    "`#[{}]` needs a function body: put it on the method in the `impl` block, not on the trait's declaration",
                    kind.name()
                ),
            ));
            None
        }
        _ => {
            let boxed = func.block().is_some_and(|b| boxed_async_block(b).is_some());
            validate::check_fn(func.sig(), kind.name(), boxed, &mut errors)
        }
    };
    if let Some(shape) = &shape {
        validate::check_policy(&model, !matches!(shape, Shape::Sync), &mut errors);
    }

    match (shape, errors.is_empty()) {
        (Some(shape), true) => {
            let mut out = func.clone();
            match generate(&model, shape, &mut out) {
                Ok(()) => out.into_token_stream(),
                Err(e) => emit_errors(vec![e], &func),
            }
        }
        _ => emit_errors(errors, &func),
    }
}

fn emit_errors(errors: Vec<syn::Error>, func: &FnItem) -> TokenStream {
    let errors = errors.iter().map(syn::Error::to_compile_error);
    quote!(#(#errors)* #func)
}

/// Our attribute, when `attr` is one: matched by the last segment of its path, alone
/// or under `resilience_runtime::`, `resilience::` or `resilience_macros::`.
fn our_attr(attr: &Attribute) -> Option<Attr> {
    let path = attr.path();
    let last = path.segments.last()?;
    let kind = AttrKind::from_name(&last.ident.to_string())?;
    if path.segments.len() > 1 {
        let first = path.segments[0].ident.to_string();
        if !["resilience_runtime", "resilience", "resilience_macros"].contains(&first.as_str()) {
            return None;
        }
    }
    let args = match &attr.meta {
        Meta::Path(_) => AttrArgs::List(TokenStream::new()),
        Meta::List(l) => AttrArgs::List(l.tokens.clone()),
        Meta::NameValue(nv) => AttrArgs::Value(nv.value.clone()),
    };
    Some(Attr {
        kind,
        span: last.ident.span(),
        args,
    })
}

/// The item the attribute is on.
#[derive(Clone)]
enum FnItem {
    Item(syn::ItemFn),
    Trait(syn::TraitItemFn),
}

impl FnItem {
    fn parse(tokens: TokenStream) -> Option<FnItem> {
        syn::parse2::<syn::ItemFn>(tokens.clone())
            .map(FnItem::Item)
            .or_else(|_| syn::parse2::<syn::TraitItemFn>(tokens).map(FnItem::Trait))
            .ok()
    }
    fn attrs_mut(&mut self) -> &mut Vec<Attribute> {
        match self {
            FnItem::Item(f) => &mut f.attrs,
            FnItem::Trait(f) => &mut f.attrs,
        }
    }
    fn sig(&self) -> &Signature {
        match self {
            FnItem::Item(f) => &f.sig,
            FnItem::Trait(f) => &f.sig,
        }
    }
    fn sig_mut(&mut self) -> &mut Signature {
        match self {
            FnItem::Item(f) => &mut f.sig,
            FnItem::Trait(f) => &mut f.sig,
        }
    }
    fn block(&self) -> Option<&Block> {
        match self {
            FnItem::Item(f) => Some(&f.block),
            FnItem::Trait(f) => f.default.as_ref(),
        }
    }
    fn block_mut(&mut self) -> Option<&mut Block> {
        match self {
            FnItem::Item(f) => Some(&mut f.block),
            FnItem::Trait(f) => f.default.as_mut(),
        }
    }
}

impl ToTokens for FnItem {
    fn to_tokens(&self, tokens: &mut TokenStream) {
        match self {
            FnItem::Item(f) => f.to_tokens(tokens),
            FnItem::Trait(f) => f.to_tokens(tokens),
        }
    }
}

/// The `async move { .. }` of a body `Box::pin(async move { .. })`.
fn boxed_async_block(block: &Block) -> Option<&syn::ExprAsync> {
    let [syn::Stmt::Expr(Expr::Call(call), None)] = block.stmts.as_slice() else {
        return None;
    };
    let Expr::Path(f) = &*call.func else {
        return None;
    };
    let mut segs = f.path.segments.iter().rev();
    if segs.next()?.ident != "pin" || segs.next().is_some_and(|s| s.ident != "Box") {
        return None;
    }
    match call.args.iter().collect::<Vec<_>>().as_slice() {
        [Expr::Async(a)] if a.capture.is_some() => Some(a),
        _ => None,
    }
}

fn boxed_async_block_mut(block: &mut Block) -> Option<&mut syn::ExprAsync> {
    let [syn::Stmt::Expr(Expr::Call(call), None)] = block.stmts.as_mut_slice() else {
        return None;
    };
    match call.args.iter_mut().next() {
        Some(Expr::Async(a)) => Some(a),
        _ => None,
    }
}

/// How an argument is passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pass {
    /// `&T`: copied into each attempt.
    Ref,
    /// `&mut T`: reborrowed for each attempt.
    RefMut,
    /// `T`: cloned for each attempt (and for the fallback).
    Owned,
}

fn pass_of(ty: &Type) -> Pass {
    match ty {
        Type::Reference(r) if r.mutability.is_some() => Pass::RefMut,
        Type::Reference(_) => Pass::Ref,
        Type::Group(g) => pass_of(&g.elem),
        Type::Paren(p) => pass_of(&p.elem),
        _ => Pass::Owned,
    }
}

/// One argument (or the receiver) and how the expansion binds it.
struct Arg {
    /// Its name in the signature (`self` for the receiver).
    outer: TokenStream,
    /// Its type, `impl Trait` replaced by `_`.
    ty: Type,
    /// Its name inside the body (`__resilience_self` for the receiver).
    inner: Ident,
    pass: Pass,
    mutability: Option<Token![mut]>,
    /// A pattern the argument is destructured into inside the body.
    destructure: Option<Box<Pat>>,
    /// The body mentions it.
    used: bool,
    /// Where to report a missing `Clone`.
    span: Span,
    receiver: bool,
}

/// Rewrites `func` into its expansion.
fn generate(m: &Model, shape: Shape, func: &mut FnItem) -> syn::Result<()> {
    let is_async = !matches!(shape, Shape::Sync);
    let retries = m.retries();
    let fallback = m.fallback.clone();

    // The body to run per attempt, with `self` renamed so it can be re-bound.
    let mut body: Block = match (&shape, func.block()) {
        (Shape::Boxed { .. }, Some(b)) => {
            boxed_async_block(b).expect("checked shape").block.clone()
        }
        (_, Some(b)) => b.clone(),
        (_, None) => unreachable!("a function without a body was rejected"),
    };
    let mut renamer = RenameSelf { found: false };
    renamer.visit_block_mut(&mut body);
    let mut mentioned = HashSet::new();
    collect_idents(body.to_token_stream(), &mut mentioned);

    let ret: Type = match &shape {
        Shape::Boxed { output } => (**output).clone(),
        _ => match &func.sig().output {
            ReturnType::Type(_, ty) => (**ty).clone(),
            ReturnType::Default => unreachable!("checked: returns a Result"),
        },
    };
    let mut ret_infer = ret.clone();
    ImplTraitToInfer.visit_type_mut(&mut ret_infer);
    let ret_span = Span::call_site().located_at(ret.span());
    let p = private(m, Span::call_site());
    let p_ret = private(m, ret_span);
    let mixed = Span::mixed_site();

    // Arguments: how each is bound, and the signature with patterns replaced.
    let mut args = Vec::new();
    for (i, input) in func.sig_mut().inputs.iter_mut().enumerate() {
        match input {
            FnArg::Receiver(r) => {
                let pass = pass_of(&r.ty);
                let mutability = if r.reference.is_none() {
                    r.mutability
                } else {
                    None
                };
                let self_token = r.self_token;
                args.push(Arg {
                    outer: quote!(#self_token),
                    ty: infer_impl_trait(&r.ty),
                    inner: Ident::new("__resilience_self", self_token.span),
                    pass,
                    mutability,
                    destructure: None,
                    used: renamer.found,
                    span: self_token.span,
                    receiver: true,
                });
            }
            FnArg::Typed(pt) => {
                let pass = pass_of(&pt.ty);
                let span = pt.pat.span();
                match &*pt.pat {
                    Pat::Ident(PatIdent {
                        ident,
                        mutability,
                        by_ref: None,
                        subpat: None,
                        ..
                    }) => {
                        args.push(Arg {
                            outer: quote!(#ident),
                            ty: infer_impl_trait(&pt.ty),
                            inner: ident.clone(),
                            pass,
                            mutability: *mutability,
                            destructure: None,
                            used: mentioned.contains(&ident.to_string()),
                            span,
                            receiver: false,
                        });
                    }
                    Pat::Wild(_) if fallback.is_none() => {}
                    pat => {
                        let ident =
                            Ident::new(&format!("__resilience_arg{i}"), mixed.located_at(span));
                        let destructure = (!matches!(pat, Pat::Wild(_))).then(|| pt.pat.clone());
                        args.push(Arg {
                            outer: quote!(#ident),
                            ty: infer_impl_trait(&pt.ty),
                            inner: ident.clone(),
                            pass,
                            mutability: None,
                            used: destructure.is_some(),
                            destructure,
                            span,
                            receiver: false,
                        });
                        *pt.pat = Pat::Ident(PatIdent {
                            attrs: vec![],
                            by_ref: None,
                            mutability: None,
                            ident,
                            subpat: None,
                        });
                    }
                }
            }
        }
    }

    let mut scope = Vec::new();
    let mut per_attempt = Vec::new();
    let mut strip_mut = HashSet::new();
    for a in &args {
        let (s, per, strip) = bindings(a, is_async, retries, fallback.is_some(), m);
        scope.extend(s);
        per_attempt.extend(per);
        if strip {
            strip_mut.insert(a.inner.to_string());
        }
    }
    for input in func.sig_mut().inputs.iter_mut() {
        match input {
            FnArg::Typed(pt) => {
                if let Pat::Ident(pi) = &mut *pt.pat {
                    if strip_mut.contains(&pi.ident.to_string()) {
                        pi.mutability = None;
                    }
                }
            }
            FnArg::Receiver(r) => {
                if r.reference.is_none() && strip_mut.contains("__resilience_self") {
                    r.mutability = None;
                }
            }
        }
    }

    let destructures = args.iter().filter_map(|a| {
        let pat = a.destructure.as_ref()?;
        let inner = &a.inner;
        Some(quote!(let #pat = #inner;))
    });
    let body = quote!({ #(#destructures)* #body });
    // An async block's output type is inferred from its body, not from the bound
    // it is passed to: written out (as `async_trait` does), a `return` or a tail of
    // the wrong type is reported where it is, not at the attribute.
    let async_body = {
        let ret_var = Ident::new("__resilience_ret", mixed);
        // A body that ends in `return` diverges inside the `let`: not the user's
        // doing, so clippy's lint for it is off there (as `async_trait` does).
        quote!({
            #[allow(clippy::diverging_sub_expression)]
            let #ret_var: #ret_infer = #body;
            #[allow(unreachable_code)]
            #ret_var
        })
    };

    // The site: name, settings, hooks, service.
    let (name_fn, site_name) = match m.service.as_ref().map(|s| &s.value) {
        Some(ServiceValue::Fixed(name)) => (None, quote!(#p::SiteName::Fixed(#name))),
        _ => (
            Some(quote_spanned! {mixed=>
                fn __resilience_name() -> &'static str {
                    #p::generated_name(::core::any::type_name_of_val(&__resilience_name))
                }
            }),
            quote_spanned!(mixed=> #p::SiteName::Generated(__resilience_name)),
        ),
    };
    let spec = spec_tokens(m, &p);
    let hooks = hooks_tokens(m, &p_ret, ret_span);
    // With an `impl Trait` in the return type, `E` is left to inference too.
    let hooks_ty = if ret_infer == ret {
        quote_spanned!(ret_span=> : &#p_ret::Hooks<<#ret as #p_ret::ResultLike>::Err>)
    } else {
        TokenStream::new()
    };
    // With an `impl Trait` in the return type the `Ok` type is left to inference.
    let ok_ty = if ret_infer == ret {
        quote_spanned!(ret_span=> <#ret_infer as #p_ret::ResultLike>::Ok)
    } else {
        quote_spanned!(ret_span=> _)
    };
    let svc = match m.service.as_ref() {
        Some(Spanned {
            value: ServiceValue::Computed(expr),
            span,
            ..
        }) => {
            let at = Span::call_site().located_at(*span);
            let key = quote_spanned!(at=> ::core::convert::AsRef::<str>::as_ref(&(#expr)));
            quote_spanned! {mixed=>
                let __resilience_key = __RESILIENCE_SITE.keyed(#key);
                let __resilience_svc: &#p::Service = &__resilience_key;
            }
        }
        _ => quote_spanned! {mixed=>
            let __resilience_svc: &'static #p::Service = __RESILIENCE_SITE.service();
        },
    };

    // An argument lent `&mut` to each attempt (`&mut self` included).
    let lends_mut = args
        .iter()
        .any(|a| a.used && matches!(a.pass, Pass::RefMut));
    let run = if is_async && !retries && m.needs_no_timer() {
        // One attempt under policies that need no timer: the future holds the body,
        // the service and, while the body runs, its admission, nothing else. The
        // body is made once the call is admitted.
        quote_spanned! {mixed=>
            {
                #(#scope)*
                #(#per_attempt)*
                __resilience_svc.once_lean::<#ok_ty, _, _, _>(__resilience_hooks, move || async move #async_body).await
            }
        }
    } else if is_async && !retries {
        // One attempt: the attempt and the total timeout are one future, and a first
        // attempt through the lane builds nothing but its body. A retry that live
        // configuration gives the service does not apply to it.
        quote_spanned! {mixed=>
            {
                #(#scope)*
                #(#per_attempt)*
                __resilience_svc.once::<#ok_ty, _, _>(__resilience_hooks, async move #async_body).await
            }
        }
    } else if is_async && !lends_mut {
        // Every attempt, the backoff and the total timeout in one future written by
        // hand: a closure makes each attempt's copies of the arguments and its
        // body, and a first attempt through the lane builds nothing else.
        quote_spanned! {mixed=>
            {
                #(#scope)*
                __resilience_svc.retry::<#ok_ty, _, _, _>(__resilience_hooks, move || {
                    #(#per_attempt)*
                    async move #async_body
                }).await
            }
        }
    } else if is_async {
        // An argument lends each attempt a `&mut`: a closure called per attempt
        // cannot return a body borrowing through it, so the attempts are a loop
        // in the function's own future, and the call's state, once it leaves the
        // lane, is held out of line by the `Lend`.
        quote_spanned! {mixed=>
            {
                #(#scope)*
                let mut __resilience_call = __resilience_svc.lend(__resilience_hooks);
                loop {
                    #(#per_attempt)*
                    match __resilience_call.attempt::<#ok_ty, _>(async move #async_body).await {
                        #p::ControlFlow::Break(__resilience_result) => break __resilience_result,
                        #p::ControlFlow::Continue(()) => {}
                    }
                }
            }
        }
    } else if retries {
        // Every attempt through one call taken by value (`retry_sync`): a first
        // attempt that succeeds keeps the call's state in registers, and the
        // function needs no stack frame for it. Each attempt makes its own copies of
        // the arguments, then runs the body.
        quote_spanned! {mixed=>
            {
                #(#scope)*
                __resilience_svc.call(__resilience_hooks).retry_sync::<#ok_ty>(|| {
                    #(#per_attempt)*
                    #p::attempt_body(move || #body)
                })
            }
        }
    } else {
        // The only attempt takes the call by value: its state stays in registers.
        quote_spanned! {mixed=>
            {
                #(#scope)*
                #(#per_attempt)*
                __resilience_svc.call(__resilience_hooks).attempt_once_sync::<#ok_ty>(move || #body)
            }
        }
    };
    let result = match &fallback {
        None => run,
        Some(fb) => {
            let at = Span::call_site().located_at(fb.span);
            let path = &fb.value.0;
            let fb_args = args.iter().map(|a| &a.outer);
            // The argument types are written out so that a fallback of the wrong shape
            // fails the trait bound (with its readable message), not a tuple mismatch.
            let fb_tys = args.iter().map(|a| &a.ty);
            let p_fb = private(m, at);
            let err = Ident::new("__resilience_err", mixed);
            let call = if is_async {
                quote_spanned!(at=> <_ as #p_fb::Fallback<(#(#fb_tys,)*), _, _, _>>::call_fallback(#path, (#(#fb_args,)*), #err).await)
            } else {
                quote_spanned!(at=> <_ as #p_fb::SyncFallback<(#(#fb_tys,)*), _, _, _>>::call_fallback(#path, (#(#fb_args,)*), #err))
            };
            quote_spanned! {mixed=>
                match #run {
                    ::core::result::Result::Ok(__resilience_value) => ::core::result::Result::Ok(__resilience_value),
                    ::core::result::Result::Err(__resilience_err) => {
                        __resilience_svc.fallback_used();
                        #call
                    }
                }
            }
        }
    };

    let expansion = quote_spanned! {mixed=>
        {
            #name_fn
            static __RESILIENCE_SITE: #p::Site = #p::Site::new(#site_name, #spec);
            // An inline const: the hooks live in static memory, not built per call.
            let __resilience_hooks #hooks_ty = &const { #p::Hooks { #hooks } };
            #svc
            #result
        }
    };
    let new_block: Block = syn::parse2(expansion)?;
    match shape {
        Shape::Boxed { .. } => {
            let block = func.block_mut().expect("has a body");
            boxed_async_block_mut(block).expect("checked shape").block = new_block;
        }
        _ => *func.block_mut().expect("has a body") = new_block,
    }
    Ok(())
}

/// The runtime's hidden module, at `span`.
fn private(m: &Model, span: Span) -> TokenStream {
    match &m.krate {
        Some(k) => {
            let path = &k.value.0;
            quote_spanned!(span=> #path::__private)
        }
        None => quote_spanned!(span=> ::resilience_runtime::__private),
    }
}

/// The `let`s that bind an argument before the attempts (`scope`) and before each
/// attempt (`per`), and whether its `mut` moves from the signature to those `let`s.
///
/// Owned arguments are cloned per attempt under a retry, and once more for the
/// fallback; `&mut` ones are reborrowed; `&` ones are copied by the `move` blocks.
fn bindings(
    a: &Arg,
    is_async: bool,
    retries: bool,
    fallback: bool,
    m: &Model,
) -> (Option<TokenStream>, Option<TokenStream>, bool) {
    if !a.used {
        return (None, None, false);
    }
    let (o, i, mu) = (&a.outer, &a.inner, &a.mutability);
    let at = Span::call_site().located_at(a.span);
    let p = private(m, at);
    let clone = |src: &dyn ToTokens| quote_spanned!(at=> #p::clone_arg(&#src));
    let allow = quote!(#[allow(unused_variables)]);
    match a.pass {
        Pass::Owned => {
            if retries {
                let per_src = if is_async && (fallback || a.receiver) {
                    i.to_token_stream()
                } else {
                    o.clone()
                };
                let per = clone(&per_src);
                let scope = if !is_async {
                    None
                } else if fallback {
                    let c = clone(o);
                    Some(quote!(#allow let #i = #c;))
                } else if a.receiver {
                    Some(quote!(#allow let #i = #o;))
                } else {
                    None
                };
                (scope, Some(quote!(let #mu #i = #per;)), true)
            } else if fallback {
                let c = clone(o);
                (Some(quote!(let #mu #i = #c;)), None, true)
            } else if a.receiver {
                (Some(quote!(let #mu #i = #o;)), None, true)
            } else {
                (None, None, false)
            }
        }
        Pass::RefMut => {
            if retries {
                if is_async {
                    let scope = (fallback || a.receiver).then(|| quote!(#allow let #i = &mut *#o;));
                    (scope, Some(quote!(let #mu #i = &mut *#i;)), true)
                } else {
                    (None, Some(quote!(let #mu #i = &mut *#o;)), true)
                }
            } else if fallback || a.receiver {
                (Some(quote!(let #mu #i = &mut *#o;)), None, true)
            } else {
                (None, None, false)
            }
        }
        Pass::Ref => {
            let scope = a.receiver.then(|| quote!(let #i = #o;));
            let per = mu.map(|mu| quote!(let #mu #i = #i;));
            (scope, per, mu.is_some())
        }
    }
}

fn dur(p: &TokenStream, d: Dur) -> TokenStream {
    let n = Literal::u64_suffixed(d.0);
    quote!(#p::Duration::from_nanos(#n))
}

fn some(t: TokenStream) -> TokenStream {
    quote!(::core::option::Option::Some(#t))
}

/// The `Spec { .. }` of the written keys.
fn spec_tokens(m: &Model, p: &TokenStream) -> TokenStream {
    let mut f: Vec<TokenStream> = Vec::new();
    let count = |c: &Option<Spanned<parse::Count>>| {
        c.as_ref()
            .map(|c| some(Literal::u32_suffixed(c.value.0).into_token_stream()))
    };
    let ratio = |r: f64| some(Literal::f64_suffixed(r).into_token_stream());
    let duration = |d: &Option<Spanned<Dur>>| d.as_ref().map(|d| some(dur(p, d.value)));
    macro_rules! field {
        ($name:ident, $value:expr) => {
            if let Some(v) = $value {
                f.push(quote!($name: #v));
            }
        };
    }
    if let Some(s) = &m.strategy {
        let v = Ident::new(s.value.variant(), Span::call_site());
        f.push(quote!(strategy: ::core::option::Option::Some(#p::Strategy::#v)));
    }
    if m.breaker.present() {
        let b = &m.breaker.keys;
        f.push(quote!(breaker: true));
        field!(failure_threshold, count(&b.failure_threshold));
        field!(
            failure_rate,
            b.failure_rate.as_ref().map(|r| ratio(r.value.0))
        );
        match b.window.as_ref().map(|w| w.value) {
            Some(WindowValue::Calls(n)) => {
                let n = Literal::u32_suffixed(n);
                f.push(quote!(window_calls: ::core::option::Option::Some(#n)));
            }
            Some(WindowValue::Time(d)) => {
                let d = some(dur(p, d));
                f.push(quote!(window_time: #d));
            }
            None => {}
        }
        field!(min_calls, count(&b.min_calls));
        field!(slow_call, duration(&b.slow_call));
        field!(
            slow_call_rate,
            b.slow_call_rate.as_ref().map(|r| ratio(r.value.0))
        );
        field!(cooldown, duration(&b.cooldown));
        field!(cooldown_max, duration(&b.cooldown_max));
        field!(half_open_calls, count(&b.half_open_calls));
        field!(success_threshold, count(&b.success_threshold));
    }
    if m.retry.present() {
        let r = &m.retry.keys;
        f.push(quote!(retry: true));
        field!(max_attempts, count(&r.max_attempts));
        field!(delay, duration(&r.delay));
        field!(
            backoff,
            r.backoff.as_ref().map(|b| {
                let v = Ident::new(b.value.variant(), Span::call_site());
                some(quote!(#p::Backoff::#v))
            })
        );
        field!(
            multiplier,
            r.multiplier
                .as_ref()
                .map(|x| some(Literal::f64_suffixed(x.value.0).into_token_stream()))
        );
        field!(max_delay, duration(&r.max_delay));
        field!(
            jitter,
            r.jitter.as_ref().map(|j| {
                let v = Ident::new(j.value.variant(), Span::call_site());
                some(quote!(#p::Jitter::#v))
            })
        );
        field!(max_elapsed, duration(&r.max_elapsed));
    }
    field!(timeout, duration(&m.timeout));
    field!(total_timeout, duration(&m.total_timeout));
    if m.bulkhead.present() {
        let b = &m.bulkhead.keys;
        f.push(quote!(bulkhead: true));
        field!(max_concurrent, count(&b.max_concurrent));
        field!(bulkhead_max_wait, duration(&b.max_wait));
    }
    if m.rate_limit.present() {
        let l = &m.rate_limit.keys;
        f.push(quote!(rate_limit: true));
        field!(
            rate,
            l.rate.as_ref().map(|r| {
                let RateValue { permits, per } = r.value;
                let permits = Literal::u32_suffixed(permits);
                let per = dur(p, per);
                some(quote!(#p::Rate::new(#permits, #per)))
            })
        );
        field!(burst, count(&l.burst));
        field!(rate_max_wait, duration(&l.max_wait));
    }
    quote!(#p::Spec { #(#f,)* ..#p::Spec::EMPTY })
}

/// The `Hooks { .. }` fields: the user's functions, and the conversion from
/// `ResilienceError` when a policy can reject or time out.
fn hooks_tokens(m: &Model, p_ret: &TokenStream, ret_span: Span) -> TokenStream {
    // Every field is written (no `..Hooks::NONE`), so user crates linting
    // `clippy::needless_update` see nothing to flag.
    let mut out = TokenStream::new();
    let mut hook = |name: &str, path: Option<&Option<Spanned<FnPath>>>| {
        let ident = Ident::new(name, Span::call_site());
        match path.and_then(Option::as_ref) {
            Some(path) => {
                let at = Span::call_site().located_at(path.span);
                let value = &path.value.0;
                out.extend(quote_spanned!(at=> #ident: ::core::option::Option::Some(#value),));
            }
            None => out.extend(quote!(#ident: ::core::option::Option::None,)),
        }
    };
    let breaker = m.breaker.present();
    let retry = m.retry.present();
    hook("record_if", breaker.then_some(&m.breaker.keys.record_if));
    hook("ignore_if", breaker.then_some(&m.breaker.keys.ignore_if));
    hook("retry_if", retry.then_some(&m.retry.keys.retry_if));
    hook("retry_after", retry.then_some(&m.retry.keys.retry_after));
    if m.can_reject() {
        out.extend(quote_spanned!(ret_span=> into_error: #p_ret::into_error(),));
    } else {
        out.extend(quote!(into_error: ::core::option::Option::None,));
    }
    out
}

/// Renames the receiver `self` to `__resilience_self` in the body (not inside nested
/// items, which have their own `self`; also inside macro calls).
struct RenameSelf {
    found: bool,
}

impl VisitMut for RenameSelf {
    fn visit_item_mut(&mut self, _: &mut syn::Item) {}

    fn visit_expr_path_mut(&mut self, e: &mut syn::ExprPath) {
        let p = &mut e.path;
        if e.qself.is_none()
            && p.leading_colon.is_none()
            && p.segments.len() == 1
            && p.segments[0].ident == "self"
        {
            let span = p.segments[0].ident.span();
            p.segments[0].ident = Ident::new("__resilience_self", span);
            self.found = true;
        } else {
            visit_mut::visit_expr_path_mut(self, e);
        }
    }

    fn visit_macro_mut(&mut self, mac: &mut syn::Macro) {
        mac.tokens = rename_self_tokens(mac.tokens.clone(), &mut self.found);
    }
}

/// `self` not followed by `::` (a module path), in the tokens of a macro call.
fn rename_self_tokens(tokens: TokenStream, found: &mut bool) -> TokenStream {
    let trees: Vec<TokenTree> = tokens.into_iter().collect();
    let path_sep_at = |i: usize| {
        matches!((trees.get(i), trees.get(i + 1)), (Some(TokenTree::Punct(a)), Some(TokenTree::Punct(b)))
            if a.as_char() == ':' && b.as_char() == ':')
    };
    let mut out = Vec::with_capacity(trees.len());
    for (i, tt) in trees.iter().enumerate() {
        match tt {
            TokenTree::Ident(id)
                if id == "self" && !path_sep_at(i + 1) && !(i >= 2 && path_sep_at(i - 2)) =>
            {
                *found = true;
                out.push(TokenTree::Ident(Ident::new("__resilience_self", id.span())));
            }
            TokenTree::Group(g) => {
                let mut ng = Group::new(g.delimiter(), rename_self_tokens(g.stream(), found));
                ng.set_span(g.span());
                out.push(TokenTree::Group(ng));
            }
            other => out.push(other.clone()),
        }
    }
    out.into_iter().collect()
}

/// Every identifier in `tokens`, also those a format string names (`"{name}"`).
fn collect_idents(tokens: TokenStream, out: &mut HashSet<String>) {
    for tt in tokens {
        match tt {
            TokenTree::Ident(id) => {
                out.insert(id.to_string());
            }
            TokenTree::Group(g) => collect_idents(g.stream(), out),
            TokenTree::Literal(l) => {
                let text = l.to_string();
                if text.contains('"') {
                    format_names(&text, out);
                }
            }
            TokenTree::Punct(_) => {}
        }
    }
}

/// The names after `{` in a string literal, as inline format arguments use them.
fn format_names(text: &str, out: &mut HashSet<String>) {
    let mut rest = text;
    while let Some(at) = rest.find('{') {
        rest = &rest[at + 1..];
        if let Some(after) = rest.strip_prefix('{') {
            rest = after;
            continue;
        }
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if end > 0 {
            out.insert(rest[..end].to_owned());
        }
    }
}

/// `impl Trait` cannot be written in a type inside a body; `_` infers it.
struct ImplTraitToInfer;

fn infer_impl_trait(ty: &Type) -> Type {
    let mut ty = ty.clone();
    ImplTraitToInfer.visit_type_mut(&mut ty);
    ty
}

impl VisitMut for ImplTraitToInfer {
    fn visit_type_mut(&mut self, ty: &mut Type) {
        if let Type::ImplTrait(it) = ty {
            *ty = Type::Infer(syn::TypeInfer {
                underscore_token: Token![_](it.impl_token.span),
            });
        } else {
            visit_mut::visit_type_mut(self, ty);
        }
    }
}

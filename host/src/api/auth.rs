//! Authentication and tenancy at the HTTP edge: one layer that runs after
//! routing, so it knows the route and its model, and decides before any
//! handler runs. The gRPC service asks the same questions through
//! [`authorize`].

use std::borrow::Cow;

use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use percent_encoding::percent_decode_str;
use serde::Deserialize;

use super::inference::SINGLE_MODEL;
use super::tenancy::{Action, AllowedUrls, Caller, Denied, Tenant};
use super::{ApiError, AppState};
use crate::registry::LoadError;
use crate::store::PackageSource;

/// The log target of every management action and every refused call.
pub const AUDIT: &str = "mme::audit";

/// What the answer for a model is when it does not exist, which is also
/// the answer for another tenant's model.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Missing {
    /// The route loads on demand: the store has no such package.
    InStore,
    /// The route needs a loaded model: it is not loaded.
    NotLoaded,
    /// The route does nothing for a model that is not there (Triton's unload).
    NothingToDo,
}

/// How a route is guarded.
struct Guard {
    action: Action,
    /// Where the route names its model, and what a missing one gets.
    model: Option<(ModelAt, Missing)>,
    /// Whether errors take the Open Inference Protocol's shape.
    open_inference: bool,
}

/// Where a route names its model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ModelAt {
    /// In the path: the segment at this index of the path split at `/`
    /// (the route's `{model}`; the empty text before the leading `/` is 0).
    Segment(usize),
    /// SageMaker's `/invocations`: in the query, in a header, or the single
    /// model.
    Invocation,
}

/// The guard of each route, by its pattern; `None` for routes open to all.
fn guard_of(route: &str) -> Option<Guard> {
    let guard = |action, model, open_inference| {
        Some(Guard {
            action,
            model,
            open_inference,
        })
    };
    use Action::*;
    use Missing::*;
    use ModelAt::*;
    match route {
        "/ping" | "/v2" | "/v2/health/live" | "/v2/health/ready" => None,
        "/metrics" => guard(Admin, None, false),
        "/predictions/{model}" | "/predictions/{model}/{version}" => {
            guard(Infer, Some((Segment(2), InStore)), false)
        }
        "/invocations" => guard(Infer, Some((Invocation, InStore)), false),
        "/models/{model}/invoke" => guard(Infer, Some((Segment(2), NotLoaded)), false),
        "/v2/models/{model}"
        | "/v2/models/{model}/ready"
        | "/v2/models/{model}/infer"
        | "/v2/models/{model}/versions/{version}"
        | "/v2/models/{model}/versions/{version}/ready"
        | "/v2/models/{model}/versions/{version}/infer" => {
            guard(Infer, Some((Segment(3), InStore)), true)
        }
        "/models/{model}" | "/models/{model}/{version}" => {
            guard(Manage, Some((Segment(2), NotLoaded)), false)
        }
        "/v2/repository/models/{model}/load" => guard(Manage, Some((Segment(4), InStore)), true),
        "/v2/repository/models/{model}/unload" => {
            guard(Manage, Some((Segment(4), NothingToDo)), true)
        }
        // Listing and registering: the handler filters and checks by caller.
        _ => guard(Manage, None, route.starts_with("/v2/")),
    }
}

/// The model named by the path segment at `index`, percent-decoded as axum
/// decodes the route's parameters, so that this layer and the handler read
/// the same name; `None` if the decoded bytes are not UTF-8. Reading it here
/// rather than through axum's `RawPathParams` spares a copy of every
/// parameter on each call.
fn model_in_path(path: &str, index: usize) -> Option<Cow<'_, str>> {
    let segment = path.split('/').nth(index)?;
    percent_decode_str(segment).decode_utf8().ok()
}

#[derive(Deserialize)]
struct InvocationQuery {
    model_name: Option<String>,
}

/// Whether the call goes on to its handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// It does.
    Proceed,
    /// It succeeds at once, doing nothing: what the route does for a
    /// model that is not there.
    NothingToDo,
}

/// A handler's caller: the one the layer identified, or anyone on a server
/// without tenants. A server with tenants whose layer did not run for the
/// route fails the call rather than let it through unidentified.
impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if let Some(caller) = parts.extensions.get::<Caller>() {
            return Ok(caller.clone());
        }
        if state.tenancy.is_none() {
            return Ok(Caller::Anyone);
        }
        Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal",
            "the caller of this route was not identified",
        ))
    }
}

/// The layer: identifies the caller, refuses what it may not do, and hands
/// the handler a [`Caller`]. A server without tenants has no such layer:
/// anyone may do anything there, and the layer would cost every request a
/// boxed future and a boxed service.
pub(super) async fn layer(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let mut request = request;
    if state.tenancy.is_none() {
        return next.run(request).await;
    }
    // A clone shares the router's text: no copy per call.
    let matched = request.extensions().get::<MatchedPath>().cloned();
    let route = matched.as_ref().map_or("", MatchedPath::as_str);
    let Some(guard) = guard_of(route) else {
        return next.run(request).await;
    };
    // A route that names a model and whose name cannot be read is refused
    // here, so that no model is ever let through unchecked.
    let named = match guard.model {
        None => None,
        Some((ModelAt::Invocation, _)) => Some(Some(Cow::Owned(invocation_model(&request)))),
        Some((ModelAt::Segment(index), _)) => Some(model_in_path(request.uri().path(), index)),
    };
    let model = match named {
        None => None,
        Some(Some(named)) => Some(named),
        Some(None) => {
            let unreadable = ApiError::new(
                StatusCode::BAD_REQUEST,
                "InvalidModelName",
                "the model name in the path is not valid UTF-8 once percent-decoded",
            );
            return if guard.open_inference {
                unreadable.into_open_inference_response()
            } else {
                unreadable.into_response()
            };
        }
    };
    let missing = guard.model.map(|(_, missing)| missing);
    let token = bearer(request.headers());
    let checked = admit(
        &state,
        token,
        route,
        (guard.action, model.as_deref(), missing),
    );
    let caller = match checked {
        Ok((caller, Verdict::Proceed)) => caller,
        Ok((_, Verdict::NothingToDo)) => return axum::Json(serde_json::json!({})).into_response(),
        Err(answer) if guard.open_inference => return answer.into_open_inference_response(),
        Err(answer) => return answer.into_response(),
    };
    // What the audit log will name, copied only for the calls it logs: the
    // name may borrow the request, which goes on to the handler.
    let method = request.method().clone();
    let audited = (guard.action == Action::Manage && method != Method::GET)
        .then(|| model.map_or_else(|| "-".to_string(), Cow::into_owned));
    // Only the management handlers ask who calls; an inference call is
    // decided here, and its handler would fail rather than find no caller.
    if guard.action != Action::Infer {
        request.extensions_mut().insert(caller.clone());
    }
    let response = next.run(request).await;
    if let Some(model) = audited {
        tracing::info!(
            target: AUDIT,
            tenant = caller.audit_name(),
            action = %method,
            route,
            model,
            outcome = response.status().as_u16(),
        );
    }
    response
}

/// The caller holding `token`, if it may do `action` on `model` through
/// `route`; every refusal is logged under [`AUDIT`]. Anyone may do anything
/// on a server without tenants.
pub(super) fn admit(
    state: &AppState,
    token: Option<&str>,
    route: &str,
    (action, model, missing): (Action, Option<&str>, Option<Missing>),
) -> Result<(Caller, Verdict), ApiError> {
    let Some(tenancy) = &state.tenancy else {
        return Ok((Caller::Anyone, Verdict::Proceed));
    };
    let refused = |caller: &str, answer: ApiError| {
        tracing::info!(
            target: AUDIT,
            tenant = caller,
            route,
            model = model.unwrap_or("-"),
            outcome = answer.status.as_u16(),
            reason = answer.kind,
        );
        answer
    };
    let caller = tenancy
        .identify(token)
        .map_err(|denied| refused("-", denial(&denied)))?;
    match authorize(state, &caller, action, model, missing) {
        Ok(verdict) => Ok((caller, verdict)),
        Err(answer) => Err(refused(caller.audit_name(), answer)),
    }
}

/// Whether `caller` may do `action` on `model`: a model it may not see is
/// answered as `missing` says one that does not exist is; a model that is
/// not loaded and would be loaded counts against the tenant's quota.
fn authorize(
    state: &AppState,
    caller: &Caller,
    action: Action,
    model: Option<&str>,
    missing: Option<Missing>,
) -> Result<Verdict, ApiError> {
    if let (Some(model), Some(missing)) = (model, missing)
        && !caller.sees(model)
    {
        return match missing {
            Missing::InStore => Err(LoadError::Store(state.registry.missing(model)).into()),
            Missing::NotLoaded => Err(LoadError::NotLoaded(model.to_string()).into()),
            Missing::NothingToDo => Ok(Verdict::NothingToDo),
        };
    }
    caller.permit(action).map_err(|denied| denial(&denied))?;
    // Only a tenant with a quota pays for asking whether the model is loaded.
    if let (Some(model), Some(Missing::InStore), Some(tenant)) = (model, missing, caller.tenant())
        && tenant.max_models.is_some()
        && state.registry.get_loaded(model).is_err()
    {
        check_quota(state, tenant)?;
    }
    Ok(Verdict::Proceed)
}

/// 403 `QuotaExceeded` if `tenant` has as many models loaded as it may.
pub(super) fn check_quota(state: &AppState, tenant: &Tenant) -> Result<(), ApiError> {
    let Some(max_models) = tenant.max_models else {
        return Ok(());
    };
    let loaded = state
        .registry
        .list()
        .iter()
        .filter(|model| tenant.owns(&model.name))
        .count();
    if loaded >= max_models {
        return Err(denial(&Denied::QuotaExceeded {
            tenant: tenant.name.clone(),
            max_models,
        }));
    }
    Ok(())
}

/// The package `source` as it will be read, if the server's roots and the
/// caller's tenant's allow it; 403 `UrlNotAllowed` otherwise, the same for a
/// path that does not exist.
pub(super) fn admit_url(
    allowed: Option<&AllowedUrls>,
    caller: &Caller,
    source: PackageSource,
) -> Result<PackageSource, ApiError> {
    let refused = || denial(&Denied::UrlNotAllowed);
    let source = match allowed {
        Some(allowed) => allowed.admit(&source).ok_or_else(refused)?,
        None => source,
    };
    match caller.tenant() {
        Some(tenant) if !tenant.urls.is_empty() => tenant.urls.admit(&source).ok_or_else(refused),
        _ => Ok(source),
    }
}

/// A refusal as the HTTP surface answers it.
pub(super) fn denial(denied: &Denied) -> ApiError {
    let message = denied.to_string();
    match denied {
        Denied::NoKey | Denied::UnknownKey => {
            ApiError::new(StatusCode::UNAUTHORIZED, "Unauthorized", message)
        }
        Denied::AdminOnly | Denied::InferenceOnly => {
            ApiError::new(StatusCode::FORBIDDEN, "Forbidden", message)
        }
        Denied::QuotaExceeded { .. } => {
            ApiError::new(StatusCode::FORBIDDEN, "QuotaExceeded", message)
        }
        Denied::UrlNotAllowed => ApiError::new(StatusCode::FORBIDDEN, "UrlNotAllowed", message),
        Denied::RateLimited { retry_after, .. } => {
            ApiError::new(StatusCode::TOO_MANY_REQUESTS, "RateLimited", message)
                .retry_after(retry_after.as_secs_f64().ceil().max(1.0) as u64)
        }
    }
}

/// The model `/invocations` names: its query's, its header's, or the
/// single model.
fn invocation_model(request: &Request) -> String {
    axum::extract::Query::<InvocationQuery>::try_from_uri(request.uri())
        .ok()
        .and_then(|axum::extract::Query(query)| query.model_name)
        .or_else(|| {
            super::inference::target_model(request.headers()).map(super::inference::model_of_target)
        })
        .unwrap_or_else(|| SINGLE_MODEL.to_string())
}

/// The token of `Authorization: Bearer <token>`, if one came.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    bearer_token(headers.get(header::AUTHORIZATION)?.to_str().ok()?)
}

/// The token of an `authorization` value `Bearer <token>`.
pub(super) fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|token| !token.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_bearer_token_is_a_token() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer   abc "), Some("abc"));
        for value in [
            "",
            "Bearer",
            "Bearer ",
            "Basic YWxhZGRpbjpvcGVu",
            "abc",
            "Token abc",
        ] {
            assert_eq!(bearer_token(value), None, "{value:?}");
        }
    }

    #[test]
    fn every_route_of_the_router_has_a_guard_or_is_open_on_purpose() {
        let open = ["/ping", "/v2", "/v2/health/live", "/v2/health/ready"];
        for route in open {
            assert!(guard_of(route).is_none(), "{route}");
        }
        for route in [
            "/metrics",
            "/models",
            "/v2/repository/index",
            "/anything/new",
        ] {
            assert!(guard_of(route).is_some(), "{route} needs a key");
        }
        assert!(matches!(
            guard_of("/metrics"),
            Some(Guard {
                action: Action::Admin,
                ..
            })
        ));
    }

    #[test]
    fn each_guard_reads_the_model_from_the_routes_own_model_segment() {
        let routes = [
            "/predictions/{model}",
            "/predictions/{model}/{version}",
            "/models/{model}/invoke",
            "/models/{model}",
            "/models/{model}/{version}",
            "/v2/models/{model}",
            "/v2/models/{model}/ready",
            "/v2/models/{model}/infer",
            "/v2/models/{model}/versions/{version}",
            "/v2/models/{model}/versions/{version}/ready",
            "/v2/models/{model}/versions/{version}/infer",
            "/v2/repository/models/{model}/load",
            "/v2/repository/models/{model}/unload",
        ];
        for route in routes {
            let at = route.split('/').position(|segment| segment == "{model}");
            let guard = guard_of(route).expect("a route that names a model is guarded");
            let Some((ModelAt::Segment(index), _)) = guard.model else {
                panic!("{route} names its model in the path");
            };
            assert_eq!(Some(index), at, "{route}");
            // The path as a client sends it, with the model where the route has it.
            let path = route.replace("{model}", "acme-1").replace("{version}", "2");
            assert_eq!(
                model_in_path(&path, index).as_deref(),
                Some("acme-1"),
                "{route}"
            );
        }
        assert!(matches!(
            guard_of("/invocations").and_then(|guard| guard.model),
            Some((ModelAt::Invocation, Missing::InStore))
        ));
    }

    #[test]
    fn a_model_in_the_path_is_percent_decoded_as_the_handler_decodes_it() {
        assert_eq!(
            model_in_path("/predictions/%61cme-1", 2).as_deref(),
            Some("acme-1")
        );
        assert_eq!(
            model_in_path("/predictions/a%2Fb", 2).as_deref(),
            Some("a/b")
        );
        assert_eq!(
            model_in_path("/predictions/a%20b/2", 2).as_deref(),
            Some("a b")
        );
        // Not UTF-8 once decoded: refused, never read as some other name.
        assert_eq!(model_in_path("/predictions/%FF%FE", 2), None);
        assert_eq!(model_in_path("/predictions", 2), None);
    }
}

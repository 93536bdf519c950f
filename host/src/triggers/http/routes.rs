//! Spin's HTTP route syntax and precedence, as a pure lookup table.
//!
//! A route is literal segments, `:name` segments and an optional trailing
//! `/...` wildcard. When several match, an exact route beats any wildcard,
//! the longest wildcard prefix wins, and a literal segment beats a `:name`.

use std::cmp::Reverse;
use std::sync::Arc;

use http::{HeaderName, HeaderValue};

use crate::metrics::RouteMetrics;

/// One piece of a route between slashes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
}

/// A route of the app, as the trigger table and Spin's headers need it.
#[derive(Debug, Clone)]
pub struct Route {
    /// The component that serves it.
    pub component: String,
    /// The route exactly as written in the manifest (`/files/...`).
    pub raw: String,
    /// The route under the app's base path (`/api/files/...`).
    pub full: String,
    /// The base path the route is under (`/` unless the app sets one).
    pub base: String,
    /// Spin's request headers that are the same for every request on this
    /// route, made once instead of per request.
    pub constant_headers: Vec<(HeaderName, HeaderValue)>,
    /// Where its requests are counted, resolved once.
    pub metrics: Arc<RouteMetrics>,
    segments: Vec<Segment>,
    wildcard: bool,
}

impl Route {
    /// Parses `raw` (already validated by the manifest) under `base`.
    pub fn new(base: &str, raw: &str, component: &str) -> Self {
        let base = normalize_base(base);
        let full = format!("{}{}", base.trim_end_matches('/'), raw);
        let (prefix, wildcard) = match full.strip_suffix("/...") {
            Some(prefix) => (prefix, true),
            None => (full.as_str(), false),
        };
        let segments = split(prefix)
            .map(|segment| match segment.strip_prefix(':') {
                Some(name) => Segment::Param(name.to_string()),
                None => Segment::Literal(segment.to_string()),
            })
            .collect();
        let mut route = Self {
            component: component.to_string(),
            raw: raw.to_string(),
            full: full.clone(),
            base,
            constant_headers: Vec::new(),
            metrics: Arc::new(RouteMetrics::new(component, raw)),
            segments,
            wildcard,
        };
        route.constant_headers = [
            ("spin-matched-route", route.full.as_str()),
            ("spin-base-path", route.base.as_str()),
            ("spin-raw-component-route", route.raw.as_str()),
            ("spin-component-route", route.raw_prefix()),
        ]
        .into_iter()
        // Validated routes are visible ASCII, always a valid header value.
        .filter_map(|(name, value)| {
            Some((
                HeaderName::from_static(name),
                HeaderValue::from_str(value).ok()?,
            ))
        })
        .collect();
        route
    }

    /// Whether the route ends in `/...`.
    pub fn is_wildcard(&self) -> bool {
        self.wildcard
    }

    /// The route without its trailing `/...`: what Spin calls the component
    /// route, and the URL printed at start-up.
    pub fn prefix(&self) -> &str {
        self.full.strip_suffix("/...").unwrap_or(&self.full)
    }

    /// The manifest route without its trailing `/...`.
    pub fn raw_prefix(&self) -> &str {
        self.raw.strip_suffix("/...").unwrap_or(&self.raw)
    }

    /// Precedence: exact first, then more segments, then literals before
    /// parameters from the left. Larger sorts first.
    fn rank(&self) -> (bool, usize, Vec<bool>) {
        let literals = self
            .segments
            .iter()
            .map(|s| matches!(s, Segment::Literal(_)))
            .collect();
        (!self.wildcard, self.segments.len(), literals)
    }

    fn matches(&self, path: &str) -> Option<RouteMatch<'_>> {
        let mut parts = split(path);
        let mut params = Vec::new();
        for segment in &self.segments {
            let part = parts.next()?;
            match segment {
                Segment::Literal(literal) if literal == part => {}
                Segment::Literal(_) => return None,
                Segment::Param(name) => params.push((name.as_str(), part.to_string())),
            }
        }
        let rest: Vec<&str> = parts.collect();
        if !rest.is_empty() && !self.wildcard {
            return None;
        }
        let path_info = rest.iter().map(|part| format!("/{part}")).collect();
        Some(RouteMatch {
            route: self,
            params,
            path_info,
        })
    }
}

/// The result of routing one request path.
#[derive(Debug)]
pub struct RouteMatch<'a> {
    /// The route that won.
    pub route: &'a Route,
    /// `:name` segments and the path segment each matched.
    pub params: Vec<(&'a str, String)>,
    /// The part of the path under a wildcard route (`""` for exact routes).
    pub path_info: String,
}

/// The app's routes, ordered by precedence.
#[derive(Debug, Default)]
pub struct Router {
    routes: Vec<Route>,
}

impl Router {
    /// Builds the table; order of `routes` does not matter.
    pub fn new(routes: impl IntoIterator<Item = Route>) -> Self {
        let mut routes: Vec<Route> = routes.into_iter().collect();
        routes.sort_by_key(|route| Reverse(route.rank()));
        Self { routes }
    }

    /// The best route for `path`, if any.
    pub fn route(&self, path: &str) -> Option<RouteMatch<'_>> {
        self.routes.iter().find_map(|route| route.matches(path))
    }

    /// All routes, most specific first.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }
}

fn split(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|segment| !segment.is_empty())
}

fn normalize_base(base: &str) -> String {
    let trimmed = base.trim_matches('/');
    if trimmed.is_empty() {
        "/".to_string()
    } else {
        format!("/{trimmed}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(routes: &[(&str, &str)]) -> Router {
        Router::new(routes.iter().map(|(raw, c)| Route::new("/", raw, c)))
    }

    fn component_for(router: &Router, path: &str) -> Option<String> {
        router.route(path).map(|m| m.route.component.clone())
    }

    #[test]
    fn exact_route_beats_wildcard() {
        let router = router(&[("/api/...", "wild"), ("/api/users", "exact")]);
        assert_eq!(
            component_for(&router, "/api/users").as_deref(),
            Some("exact")
        );
        assert_eq!(
            component_for(&router, "/api/other").as_deref(),
            Some("wild")
        );
    }

    #[test]
    fn longest_wildcard_prefix_wins() {
        let router = router(&[("/...", "root"), ("/a/...", "a"), ("/a/b/...", "ab")]);
        assert_eq!(component_for(&router, "/a/b/c").as_deref(), Some("ab"));
        assert_eq!(component_for(&router, "/a/c").as_deref(), Some("a"));
        assert_eq!(component_for(&router, "/z").as_deref(), Some("root"));
    }

    #[test]
    fn literal_segment_beats_named_segment() {
        let router = router(&[("/users/:id", "by-id"), ("/users/me", "me")]);
        assert_eq!(component_for(&router, "/users/me").as_deref(), Some("me"));
        assert_eq!(component_for(&router, "/users/7").as_deref(), Some("by-id"));
    }

    #[test]
    fn named_segments_are_captured() {
        let router = router(&[("/users/:id/orders/:order", "orders")]);
        let matched = router.route("/users/42/orders/9").expect("route");
        assert_eq!(
            matched.params,
            vec![("id", "42".into()), ("order", "9".into())]
        );
        assert_eq!(matched.path_info, "");
    }

    #[test]
    fn wildcard_passes_the_rest_as_path_info() {
        let router = router(&[("/files/...", "files")]);
        let matched = router.route("/files/a/b.txt").expect("route");
        assert_eq!(matched.path_info, "/a/b.txt");
        assert_eq!(matched.route.prefix(), "/files");
        assert_eq!(router.route("/files").expect("bare prefix").path_info, "");
    }

    #[test]
    fn exact_route_does_not_match_longer_paths() {
        let router = router(&[("/hello", "hello")]);
        assert!(router.route("/hello/there").is_none());
        assert!(router.route("/hell").is_none());
        assert!(router.route("/hello/").is_some());
    }

    #[test]
    fn routes_live_under_the_base_path() {
        let route = Route::new("/api/", "/items/...", "items");
        assert_eq!(route.full, "/api/items/...");
        assert_eq!(route.base, "/api");
        let router = Router::new([route]);
        assert_eq!(router.route("/api/items/3").expect("route").path_info, "/3");
        assert!(router.route("/items/3").is_none());
    }
}

#[cfg(test)]
mod proptests;

//! Property tests of the HTTP router: on any path it picks the route a
//! reference model picks. The model is written here from the rules Spin
//! documents, as a slow pairwise comparison of every route that matches: an
//! exact route beats any wildcard, the longest wildcard prefix wins, then a
//! literal segment beats a `:name` from the left, and between routes equal
//! on all of that the one declared first wins.

use std::cmp::Ordering;

use proptest::prelude::*;

use super::{Route, Router};
use crate::manifest::check_route;

#[derive(Debug, Clone, PartialEq)]
enum Segment {
    Literal(String),
    Param(String),
}

/// A route as the manifest declares it.
#[derive(Debug, Clone)]
struct Declared {
    segments: Vec<Segment>,
    wildcard: bool,
    trailing_slash: bool,
}

impl Declared {
    fn raw(&self) -> String {
        let mut raw: String = self
            .segments
            .iter()
            .map(|segment| match segment {
                Segment::Literal(text) => format!("/{text}"),
                Segment::Param(name) => format!("/:{name}"),
            })
            .collect();
        if self.wildcard {
            raw.push_str("/...");
        } else if self.trailing_slash || raw.is_empty() {
            raw.push('/');
        }
        raw
    }
}

/// What the model says a request gets: the route's index among the
/// declared ones, its `:name` captures and the path under a wildcard.
#[derive(Debug, PartialEq)]
struct Outcome {
    index: usize,
    params: Vec<(String, String)>,
    path_info: String,
}

/// The route's segments under the base path, and whether `path` (its
/// segments) is one it serves; if so, what it captures.
fn model_match(
    base: &[String],
    route: &Declared,
    path: &[&str],
) -> Option<(Vec<(String, String)>, String)> {
    let pattern: Vec<Segment> = base
        .iter()
        .cloned()
        .map(Segment::Literal)
        .chain(route.segments.iter().cloned())
        .collect();
    let long_enough = if route.wildcard {
        path.len() >= pattern.len()
    } else {
        path.len() == pattern.len()
    };
    if !long_enough {
        return None;
    }
    let mut params = Vec::new();
    for (segment, part) in pattern.iter().zip(path) {
        match segment {
            Segment::Literal(text) if text == part => {}
            Segment::Literal(_) => return None,
            Segment::Param(name) => params.push((name.clone(), part.to_string())),
        }
    }
    let path_info = path[pattern.len()..]
        .iter()
        .map(|part| format!("/{part}"))
        .collect();
    Some((params, path_info))
}

/// Whether `a` is more specific than `b` by the documented rules (both
/// already match the same path, so exact routes have equal lengths).
fn more_specific(base_len: usize, a: &Declared, b: &Declared) -> Ordering {
    if a.wildcard != b.wildcard {
        return if a.wildcard {
            Ordering::Less
        } else {
            Ordering::Greater
        };
    }
    let (a_len, b_len) = (base_len + a.segments.len(), base_len + b.segments.len());
    if a_len != b_len {
        return a_len.cmp(&b_len);
    }
    for (x, y) in a.segments.iter().zip(&b.segments) {
        match (x, y) {
            (Segment::Literal(_), Segment::Param(_)) => return Ordering::Greater,
            (Segment::Param(_), Segment::Literal(_)) => return Ordering::Less,
            _ => {}
        }
    }
    Ordering::Equal
}

/// Every route tried, the best kept; a later one replaces it only when
/// strictly more specific.
fn model_route(base: &[String], routes: &[Declared], path: &[&str]) -> Option<Outcome> {
    let mut best: Option<Outcome> = None;
    for (index, route) in routes.iter().enumerate() {
        let Some((params, path_info)) = model_match(base, route, path) else {
            continue;
        };
        let replaces = best.as_ref().is_none_or(|current| {
            more_specific(base.len(), route, &routes[current.index]) == Ordering::Greater
        });
        if replaces {
            best = Some(Outcome {
                index,
                params,
                path_info,
            });
        }
    }
    best
}

fn component(index: usize) -> String {
    format!("proptest-route-{index}")
}

/// The router's answer, in the model's terms.
fn router_route(router: &Router, path: &str) -> Option<Outcome> {
    router.route(path).map(|matched| Outcome {
        index: matched
            .route
            .component
            .strip_prefix("proptest-route-")
            .and_then(|index| index.parse().ok())
            .unwrap_or(usize::MAX),
        params: matched
            .params
            .iter()
            .map(|(name, value)| (name.to_string(), value.clone()))
            .collect(),
        path_info: matched.path_info,
    })
}

/// Few distinct names so routes overlap and paths hit them.
fn literal() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["a", "b", "c", "api"]).prop_map(str::to_string)
}

fn segment() -> impl Strategy<Value = Segment> {
    prop_oneof![
        3 => literal().prop_map(Segment::Literal),
        1 => prop::sample::select(vec!["id", "x"]).prop_map(|name| Segment::Param(name.into())),
    ]
}

fn declared() -> impl Strategy<Value = Declared> {
    (
        prop::collection::vec(segment(), 0..4),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(segments, wildcard, trailing_slash)| Declared {
            segments,
            wildcard,
            trailing_slash,
        })
}

/// Up to eight routes, no raw route twice (the manifest refuses that).
fn app_routes() -> impl Strategy<Value = Vec<Declared>> {
    prop::collection::vec(declared(), 1..8).prop_map(|routes| {
        let mut seen = std::collections::HashSet::new();
        routes
            .into_iter()
            .filter(|route| seen.insert(route.raw()))
            .collect()
    })
}

fn base() -> impl Strategy<Value = Vec<String>> {
    prop_oneof![
        3 => Just(Vec::new()),
        1 => prop::collection::vec(prop::sample::select(vec!["api", "v1"]).prop_map(str::to_string), 1..3),
    ]
}

/// A request path's segments: free, or filled in from one of the routes so
/// that most paths match something, sometimes with a segment more or less.
fn path_for(base: Vec<String>, routes: Vec<Declared>) -> impl Strategy<Value = Vec<String>> {
    let free = prop::collection::vec(
        prop::sample::select(vec!["a", "b", "c", "api", "v1", "7"]).prop_map(str::to_string),
        0..6,
    );
    let count = routes.len();
    let filled =
        (
            0..count,
            prop::collection::vec(literal(), 6),
            prop::collection::vec(literal(), 0..3),
            any::<bool>(),
        )
            .prop_map(move |(index, fills, extra, drop_last)| {
                let route = &routes[index];
                let mut path: Vec<String> = base.clone();
                path.extend(route.segments.iter().zip(&fills).map(
                    |(segment, fill)| match segment {
                        Segment::Literal(text) => text.clone(),
                        Segment::Param(_) => fill.clone(),
                    },
                ));
                if drop_last {
                    path.pop();
                } else {
                    path.extend(extra);
                }
                path
            });
    prop_oneof![1 => free, 3 => filled]
}

fn case() -> impl Strategy<Value = (Vec<String>, Vec<Declared>, Vec<String>, bool)> {
    (base(), app_routes()).prop_flat_map(|(base, routes)| {
        let path = path_for(base.clone(), routes.clone());
        (Just(base), Just(routes), path, any::<bool>())
    })
}

fn build(base: &[String], routes: &[Declared]) -> Router {
    let base = format!("/{}", base.join("/"));
    Router::new(
        routes
            .iter()
            .enumerate()
            .map(|(index, route)| Route::new(&base, &route.raw(), &component(index))),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn router_picks_the_route_the_model_picks((base, routes, path, trailing_slash) in case()) {
        for route in &routes {
            prop_assert_eq!(check_route(&route.raw()), Ok(()));
        }
        let router = build(&base, &routes);
        let mut text: String = path.iter().map(|part| format!("/{part}")).collect();
        if text.is_empty() || trailing_slash {
            text.push('/');
        }
        let parts: Vec<&str> = path.iter().map(String::as_str).collect();
        let raws: Vec<String> = routes.iter().map(Declared::raw).collect();
        prop_assert_eq!(
            router_route(&router, &text),
            model_route(&base, &routes, &parts),
            "base /{} routes {:?} path {}", base.join("/"), raws, text
        );
    }

    #[test]
    fn declaration_order_decides_only_between_equals(
        (base, routes, path, _) in case(),
        seed in any::<u64>(),
    ) {
        // Shuffled, the table must still pick an equally specific route.
        let mut order: Vec<usize> = (0..routes.len()).collect();
        let mut state = seed;
        for i in (1..order.len()).rev() {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            order.swap(i, (state >> 33) as usize % (i + 1));
        }
        let shuffled: Vec<Declared> = order.iter().map(|&i| routes[i].clone()).collect();
        let text: String = path.iter().map(|part| format!("/{part}")).collect();
        let first = router_route(&build(&base, &routes), &text);
        let second = router_route(&build(&base, &shuffled), &text).map(|outcome| order[outcome.index]);
        match (first, second) {
            (None, None) => {}
            (Some(first), Some(second)) => prop_assert_eq!(
                more_specific(base.len(), &routes[first.index], &routes[second]),
                Ordering::Equal
            ),
            (first, second) => prop_assert!(false, "{:?} vs {:?}", first, second),
        }
    }

    #[test]
    fn any_path_routes_as_its_segments_do(
        (base, routes, _, _) in case(),
        path in prop_oneof![
            any::<String>(),
            prop::collection::vec(prop::sample::select(vec!["a", "", "api", "...", ":id", "%2F", "é", "?"]), 0..6)
                .prop_map(|parts| parts.join("/")),
        ],
    ) {
        // Empty segments (`//`, a final `/`) are not segments.
        let router = build(&base, &routes);
        let parts: Vec<&str> = path.split('/').filter(|part| !part.is_empty()).collect();
        prop_assert_eq!(router_route(&router, &path), model_route(&base, &routes, &parts));
    }

    #[test]
    fn any_valid_route_is_served_with_spin_headers(
        segments in prop::collection::vec(
            prop::collection::vec(
                prop::sample::select(vec!["a", ":", "...", ".", "_", "%20", "é", " ", "\t", "\n", "\u{7f}", "\0", "~"]),
                1..3,
            )
            .prop_map(|pieces| pieces.concat()),
            0..4,
        ),
        trailing_slash: bool,
    ) {
        let mut raw: String = segments.iter().map(|segment| format!("/{segment}")).collect();
        if raw.is_empty() || trailing_slash {
            raw.push('/');
        }
        if check_route(&raw).is_ok() {
            // Every route the manifest accepts gets all four of Spin's headers.
            let route = Route::new("/", &raw, "proptest-route-0");
            prop_assert_eq!(route.constant_headers.len(), 4, "{:?}", raw);
        }
    }
}

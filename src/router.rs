//! Route table: host, then the longest path prefix, then the method.
//!
//! Paths are compared in normal form (`http::path`) and prefixes match whole
//! segments: `/api` matches `/api`, `/api/` and `/api/x`, never
//! `/api-internal`. A route path's trailing slash does not change what it
//! matches (`/api/` also matches `/api`): otherwise `/admin` would fall
//! through to a broader route such as an open `/` while the backend serves
//! it as the admin index (nginx answers it with a redirect for this reason).

use crate::config::{
    BodyDeadline, ClientPolicy, HeaderRules, HostMatch, IdentityForwarding, RouteConfig,
};

pub struct Route {
    pub id: usize,
    /// Row in the request metrics (stable across reloads for the same label).
    pub metric_slot: usize,
    /// Only for connections to this site; None = any.
    pub site: Option<usize>,
    pub host: Option<HostMatch>,
    /// As configured (normal form).
    pub path: String,
    /// Uppercase tokens; None = any method.
    pub methods: Option<Vec<String>>,
    /// Index into the generation's upstreams.
    pub upstream: usize,
    pub set_host: Option<String>,
    pub max_body_bytes: u64,
    pub body_deadline: BodyDeadline,
    pub client_policy: ClientPolicy,
    pub forward_identity: IdentityForwarding,
    pub headers: HeaderRules,
    pub rewrite_prefix: Option<String>,
}

pub enum RouteMatch<'a> {
    Found(&'a Route),
    /// The path matches a route that does not allow the method.
    MethodNotAllowed(&'a Route),
    NotFound,
}

impl RouteMatch<'_> {
    /// The route the path matched, whether or not it allows the method.
    pub fn route_id(&self) -> Option<usize> {
        match self {
            RouteMatch::Found(r) | RouteMatch::MethodNotAllowed(r) => Some(r.id),
            RouteMatch::NotFound => None,
        }
    }
}

pub struct RouteTable {
    routes: Vec<Route>,
}

impl RouteTable {
    /// `slots[i]` is route i's metrics row.
    pub fn new(configs: &[RouteConfig], slots: &[usize]) -> Self {
        let routes = configs
            .iter()
            .enumerate()
            .map(|(id, r)| Route {
                id,
                metric_slot: slots.get(id).copied().unwrap_or(0),
                site: r.site,
                host: r.host.clone(),
                path: r.path.clone(),
                methods: r.methods.clone(),
                upstream: r.upstream,
                set_host: r.set_host.clone(),
                max_body_bytes: r.max_body_bytes,
                body_deadline: r.body_deadline,
                client_policy: r.client_policy.clone(),
                forward_identity: r.forward_identity.clone(),
                headers: r.headers.clone(),
                rewrite_prefix: r.rewrite_prefix.clone(),
            })
            .collect();
        RouteTable { routes }
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// `site` is the connection's; `host` is the request's host without port,
    /// lowercased. A route bound to a host beats a host-less one with an
    /// equally long path.
    pub fn find(
        &self,
        site: Option<usize>,
        host: Option<&str>,
        path: &str,
        method: &str,
    ) -> RouteMatch<'_> {
        let mut best: Option<&Route> = None;
        let mut best_any_method: Option<&Route> = None;
        for route in &self.routes {
            if route.site.is_some() && route.site != site {
                continue;
            }
            let host_ok = match (&route.host, host) {
                (None, _) => true,
                (Some(m), Some(h)) => m.matches(h),
                (Some(_), None) => false,
            };
            if !host_ok || !prefix_matches(&route.path, path) {
                continue;
            }
            let method_ok = route
                .methods
                .as_ref()
                .is_none_or(|ms| ms.iter().any(|m| m == method));
            let slot = if method_ok {
                &mut best
            } else {
                &mut best_any_method
            };
            if slot.is_none_or(|b| better(route, b)) {
                *slot = Some(route);
            }
        }
        match (best, best_any_method) {
            (Some(r), Some(other)) if better(other, r) => RouteMatch::MethodNotAllowed(other),
            (Some(r), _) => RouteMatch::Found(r),
            (None, Some(r)) => RouteMatch::MethodNotAllowed(r),
            (None, None) => RouteMatch::NotFound,
        }
    }
}

impl Route {
    /// Whether the gateway refuses `method` on this route although the route
    /// matched it: TRACE (and IIS's TRACK) make a backend echo the request,
    /// identity headers and route secrets included, so they pass only where
    /// the route lists them by name. Compared ignoring case: methods are
    /// case-sensitive, but some backends upper-case them.
    pub fn refuses_echo_method(&self, method: &str) -> bool {
        let echo = ["TRACE", "TRACK"]
            .iter()
            .any(|m| method.eq_ignore_ascii_case(m));
        echo && !self
            .methods
            .as_ref()
            .is_some_and(|list| list.iter().any(|m| m == method))
    }
}

/// The part of a route path that must match: without its trailing slash,
/// so the root route is "" and matches every path.
fn match_prefix(route_path: &str) -> &str {
    route_path.strip_suffix('/').unwrap_or(route_path)
}

/// Whether `path` is `route_path` or below it, on a segment boundary.
fn prefix_matches(route_path: &str, path: &str) -> bool {
    let prefix = match_prefix(route_path);
    path.starts_with(prefix) && matches!(path.as_bytes().get(prefix.len()), None | Some(b'/'))
}

fn better(a: &Route, b: &Route) -> bool {
    (match_prefix(&a.path).len(), a.host.is_some())
        > (match_prefix(&b.path).len(), b.host.is_some())
}

/// Appends to `out` the path sent to the backend when `route_path` matched
/// `path` and the route replaces its prefix with `replacement` ("" strips
/// it). Both are in normal form and the match is on a segment boundary, so
/// the result is in normal form too and stays under `replacement`.
pub fn rewrite_prefix(route_path: &str, replacement: &str, path: &str, out: &mut String) {
    let start = out.len();
    let rest = path.get(match_prefix(route_path).len()..).unwrap_or("");
    out.push_str(match_prefix(replacement));
    out.push_str(rest);
    if !out[start..].starts_with('/') {
        out.insert(start, '/');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(
        id: usize,
        host: Option<HostMatch>,
        path: &str,
        methods: Option<&[&str]>,
        port: u16,
    ) -> Route {
        Route {
            id,
            metric_slot: id + 1,
            site: None,
            host,
            path: path.into(),
            methods: methods.map(|m| m.iter().map(|s| s.to_string()).collect()),
            upstream: usize::from(port),
            set_host: None,
            max_body_bytes: 1024,
            body_deadline: BodyDeadline {
                base: std::time::Duration::from_secs(30),
                min_rate: 1024,
            },
            client_policy: ClientPolicy::default(),
            forward_identity: IdentityForwarding::default(),
            headers: HeaderRules::default(),
            rewrite_prefix: None,
        }
    }

    fn port(m: RouteMatch<'_>) -> Option<u16> {
        match m {
            RouteMatch::Found(r) => u16::try_from(r.upstream).ok(),
            RouteMatch::MethodNotAllowed(_) => Some(405),
            RouteMatch::NotFound => None,
        }
    }

    #[test]
    fn echo_methods_need_the_route_to_list_them() {
        let any = route(0, None, "/", None, 1);
        let listed = route(1, None, "/t", Some(&["GET", "TRACE"]), 1);
        for m in ["TRACE", "trace", "TRACK", "Track"] {
            assert!(any.refuses_echo_method(m), "{m}");
        }
        assert!(!listed.refuses_echo_method("TRACE"));
        // Listed by its exact token only (the router matches it exactly too).
        assert!(listed.refuses_echo_method("trace"));
        assert!(listed.refuses_echo_method("TRACK"));
        for m in ["GET", "POST", "TRACES", "OPTIONS"] {
            assert!(!any.refuses_echo_method(m), "{m}");
        }
    }

    #[test]
    fn longest_prefix_then_host_then_method() {
        let t = RouteTable {
            routes: vec![
                route(0, None, "/", None, 1),
                route(1, None, "/dead", None, 2),
                route(
                    2,
                    Some(HostMatch::Exact("api.example".into())),
                    "/",
                    None,
                    3,
                ),
                route(3, None, "/only-get", Some(&["GET"]), 4),
            ],
        };
        assert_eq!(
            port(t.find(None, Some("localhost"), "/dead", "GET")),
            Some(2)
        );
        assert_eq!(
            port(t.find(None, Some("localhost"), "/dead/x", "GET")),
            Some(2)
        );
        // Whole segments only.
        assert_eq!(
            port(t.find(None, Some("localhost"), "/deadline", "GET")),
            Some(1)
        );
        assert_eq!(
            port(t.find(None, Some("localhost"), "/other", "GET")),
            Some(1)
        );
        assert_eq!(
            port(t.find(None, Some("api.example"), "/other", "GET")),
            Some(3)
        );
        assert_eq!(port(t.find(None, None, "/only-get", "GET")), Some(4));
        assert_eq!(port(t.find(None, None, "/only-get", "POST")), Some(405));
        let none = RouteTable {
            routes: vec![route(0, None, "/api", None, 1)],
        };
        assert_eq!(port(none.find(None, None, "/other", "GET")), None);
    }

    #[test]
    fn prefixes_match_on_segment_boundaries() {
        let t = RouteTable {
            routes: vec![
                route(0, None, "/", None, 1),
                route(1, None, "/api", None, 2),
                route(2, None, "/v1/", None, 3),
                route(3, None, "/v1/admin/", None, 4),
            ],
        };
        for (path, want) in [
            ("/", 1),
            ("/api", 2),
            ("/api/", 2),
            ("/api/x", 2),
            ("/api-internal", 1),
            ("/api-internal/x", 1),
            ("/apix", 1),
            ("/ap", 1),
            ("/v1", 3),
            ("/v1/", 3),
            ("/v1/x", 3),
            ("/v10", 1),
            ("/v1/admin", 4),
            ("/v1/admin/", 4),
            ("/v1/admin/u", 4),
            ("/v1/administrator", 3),
        ] {
            assert_eq!(port(t.find(None, None, path, "GET")), Some(want), "{path}");
        }
        assert!(prefix_matches("/", "/anything"));
        assert!(!prefix_matches("/a", "/"));
        assert!(!prefix_matches("/a/b", "/a"));
    }

    #[test]
    fn rewrites_replace_whole_segments() {
        let rw = |route: &str, replacement: &str, path: &str| {
            let mut out = String::new();
            rewrite_prefix(route, replacement, path, &mut out);
            out
        };
        for (route, replacement, path, want) in [
            ("/api/", "/v1/", "/api/x", "/v1/x"),
            ("/api/", "/v1/", "/api/", "/v1/"),
            ("/api/", "/v1/", "/api", "/v1"),
            ("/api", "/v1", "/api/x/y", "/v1/x/y"),
            ("/api", "/v1/", "/api/x", "/v1/x"),
            ("/api/", "/v1", "/api/x", "/v1/x"),
            ("/api/", "/", "/api/x", "/x"),
            ("/api/", "/", "/api", "/"),
            ("/api/", "", "/api/x", "/x"),
            ("/api/", "", "/api/", "/"),
            ("/api", "", "/api", "/"),
            ("/", "/v2/", "/x", "/v2/x"),
            ("/", "/v2", "/", "/v2/"),
            ("/", "", "/x/y", "/x/y"),
            ("/a/b/", "/c/", "/a/b/d;p=1", "/c/d;p=1"),
        ] {
            assert_eq!(
                rw(route, replacement, path),
                want,
                "{route} {replacement} {path}"
            );
        }
    }
}

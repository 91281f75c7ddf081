//! Route table: host, then the longest path prefix, then the method.

use std::net::SocketAddr;

use crate::config::{HostMatch, RouteConfig};

pub struct Route {
    pub id: usize,
    pub host: Option<HostMatch>,
    pub path: String,
    /// Uppercase tokens; None = any method.
    pub methods: Option<Vec<String>>,
    pub backends: Vec<SocketAddr>,
    pub set_host: Option<String>,
    pub max_body_bytes: u64,
}

pub enum RouteMatch<'a> {
    Found(&'a Route),
    /// The path matches a route that does not allow the method.
    MethodNotAllowed(&'a Route),
    NotFound,
}

pub struct RouteTable {
    routes: Vec<Route>,
}

impl RouteTable {
    pub fn new(configs: &[RouteConfig]) -> Self {
        let routes = configs
            .iter()
            .enumerate()
            .map(|(id, r)| Route {
                id,
                host: r.host.clone(),
                path: r.path.clone(),
                methods: r.methods.clone(),
                backends: r.backends.clone(),
                set_host: r.set_host.clone(),
                max_body_bytes: r.max_body_bytes,
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

    /// `host` is the request's host without port, lowercased. A route bound to
    /// a host beats a host-less one with an equally long path.
    pub fn find(&self, host: Option<&str>, path: &str, method: &str) -> RouteMatch<'_> {
        let mut best: Option<&Route> = None;
        let mut best_any_method: Option<&Route> = None;
        for route in &self.routes {
            let host_ok = match (&route.host, host) {
                (None, _) => true,
                (Some(m), Some(h)) => m.matches(h),
                (Some(_), None) => false,
            };
            if !host_ok || !path.starts_with(route.path.as_str()) {
                continue;
            }
            let method_ok = route
                .methods
                .as_ref()
                .map_or(true, |ms| ms.iter().any(|m| m == method));
            let slot = if method_ok {
                &mut best
            } else {
                &mut best_any_method
            };
            if slot.map_or(true, |b| better(route, b)) {
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

fn better(a: &Route, b: &Route) -> bool {
    (a.path.len(), a.host.is_some()) > (b.path.len(), b.host.is_some())
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
            host,
            path: path.into(),
            methods: methods.map(|m| m.iter().map(|s| s.to_string()).collect()),
            backends: vec![SocketAddr::from(([127, 0, 0, 1], port))],
            set_host: None,
            max_body_bytes: 1024,
        }
    }

    fn port(m: RouteMatch<'_>) -> Option<u16> {
        match m {
            RouteMatch::Found(r) => Some(r.backends[0].port()),
            RouteMatch::MethodNotAllowed(_) => Some(405),
            RouteMatch::NotFound => None,
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
        assert_eq!(port(t.find(Some("localhost"), "/dead", "GET")), Some(2));
        assert_eq!(port(t.find(Some("localhost"), "/deadline", "GET")), Some(2));
        assert_eq!(port(t.find(Some("localhost"), "/other", "GET")), Some(1));
        assert_eq!(port(t.find(Some("api.example"), "/other", "GET")), Some(3));
        assert_eq!(port(t.find(None, "/only-get", "GET")), Some(4));
        assert_eq!(port(t.find(None, "/only-get", "POST")), Some(405));
        let none = RouteTable {
            routes: vec![route(0, None, "/api", None, 1)],
        };
        assert_eq!(port(none.find(None, "/other", "GET")), None);
    }
}

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
            let method_ok = route.methods.as_ref().map_or(true, |ms| ms.iter().any(|m| m == method));
            let slot = if method_ok { &mut best } else { &mut best_any_method };
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

//! Which scope each route needs and what it costs against a rate limit:
//! the one table, so every endpoint's protection can be read in one place.
//! A route missing from it needs `admin` — a new endpoint is born
//! protected, and loosening it is a visible change here.

use axum::http::Method;
use mailroom_security::Scope;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No key (liveness and readiness probes, unknown paths).
    Open,
    /// Operations endpoints: open when configured so (default: on
    /// loopback binds), else `read`.
    Ops,
    Scope(Scope),
    /// Microsoft Graph's change notifications: no key (Graph cannot send
    /// one; each item's clientState is checked instead) and no address
    /// bucket (Graph delivers bursts from shared addresses, and a refused
    /// notification is a lost one). Bounded by the body limit and the
    /// item limit.
    Notification,
}

/// A route's protection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoutePolicy {
    pub access: Access,
    /// Tokens taken from the caller's bucket (1 for a cheap read).
    pub cost: u32,
}

const fn needs(scope: Scope, cost: u32) -> RoutePolicy {
    RoutePolicy {
        access: Access::Scope(scope),
        cost,
    }
}

/// The policy of `method` on the matched route template (`None`: no route
/// matched, the answer is a 404).
pub fn of(method: &Method, route: Option<&str>) -> RoutePolicy {
    use Scope::*;
    let Some(route) = route else {
        return RoutePolicy {
            access: Access::Open,
            cost: 1,
        };
    };
    // HEAD is a GET without the body.
    let method = if method == Method::HEAD {
        &Method::GET
    } else {
        method
    };
    match (method.as_str(), route) {
        ("GET", "/health" | "/health/ready") => RoutePolicy {
            access: Access::Open,
            cost: 1,
        },
        // How to authenticate to the MCP endpoint: public by design.
        (
            "GET",
            "/.well-known/oauth-protected-resource" | "/.well-known/oauth-protected-resource/mcp",
        ) => RoutePolicy {
            access: Access::Open,
            cost: 1,
        },
        // Any key may connect; each tool then needs its own scope (a read
        // key sees only read-only tools). Every message costs a token, so
        // tool calls are rate-limited like REST calls.
        ("POST" | "GET" | "DELETE", "/mcp") => needs(Read, 1),
        ("POST", "/webhook" | "/webhook/lifecycle") => RoutePolicy {
            access: Access::Notification,
            cost: 0,
        },
        ("GET", "/api/v1/subscriptions" | "/api/v1/submissions") => needs(Read, 1),
        ("POST", "/api/v1/submissions/retry") => needs(Admin, 5),
        ("GET", "/health/detailed" | "/metrics") => RoutePolicy {
            access: Access::Ops,
            cost: 1,
        },
        (
            "GET",
            "/api/v1/messages"
            | "/api/v1/messages/{id}"
            | "/api/v1/messages/{id}/raw"
            | "/api/v1/jobs"
            | "/process/status",
        ) => needs(Read, 1),
        ("POST", "/api/v1/messages") => needs(Write, 1),
        // Scoring stores nothing: a read key (an MTA's) may scan mail.
        ("POST", "/api/v1/score" | "/checkv2") => needs(Read, 2),
        ("POST", "/api/v1/learn/{label}") => needs(Write, 5),
        ("DELETE", "/api/v1/messages/{id}") => needs(Admin, 2),
        ("POST", "/process/trigger") => needs(Admin, 10),
        ("GET", "/api/v1/keys" | "/api/v1/audit") => needs(Admin, 2),
        ("POST", "/api/v1/keys" | "/api/v1/keys/{id}/rotate") => needs(Admin, 5),
        ("DELETE", "/api/v1/keys/{id}") => needs(Admin, 5),
        _ => needs(Admin, 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table() {
        assert_eq!(of(&Method::GET, Some("/health")).access, Access::Open);
        assert_eq!(of(&Method::GET, Some("/metrics")).access, Access::Ops);
        assert_eq!(
            of(&Method::HEAD, Some("/api/v1/messages")).access,
            Access::Scope(Scope::Read)
        );
        assert_eq!(
            of(&Method::POST, Some("/api/v1/messages")).access,
            Access::Scope(Scope::Write)
        );
        assert_eq!(
            of(&Method::DELETE, Some("/api/v1/messages/{id}")).access,
            Access::Scope(Scope::Admin)
        );
        assert_eq!(of(&Method::POST, Some("/process/trigger")).cost, 10);
        assert_eq!(
            of(&Method::POST, Some("/checkv2")).access,
            Access::Scope(Scope::Read)
        );
        assert_eq!(
            of(&Method::POST, Some("/api/v1/learn/{label}")).access,
            Access::Scope(Scope::Write)
        );
        assert_eq!(of(&Method::GET, None).access, Access::Open);
    }

    #[test]
    fn unlisted_routes_need_admin() {
        assert_eq!(
            of(&Method::PUT, Some("/api/v1/messages")).access,
            Access::Scope(Scope::Admin)
        );
        assert_eq!(
            of(&Method::GET, Some("/api/v1/some-future-route")).access,
            Access::Scope(Scope::Admin)
        );
    }
}

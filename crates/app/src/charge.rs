//! Charging a request's caller more rate-limit tokens from inside a
//! handler. The API server's guard charges each HTTP request the cost of its
//! route; a surface that carries many operations over one route (MCP's
//! `tools/call` on `/mcp`) charges each operation what its REST twin costs,
//! through the [`RateCharge`] the guard leaves in the request.

use std::{future::Future, pin::Pin, sync::Arc};

/// Why more tokens could not be taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChargeRefused {
    /// The bucket is empty; it refills in this many seconds.
    RateLimited { retry_after_secs: u64 },
    /// The shared limiter is unreachable and the policy is fail-closed.
    Unavailable,
}

pub type ChargeFuture = Pin<Box<dyn Future<Output = Result<(), ChargeRefused>> + Send>>;

/// Takes tokens from the bucket of the caller of the request it came with.
#[derive(Clone)]
pub struct RateCharge(Arc<dyn Fn(u32) -> ChargeFuture + Send + Sync>);

impl RateCharge {
    pub fn new(take: impl Fn(u32) -> ChargeFuture + Send + Sync + 'static) -> Self {
        Self(Arc::new(take))
    }

    pub async fn take(&self, tokens: u32) -> Result<(), ChargeRefused> {
        if tokens == 0 {
            return Ok(());
        }
        (self.0)(tokens).await
    }
}

impl std::fmt::Debug for RateCharge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RateCharge")
    }
}

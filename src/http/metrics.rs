//! Prometheus metrics, served on their own listener (never routed publicly).

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{Method, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use sqlx::PgPool;

use crate::db;
use crate::memory::MemoryBudget;

/// How often figures that need a database query are refreshed: in the background, never per
/// scrape.
const REFRESH_EVERY: Duration = Duration::from_secs(60);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: &'static str,
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    state: &'static str,
}

fn latency_histogram() -> Histogram {
    // 1 ms to ~16 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// The server's metrics registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    pool_connections: Family<PoolLabels, Gauge>,
    budget_in_use: Gauge,
    backup_last_success: Gauge<f64, AtomicU64>,
    database_size: Gauge,
    database_connections: Gauge,
    database_max_connections: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("dailyreps");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        let pool_connections = Family::<PoolLabels, Gauge>::default();
        registry.register("http_requests", "HTTP requests answered, by route and status", requests.clone());
        registry.register("http_request_duration_seconds", "HTTP request latency", latency.clone());
        registry.register("db_pool_connections", "Database pool connections by state", pool_connections.clone());
        let budget_in_use = Gauge::default();
        registry.register(
            "memory_budget_in_use_bytes",
            "Bytes of the memory budget held by requests",
            budget_in_use.clone(),
        );
        let backup_last_success = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "database_backup_last_success_timestamp_seconds",
            "When the newest recorded backup of the database finished (unix time); 0 until one is recorded",
            backup_last_success.clone(),
        );
        let [database_size, database_connections, database_max_connections] = std::array::from_fn(|_| Gauge::default());
        registry.register("database_size_bytes", "The database's size on disk", database_size.clone());
        registry.register(
            "database_connections",
            "Client connections open on the database server",
            database_connections.clone(),
        );
        registry.register(
            "database_max_connections",
            "The database server's max_connections",
            database_max_connections.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            pool_connections,
            budget_in_use,
            backup_last_success,
            database_size,
            database_connections,
            database_max_connections,
        }
    }
}

/// The label of a method: HTTP's own by name, any extension method (a client may send any
/// token) as `other`.
fn method_label(method: &Method) -> &'static str {
    const KNOWN: [Method; 9] = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::CONNECT,
        Method::OPTIONS,
        Method::TRACE,
        Method::PATCH,
    ];
    KNOWN.iter().find(|known| *known == method).map_or("other", Method::as_str)
}

impl Metrics {
    /// Counts one answered request. `route` is the route template, not the concrete path,
    /// and methods outside HTTP's own are one label, so clients cannot grow the label space.
    pub fn observe_request(&self, method: &Method, route: &str, status: u16, latency: Duration) {
        let (method, route) = (method_label(method), route.to_owned());
        self.latency.get_or_create(&RouteLabels { method, route: route.clone() }).observe(latency.as_secs_f64());
        self.requests.get_or_create(&RequestLabels { method, route, status }).inc();
    }

    /// Refreshes the figures read from the database, now and every minute, until `stop`.
    pub async fn refresh(&self, pool: &PgPool, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        let mut every = tokio::time::interval(REFRESH_EVERY);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                () = &mut stop => return,
            }
            match db::database_backups::last_success(pool).await {
                Ok(Some(at)) => {
                    let seconds = at.unix_timestamp_nanos() as f64 / 1e9;
                    self.backup_last_success.set(seconds);
                }
                Ok(None) => {}
                Err(error) => tracing::debug!(error = %error, "could not read the last database backup"),
            }
            let gauges = match db::database_health::gauges(pool).await {
                Ok(gauges) => gauges,
                Err(error) => {
                    tracing::debug!(error = %error, "could not read the database's size");
                    continue;
                }
            };
            self.database_size.set(gauges.database_bytes);
            self.database_connections.set(gauges.connections);
            self.database_max_connections.set(gauges.max_connections);
        }
    }

    fn render(&self, pool: &PgPool, budget: &MemoryBudget) -> String {
        let (size, idle) = (pool.size(), pool.num_idle());
        let in_use = i64::from(size) - i64::try_from(idle).unwrap_or(i64::MAX);
        self.pool_connections.get_or_create(&PoolLabels { state: "in_use" }).set(in_use.max(0));
        self.pool_connections.get_or_create(&PoolLabels { state: "idle" }).set(i64::try_from(idle).unwrap_or(i64::MAX));
        self.budget_in_use.set(i64::try_from(budget.in_use_bytes()).unwrap_or(i64::MAX));
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }
}

/// What the metrics listener reads: the registry, and the pool and budget whose use it reports
/// when scraped.
#[derive(Debug, Clone)]
pub struct Scraped {
    /// The registry.
    pub metrics: Arc<Metrics>,
    /// The API's database pool.
    pub pool: PgPool,
    /// The API's memory budget.
    pub budget: MemoryBudget,
}

/// The metrics listener's router: `GET /metrics`.
pub fn router(scraped: Scraped) -> Router {
    Router::new().route("/metrics", get(render)).with_state(scraped)
}

async fn render(State(scraped): State<Scraped>) -> impl IntoResponse {
    let text = scraped.metrics.render(&scraped.pool, &scraped.budget);
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text)
}

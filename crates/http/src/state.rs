use std::{sync::Arc, time::Instant};

use mailroom_app::{IngestService, WorkerState};
use mailroom_store::Store;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::Notify;

/// Everything the handlers need, cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub ingest: IngestService,
    pub workers: Arc<WorkerState>,
    pub wake: Arc<Notify>,
    pub metrics: PrometheusHandle,
    pub started: Instant,
    pub pipeline_stages: Vec<&'static str>,
}

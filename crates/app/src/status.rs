use serde::Serialize;

/// `GET /process/status`, in the shape the EmailBot runbooks read.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessStatus {
    pub emails_processed_today: i64,
    pub current_queue_size: i64,
    pub processing_stats: ProcessingStatsView,
    pub queue: mailroom_store::QueueStats,
    pub workers: WorkersView,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProcessingStatsView {
    /// Share of today's processing attempts that succeeded, 0..=1.
    pub success_rate: f64,
    /// Mean pipeline time of today's processed messages, seconds.
    pub average_processing_time: f64,
    pub processed_today: i64,
    pub failed_attempts_today: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct WorkersView {
    pub configured: usize,
    pub running: usize,
    pub busy: usize,
}

impl ProcessStatus {
    pub fn from_stats(
        today: &mailroom_store::ProcessingStats,
        queue: mailroom_store::QueueStats,
        workers: &crate::WorkerState,
    ) -> Self {
        use std::sync::atomic::Ordering::Relaxed;
        let attempts = today.processed + today.failed_attempts;
        Self {
            emails_processed_today: today.processed,
            current_queue_size: queue.depth,
            processing_stats: ProcessingStatsView {
                success_rate: if attempts == 0 {
                    1.0
                } else {
                    today.processed as f64 / attempts as f64
                },
                average_processing_time: today.average_processing_ms / 1000.0,
                processed_today: today.processed,
                failed_attempts_today: today.failed_attempts,
            },
            queue,
            workers: WorkersView {
                configured: workers.configured.load(Relaxed),
                running: workers.running.load(Relaxed),
                busy: workers.busy.load(Relaxed),
            },
        }
    }
}

//! Prometheus metrics through the Prometheus project's own client (`prometheus-client`): request
//! counts and latency by route and status, and the mail outbox's deliveries. Kept per app instance
//! (no global registry), so tests read their own. The outbox's queue sizes are read from the
//! database when `/metrics` is scraped, so every instance reports the shared queue.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

const REQUEST_BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];
/// From queued to delivered: immediate, to after the retries of an outage.
const DELIVERY_BUCKETS: [f64; 10] = [0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 1800.0, 3600.0, 86400.0];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

fn request_histogram() -> Histogram {
    Histogram::new(REQUEST_BUCKETS)
}

/// What the outbox worker reports (clones share their values).
#[derive(Clone)]
pub struct MailMetrics {
    pub sent: Counter,
    /// Attempts that failed and will be tried again.
    pub retried: Counter,
    /// Mails given up on (kept with `failed_at`).
    pub failed: Counter,
    /// Seconds from queued to delivered.
    pub delivery_seconds: Histogram,
    queued: Gauge,
    failed_kept: Gauge,
}

/// The getMe cache of this instance (`services::me_cache`), brought up to date when scraped.
#[derive(Clone, Default)]
struct MeCacheMetrics {
    hits: Counter,
    misses: Counter,
    entries: Gauge,
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: Family<RequestLabels, Histogram, fn() -> Histogram>,
    pub mail: MailMetrics,
    me_cache: MeCacheMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("storecrm");
        let requests = Family::<RequestLabels, Counter>::default();
        let durations = Family::<RequestLabels, Histogram, fn() -> Histogram>::new_with_constructor(request_histogram);
        registry.register("http_requests", "HTTP requests served", requests.clone());
        registry.register("http_request_duration_seconds", "Time to produce the response head", durations.clone());
        let mail = MailMetrics {
            sent: Counter::default(),
            retried: Counter::default(),
            failed: Counter::default(),
            delivery_seconds: Histogram::new(DELIVERY_BUCKETS),
            queued: Gauge::default(),
            failed_kept: Gauge::default(),
        };
        registry.register("mail_sent", "Mails delivered by this instance", mail.sent.clone());
        registry.register("mail_retries", "Delivery attempts that failed and will be retried", mail.retried.clone());
        registry.register("mail_failed", "Mails given up on by this instance", mail.failed.clone());
        registry.register("mail_delivery_seconds", "Seconds from queued to delivered", mail.delivery_seconds.clone());
        registry.register("mail_queued", "Mails waiting in the outbox (all instances)", mail.queued.clone());
        registry.register(
            "mail_failed_kept",
            "Given-up mails kept in the outbox (all instances)",
            mail.failed_kept.clone(),
        );
        let me_cache = MeCacheMetrics::default();
        registry.register(
            "me_cache_hits",
            "getMe answers served from memory after a version check",
            me_cache.hits.clone(),
        );
        registry.register("me_cache_misses", "getMe answers read in full and remembered", me_cache.misses.clone());
        registry.register("me_cache_entries", "getMe answers held in memory", me_cache.entries.clone());
        Self { registry, requests, durations, mail, me_cache }
    }
}

impl Metrics {
    pub fn record(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let labels = RequestLabels { method: method.to_string(), route: route.to_string(), status };
        self.requests.get_or_create(&labels).inc();
        self.durations.get_or_create(&labels).observe(elapsed.as_secs_f64());
    }

    /// The outbox's current sizes, read from the database by the caller.
    pub fn set_mail_queue(&self, queued: i64, failed: i64) {
        self.mail.queued.set(queued);
        self.mail.failed_kept.set(failed);
    }

    /// The getMe cache's totals since start and its size, read from it by the caller.
    pub fn set_me_cache(&self, hits: u64, misses: u64, entries: usize) {
        let m = &self.me_cache;
        m.hits.inc_by(hits.saturating_sub(m.hits.get()));
        m.misses.inc_by(misses.saturating_sub(m.misses.get()));
        m.entries.set(entries as i64);
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_and_cumulative_buckets() {
        let m = Metrics::default();
        m.record("GET", "/healthz", 200, Duration::from_millis(2));
        m.record("GET", "/healthz", 200, Duration::from_millis(200));
        m.mail.sent.inc();
        let text = m.render();
        assert!(
            text.contains("storecrm_http_requests_total{method=\"GET\",route=\"/healthz\",status=\"200\"} 2"),
            "{text}"
        );
        let bucket = |le: &str| format!("bucket{{le=\"{le}\",method=\"GET\",route=\"/healthz\",status=\"200\"}}");
        assert!(text.contains(&format!("{} 1", bucket("0.0025"))), "{text}");
        assert!(text.contains(&format!("{} 2", bucket("0.25"))), "{text}");
        assert!(text.contains(&format!("{} 2", bucket("+Inf"))), "{text}");
        assert!(text.contains("storecrm_mail_sent_total 1"), "{text}");
    }
}

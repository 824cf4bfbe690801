//! The outbox worker: claims due rows under a lease, sends them, deletes the delivered ones and
//! reschedules the rest with exponential backoff. Any number of workers, in one process or in
//! many, may drain the same database: a leased row is invisible to the others.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{Notify, watch};
use tokio::task::{JoinHandle, JoinSet};

use super::{MailError, Mailer, OutgoingMail};
use crate::metrics::MailMetrics;
use crate::repo::{ClaimedMail, Database, RepoError, RepoResult};

/// How long before its lease ends a row's outcome is no longer written (the row may be another
/// worker's by then), and the pause between attempts while the database is unavailable.
const RECORD_MARGIN: Duration = Duration::from_secs(3);
const RECORD_RETRY_PAUSE: Duration = Duration::from_millis(500);

#[derive(Debug, Clone)]
pub struct OutboxSettings {
    /// How often to look for due mail when nobody wakes the worker.
    pub poll_interval: Duration,
    /// How long a claimed row is reserved for this worker (whole seconds, at least 1).
    /// Sends are abandoned at half of it, so a row is never sent by two workers at once.
    pub lease: Duration,
    /// Delay after the first failure; it doubles with each further one.
    pub backoff_base: Duration,
    /// Ceiling of the delay (before up to 10% of jitter).
    pub backoff_max: Duration,
    /// Attempts before a mail is given up on and parked with `failed_at` set.
    pub max_attempts: u32,
    /// Rows claimed, and sent concurrently, per round.
    pub batch_size: u32,
}

impl Default for OutboxSettings {
    /// 12 attempts from 30 s doubling up to 1 h: a mail rides out about six hours of outage.
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_millis(500),
            lease: Duration::from_secs(120),
            backoff_base: Duration::from_secs(30),
            backoff_max: Duration::from_secs(3600),
            max_attempts: 12,
            batch_size: 10,
        }
    }
}

impl OutboxSettings {
    /// The wait after `failures` failed attempts (1 for the first): `base · 2^(failures-1)`, capped,
    /// plus `jitter` (in [0, 1)) times 10%, so mails that failed together do not retry together.
    pub fn backoff(&self, failures: u32, jitter: f64) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        let delay = self.backoff_base.saturating_mul(1 << doublings).min(self.backoff_max);
        delay + delay.mul_f64(0.1 * jitter.clamp(0.0, 1.0))
    }
}

fn unix_millis() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or_default()
}

/// The first whole second at which `delay` has fully passed: a retry never comes early.
fn due_at(now_millis: i64, delay: Duration) -> i64 {
    let millis = now_millis.saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX / 2));
    millis.saturating_add(999) / 1000
}

pub struct OutboxWorker {
    db: Database,
    mailer: Arc<dyn Mailer>,
    settings: OutboxSettings,
    wake: Arc<Notify>,
    metrics: Option<MailMetrics>,
}

impl OutboxWorker {
    pub fn new(db: Database, mailer: Arc<dyn Mailer>, settings: OutboxSettings) -> Self {
        Self { db, mailer, settings, wake: Arc::new(Notify::new()), metrics: None }
    }

    /// Counts deliveries, retries and failures into the app's metrics.
    pub fn with_metrics(mut self, metrics: MailMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Uses a `Notify` created beforehand, e.g. one the enqueuing services already hold.
    pub fn with_wake(mut self, wake: Arc<Notify>) -> Self {
        self.wake = wake;
        self
    }

    /// `notify_one()` on it makes the worker look for due mail now rather than at the next poll.
    pub fn wake_handle(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    fn batch_size(&self) -> u32 {
        self.settings.batch_size.max(1)
    }

    /// One round: claims up to `batch_size` due mails, sends them concurrently and records each
    /// outcome. Returns how many were claimed.
    pub async fn run_once(&self) -> RepoResult<usize> {
        let lease_secs = self.settings.lease.as_secs().max(1) as i64;
        let now = crate::now();
        let mut tx = self.db.atomic().await?;
        let claimed = tx.claim_due_mail(now, lease_secs, self.batch_size()).await?;
        tx.commit().await?;
        let count = claimed.len();
        let send_timeout = Duration::from_secs(lease_secs as u64) / 2;
        // The row is ours until the lease ends (`now` was truncated to a second: keep a margin).
        let lease_end =
            tokio::time::Instant::now() + Duration::from_secs(lease_secs as u64).saturating_sub(RECORD_MARGIN);
        let mut sends = JoinSet::new();
        for mail in claimed {
            let message = match &mail.message {
                Ok(message) => OutgoingMail { message_id: Some(message_id(mail.id, &message.from)), ..message.clone() },
                Err(reason) => {
                    // A row this binary cannot read would be claimed forever: park it instead.
                    tracing::error!(mail_id = %mail.id, error = %reason, "outbox row holds an unreadable message; giving up on it");
                    let error = format!("unreadable message: {reason}");
                    self.db.auto().mail_failed(mail.id, mail.attempts, now, &error, true).await?;
                    continue;
                }
            };
            let mailer = self.mailer.clone();
            sends.spawn(async move {
                let outcome = tokio::time::timeout(send_timeout, mailer.send(&message))
                    .await
                    .unwrap_or_else(|_| Err(MailError::Transient("timed out".into())));
                (mail, outcome)
            });
        }
        while let Some(joined) = sends.join_next().await {
            match joined {
                Ok((mail, outcome)) => self.record(mail, outcome, lease_end).await,
                Err(e) => tracing::error!(error = %e, "outbox send task died; its mail is retried when the lease ends"),
            }
        }
        Ok(count)
    }

    /// Records a send's outcome. While the database is unavailable the write is tried again
    /// until the lease is nearly over: a delivered mail that could not be marked sent would be
    /// sent a second time when its lease ends (docs/reliability.md, fault 3).
    async fn record(&self, mail: ClaimedMail, outcome: Result<(), MailError>, lease_end: tokio::time::Instant) {
        let mut recorded = self.record_once(&mail, &outcome, true).await;
        while matches!(recorded, Err(RepoError::Unavailable(_)))
            && tokio::time::Instant::now() + RECORD_RETRY_PAUSE < lease_end
        {
            tokio::time::sleep(RECORD_RETRY_PAUSE).await;
            recorded = self.record_once(&mail, &outcome, false).await;
        }
        if let Err(e) = recorded {
            tracing::error!(mail_id = %mail.id, error = %e, "cannot record a mail's outcome; it may be sent again");
        }
    }

    /// One attempt at recording; `first` logs and counts the outcome (once per send).
    async fn record_once(&self, mail: &ClaimedMail, outcome: &Result<(), MailError>, first: bool) -> RepoResult<()> {
        match outcome {
            Ok(()) => {
                let now = crate::now();
                if first {
                    // One line per delivery: the ids, never the address or the content.
                    tracing::info!(mail_id = %mail.id, store_id = ?mail.store_id, attempts = mail.attempts + 1, "mail delivered");
                    if let Some(m) = &self.metrics {
                        m.sent.inc();
                        m.delivery_seconds.observe((now - mail.created_at).max(0) as f64);
                    }
                }
                self.db.auto().mail_delivered(mail.id, now).await
            }
            Err(error) => {
                let attempts = mail.attempts.saturating_add(1);
                let give_up = u32::try_from(attempts).unwrap_or(0) >= self.settings.max_attempts;
                let next_attempt_at = if give_up {
                    crate::now()
                } else {
                    let delay = self.settings.backoff(attempts as u32, rand::random::<f64>());
                    if first {
                        tracing::warn!(mail_id = %mail.id, store_id = ?mail.store_id, attempts, retry_in = ?delay,
                            error = %error, "mail not delivered; will retry");
                    }
                    due_at(unix_millis(), delay)
                };
                if give_up && first {
                    tracing::error!(mail_id = %mail.id, store_id = ?mail.store_id, attempts, error = %error,
                        "mail not delivered; giving up, the outbox row is kept with failed_at set");
                }
                if let Some(m) = self.metrics.as_ref().filter(|_| first) {
                    if give_up {
                        m.failed.inc()
                    } else {
                        m.retried.inc()
                    };
                }
                self.db.auto().mail_failed(mail.id, attempts, next_attempt_at, &error.to_string(), give_up).await
            }
        }
    }

    /// Runs until `shutdown` turns true (or its sender is dropped); a round in progress finishes first.
    pub fn spawn(self, shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
        tokio::spawn(self.run(shutdown))
    }

    async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut db_failures: u32 = 0;
        loop {
            if *shutdown.borrow() {
                break;
            }
            let pause = match self.run_once().await {
                // A full batch suggests more is due: go again at once.
                Ok(n) if n >= self.batch_size() as usize => {
                    db_failures = 0;
                    continue;
                }
                Ok(_) => {
                    db_failures = 0;
                    self.settings.poll_interval
                }
                Err(e) => {
                    // Back off while the database is away instead of logging at poll rate.
                    db_failures = db_failures.saturating_add(1);
                    tracing::error!(error = %e, "outbox worker cannot claim mail");
                    (self.settings.poll_interval * 2u32.saturating_pow(db_failures.min(6))).min(Duration::from_secs(30))
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = self.wake.notified() => {}
                changed = shutdown.changed() => if changed.is_err() { break },
            }
        }
        tracing::debug!("outbox worker stopped");
    }
}

/// The Message-ID of an outbox mail: its id at the sender's domain (`storecrm.invalid` when the
/// sender has none we can read).
pub fn message_id(id: uuid::Uuid, from: &str) -> String {
    let address = from.rsplit('<').next().unwrap_or(from).trim_end_matches('>').trim();
    let domain = address
        .rsplit_once('@')
        .map(|(_, d)| d)
        .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-'));
    format!("<{}@{}>", id.simple(), domain.unwrap_or("storecrm.invalid"))
}

/// The outbox id inside a Message-ID that [`message_id`] made.
pub fn outbox_id(message_id: &str) -> Option<uuid::Uuid> {
    let (local, _) = message_id.strip_prefix('<')?.split_once('@')?;
    uuid::Uuid::try_parse(local).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_outbox_id_comes_back_out_of_its_message_id() {
        let id = uuid::Uuid::now_v7();
        assert_eq!(outbox_id(&message_id(id, "Shop <news@shop.example>")), Some(id));
        assert_eq!(outbox_id("<random@elsewhere>"), None);
        assert_eq!(outbox_id("no brackets"), None);
    }

    #[test]
    fn backoff_doubles_then_caps_with_bounded_jitter() {
        let s = OutboxSettings::default();
        let secs = |failures| s.backoff(failures, 0.0).as_secs();
        assert_eq!([secs(1), secs(2), secs(3), secs(7), secs(8), secs(40)], [30, 60, 120, 1920, 3600, 3600]);
        assert_eq!(s.backoff(0, 0.0), Duration::from_secs(30));
        assert_eq!(s.backoff(u32::MAX, 0.0), Duration::from_secs(3600));
        assert_eq!(s.backoff(1, 0.5), Duration::from_millis(31_500));
        assert!(s.backoff(8, 0.999) < Duration::from_secs(3960));
    }

    #[test]
    fn retries_are_due_no_earlier_than_the_delay() {
        assert_eq!(due_at(10_000, Duration::from_secs(30)), 40);
        assert_eq!(due_at(10_001, Duration::from_secs(30)), 41);
        assert_eq!(due_at(10_500, Duration::from_millis(200)), 11);
    }

    #[test]
    fn defaults_keep_sends_inside_the_lease() {
        let s = OutboxSettings::default();
        assert!(s.lease / 2 > Duration::from_secs(30), "the SMTP timeout must fit in half a lease");
        assert!(s.max_attempts > 1 && s.batch_size > 0);
    }
}

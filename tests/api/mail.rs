//! Mail: the SMTP and file transports against real listeners and directories, and the outbox
//! worker end to end on both backends (delivery, outage, concurrent workers, giving up, erasure).

pub mod sink;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::common::{Backend, TestApp};
use sink::{Parsed, SmtpSink, assert_is_mail, tally};
use sqlx::{Connection, Row};
use storecrm::config::Config;
use storecrm::mail::{FileMailer, Mailer, OutboxSettings, OutboxWorker, OutgoingMail, SmtpMailer, mailer_from_config};
use storecrm::repo::NewOutboxMail;
use tokio::sync::watch;

backend_tests!(
    run = with_outbox_worker_off;
    outbox_delivers_each_mail_once_and_keeps_no_body,
    outbox_rides_out_an_smtp_outage,
    two_workers_never_send_a_mail_twice,
    concurrent_claims_are_disjoint,
    permanent_rejection_gives_up_without_blocking_others,
    erasure_drops_pending_mail_to_a_recipient,
);

/// The app's own outbox worker is off (`MAIL_WORKER=false`; a no-op until one is wired into the
/// app), so each case alone decides which workers drain the outbox.
async fn with_outbox_worker_off(backend: Backend, case: impl AsyncFnOnce(&TestApp)) {
    let app = TestApp::spawn_with(backend, &[("MAIL_WORKER", "false")]).await;
    case(&app).await;
    app.stop().await;
}

fn mail(n: usize, to: &str) -> OutgoingMail {
    OutgoingMail {
        message_id: None,
        from: "Ann's shop <shop@example.com>".into(),
        to: to.into(),
        reply_to: Some("Help desk <help@example.com>".into()),
        subject: format!("mail {n}"),
        html: format!("<p>Hello <b>number {n}</b></p>"),
        text: format!("Hello number {n}"),
        headers: vec![
            ("List-Unsubscribe".into(), format!("<https://crm.example.com/u/{n}>")),
            ("X-Campaign".into(), "spring".into()),
        ],
    }
}

fn config(vars: &[(&str, &str)]) -> Config {
    let vars: HashMap<&str, &str> = vars.iter().copied().collect();
    Config::from_lookup(|k| vars.get(k).map(|v| v.to_string())).unwrap()
}

fn fast(max_attempts: u32) -> OutboxSettings {
    OutboxSettings {
        poll_interval: Duration::from_millis(100),
        lease: Duration::from_secs(20),
        backoff_base: Duration::from_millis(200),
        backoff_max: Duration::from_secs(1),
        max_attempts,
        batch_size: 10,
    }
}

async fn wait_for(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !done().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[derive(Debug)]
struct OutboxRow {
    to_key: String,
    attempts: i64,
    failed_at: Option<i64>,
    last_error: Option<String>,
}

/// Every outbox row, read straight from the database.
async fn outbox_rows(app: &TestApp) -> Vec<OutboxRow> {
    // Rows still to deliver or given up on; a delivered mail keeps only a summary (sent_at set).
    const SQL: &str = "SELECT to_key, CAST(attempts AS BIGINT) AS attempts, failed_at, last_error FROM mail_outbox WHERE sent_at IS NULL";
    macro_rules! read {
        ($conn:expr) => {{
            let mut conn = $conn;
            let rows = sqlx::raw_sql(SQL).fetch_all(&mut conn).await.unwrap();
            rows.iter()
                .map(|r| OutboxRow {
                    to_key: r.get("to_key"),
                    attempts: r.get("attempts"),
                    failed_at: r.get("failed_at"),
                    last_error: r.get("last_error"),
                })
                .collect()
        }};
    }
    match app.backend {
        Backend::Postgres => read!(crate::common::pg_connect(&app.database_url).await),
        Backend::Sqlite => read!(sqlx::SqliteConnection::connect(&app.database_url).await.unwrap()),
    }
}

async fn enqueue(app: &TestApp, store_id: Option<uuid::Uuid>, mails: impl IntoIterator<Item = OutgoingMail>) {
    for m in mails {
        app.state.db.auto().insert_mail(&NewOutboxMail::new(store_id, m, storecrm::now())).await.unwrap();
    }
}

async fn stop(shutdown: watch::Sender<bool>, workers: Vec<tokio::task::JoinHandle<()>>) {
    shutdown.send(true).unwrap();
    for w in workers {
        tokio::time::timeout(Duration::from_secs(10), w).await.expect("the worker stops").unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_transport_sends_both_parts_and_custom_headers() {
    let sink = SmtpSink::start().await;
    let mailer = mailer_from_config(&config(&[("SMTP_URL", &sink.url())])).unwrap();
    let sent = mail(1, "Bob Buyer <bob@example.net>");
    mailer.send(&sent).await.unwrap();
    let got = sink.messages();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].mail_from, "shop@example.com");
    assert_eq!(got[0].rcpt_to, ["bob@example.net"]);
    assert_is_mail(&got[0].data, &sent);
    assert_eq!(Parsed::new(&got[0].data).header("To"), Some("\"Bob Buyer\" <bob@example.net>"));

    // Non-ASCII text survives its transfer encoding.
    let intl = OutgoingMail {
        message_id: None,
        text: "Grüße, Zoë: 10 €\nmerci".into(),
        html: "<p>Grüße, Zoë</p>".into(),
        ..mail(2, "bob@example.net")
    };
    mailer.send(&intl).await.unwrap();
    let parts = Parsed::new(&sink.messages()[1].data).parts();
    assert_eq!((parts[0].body.as_str(), parts[1].body.as_str()), ("Grüße, Zoë: 10 €\r\nmerci", "<p>Grüße, Zoë</p>"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_errors_are_classified() {
    let sink = SmtpSink::start().await;
    let mailer = SmtpMailer::from_url(&sink.url()).unwrap();
    let err = mailer.send(&mail(1, "reject-me@example.net")).await.unwrap_err();
    assert!(matches!(&err, storecrm::mail::MailError::Permanent(e) if e.contains("550")), "{err:?}");
    sink.set_down(true);
    let err = mailer.send(&mail(2, "bob@example.net")).await.unwrap_err();
    assert!(matches!(err, storecrm::mail::MailError::Transient(_)), "{err:?}");
    // TLS modes build without touching the network; the password never shows.
    for url in ["smtp://u:hunter2@mail.example.com", "smtps://u:hunter2@mail.example.com"] {
        let m = SmtpMailer::from_url(url).unwrap();
        assert!(!m.describe().contains("hunter2"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_transport_writes_one_eml_per_mail() {
    let dir = std::env::temp_dir().join(format!("storecrm-mail-{}", uuid::Uuid::now_v7().simple()));
    let mail_dir = dir.join("nested/mail");
    let mailer = mailer_from_config(&config(&[("MAIL_DIR", mail_dir.to_str().unwrap())])).unwrap();
    assert!(mail_dir.is_dir(), "MAIL_DIR is created up front");
    let sent: Vec<_> = (0..3).map(|n| mail(n, "bob@example.net")).collect();
    for m in &sent {
        mailer.send(m).await.unwrap();
    }
    let files: Vec<_> = std::fs::read_dir(&mail_dir).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(files.len(), 3, "no temporary file is left behind: {files:?}");
    let mut subjects = Vec::new();
    for file in &files {
        assert_eq!(file.extension().unwrap(), "eml");
        assert!(uuid::Uuid::parse_str(file.file_stem().unwrap().to_str().unwrap()).is_ok(), "{file:?}");
        let raw = std::fs::read_to_string(file).unwrap();
        let n: usize = Parsed::new(&raw).header("Subject").unwrap()[5..].parse().unwrap();
        assert_is_mail(&raw, &sent[n]);
        subjects.push(n);
    }
    subjects.sort();
    assert_eq!(subjects, [0, 1, 2]);
    // A removed directory comes back rather than stalling delivery.
    std::fs::remove_dir_all(&mail_dir).unwrap();
    FileMailer::new(&dir).unwrap().send(&sent[0]).await.unwrap();
    mailer.send(&sent[0]).await.unwrap();
    assert_eq!(std::fs::read_dir(&mail_dir).unwrap().count(), 1);
    std::fs::remove_dir_all(&dir).unwrap();
}

async fn outbox_delivers_each_mail_once_and_keeps_no_body(app: &TestApp) {
    let sink = SmtpSink::start().await;
    let mailer: Arc<dyn Mailer> = Arc::new(SmtpMailer::from_url(&sink.url()).unwrap());
    // A poll interval this long means only the wake handle can explain a prompt delivery.
    let settings = OutboxSettings { poll_interval: Duration::from_secs(3600), ..fast(3) };
    let worker = OutboxWorker::new(app.state.db.clone(), mailer, settings);
    let wake = worker.wake_handle();
    let (shutdown, rx) = watch::channel(false);
    let handle = worker.spawn(rx);
    tokio::time::sleep(Duration::from_millis(200)).await;

    let sent: Vec<_> = (0..25).map(|n| mail(n, &format!("Buyer {n} <Buyer{n}@Example.net>"))).collect();
    enqueue(app, None, sent.clone()).await;
    wake.notify_one();
    wait_for("25 deliveries", async || sink.messages().len() >= 25).await;
    wait_for("nothing left to send", async || outbox_rows(app).await.is_empty()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let kept = "SELECT COUNT(*) FROM mail_outbox WHERE sent_at IS NOT NULL AND CAST(message AS TEXT) = 'null'";
    assert_eq!(app.scalar(kept, &[]).await, 25, "a delivered mail keeps its summary, not its body");
    let tally = tally(&sink);
    assert_eq!(tally.len(), 25);
    assert!(tally.values().all(|n| *n == 1), "{tally:?}");
    for m in sink.messages() {
        let n: usize = Parsed::new(&m.data).header("Subject").unwrap()[5..].parse().unwrap();
        assert_eq!(m.rcpt_to, vec![format!("Buyer{n}@Example.net")]);
        assert_is_mail(&m.data, &sent[n]);
    }
    stop(shutdown, vec![handle]).await;
}

async fn outbox_rides_out_an_smtp_outage(app: &TestApp) {
    let sink = SmtpSink::start().await;
    sink.set_down(true);
    let mailer: Arc<dyn Mailer> = Arc::new(SmtpMailer::from_url(&sink.url()).unwrap());
    enqueue(app, None, (0..5).map(|n| mail(n, "bob@example.net"))).await;
    let (shutdown, rx) = watch::channel(false);
    let handle = OutboxWorker::new(app.state.db.clone(), mailer, fast(50)).spawn(rx);

    wait_for("two failed rounds", async || outbox_rows(app).await.iter().all(|r| r.attempts >= 2)).await;
    let rows = outbox_rows(app).await;
    assert_eq!(rows.len(), 5);
    assert!(rows.iter().all(|r| r.failed_at.is_none() && r.last_error.is_some()), "{rows:?}");
    assert!(sink.dropped() >= 2 && sink.messages().is_empty());

    sink.set_down(false);
    wait_for("nothing left to send", async || outbox_rows(app).await.is_empty()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let tally = tally(&sink);
    assert_eq!(tally.len(), 5, "{tally:?}");
    assert!(tally.values().all(|n| *n == 1), "{tally:?}");
    stop(shutdown, vec![handle]).await;
}

async fn two_workers_never_send_a_mail_twice(app: &TestApp) {
    let sink = SmtpSink::start().await;
    let other = app.sibling().await;
    enqueue(app, None, (0..50).map(|n| mail(n, "bob@example.net"))).await;
    let (shutdown, rx) = watch::channel(false);
    let settings = OutboxSettings { batch_size: 4, ..fast(3) };
    let workers: Vec<_> = [app, &other]
        .map(|instance| {
            let mailer: Arc<dyn Mailer> = Arc::new(SmtpMailer::from_url(&sink.url()).unwrap());
            OutboxWorker::new(instance.state.db.clone(), mailer, settings.clone()).spawn(rx.clone())
        })
        .into();
    wait_for("nothing left to send", async || outbox_rows(app).await.is_empty()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let tally = tally(&sink);
    assert_eq!(tally.len(), 50);
    assert!(tally.values().all(|n| *n == 1), "{tally:?}");
    stop(shutdown, workers).await;
    other.stop().await;
}

/// Leases due mail for 60 s, as a worker's round does.
async fn claim(db: &storecrm::repo::Database, now: i64, limit: u32) -> Vec<storecrm::repo::ClaimedMail> {
    let mut tx = db.atomic().await.unwrap();
    let claimed = tx.claim_due_mail(now, 60, limit).await.unwrap();
    tx.commit().await.unwrap();
    claimed
}

async fn concurrent_claims_are_disjoint(app: &TestApp) {
    let other = app.sibling().await;
    enqueue(app, None, (0..90).map(|n| mail(n, "bob@example.net"))).await;
    let claim_all = |db: storecrm::repo::Database| {
        tokio::spawn(async move {
            let mut ids = Vec::new();
            loop {
                let batch = claim(&db, storecrm::now(), 5).await;
                if batch.is_empty() {
                    return ids;
                }
                ids.extend(batch.into_iter().map(|c| c.id));
            }
        })
    };
    // Three claimers over two pools, as two instances with several workers would be.
    let (a, b, c) = tokio::join!(
        claim_all(app.state.db.clone()),
        claim_all(other.state.db.clone()),
        claim_all(app.state.db.clone())
    );
    let claims: Vec<_> = [a.unwrap(), b.unwrap(), c.unwrap()].concat();
    let mut distinct = claims.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!((distinct.len(), claims.len()), (90, 90), "each row is claimed by exactly one claimer");
    // Leased rows stay invisible until the lease runs out, then come back.
    assert!(claim(&app.state.db, storecrm::now(), 100).await.is_empty());
    assert_eq!(claim(&app.state.db, storecrm::now() + 61, 100).await.len(), 90);
    other.stop().await;
}

async fn permanent_rejection_gives_up_without_blocking_others(app: &TestApp) {
    let sink = SmtpSink::start().await;
    let mailer: Arc<dyn Mailer> = Arc::new(SmtpMailer::from_url(&sink.url()).unwrap());
    enqueue(app, None, [mail(0, "reject-me@example.net")]).await;
    enqueue(app, None, (1..4).map(|n| mail(n, "bob@example.net"))).await;
    let (shutdown, rx) = watch::channel(false);
    let handle = OutboxWorker::new(app.state.db.clone(), mailer, fast(3)).spawn(rx);

    wait_for("the three good mails", async || sink.messages().len() >= 3).await;
    wait_for("giving up", async || outbox_rows(app).await.iter().all(|r| r.failed_at.is_some())).await;
    let rows = outbox_rows(app).await;
    assert_eq!(rows.len(), 1, "the given-up row is kept: {rows:?}");
    assert_eq!((rows[0].to_key.as_str(), rows[0].attempts), ("reject-me@example.net", 3));
    assert!(rows[0].last_error.as_deref().unwrap().contains("550"), "{rows:?}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(sink.rejected(), 3, "no attempt after giving up");
    assert_eq!(sink.messages().len(), 3);
    stop(shutdown, vec![handle]).await;
}

async fn erasure_drops_pending_mail_to_a_recipient(app: &TestApp) {
    let store: uuid::Uuid = app.admin("ann").await.store_id.parse().unwrap();
    enqueue(app, Some(store), [mail(0, "Ann <ANN@example.com>"), mail(1, "ann@example.com")]).await;
    enqueue(app, Some(store), [mail(2, "bob@example.com")]).await;
    enqueue(app, None, [mail(3, "ann@example.com")]).await;
    assert_eq!(app.state.db.auto().delete_mail_to(store, "ann@example.com").await.unwrap(), 2);
    let mut left: Vec<_> = outbox_rows(app).await.into_iter().map(|r| r.to_key).collect();
    left.sort();
    assert_eq!(left, ["ann@example.com", "bob@example.com"], "platform mail and other recipients stay");
}

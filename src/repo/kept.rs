//! Postgres connections kept between one-statement units of work, without sqlx's release ping.
//!
//! sqlx's pool pings every connection it is handed back (`Floating::return_to_pool` in sqlx-core
//! 0.9: a Sync and its ReadyForQuery, in a task spawned per release) to flush whatever a dropped
//! query future left on the wire. For a request of one statement that is one more round trip for
//! Postgres and a spawned task for the server: 13 % of the server's CPU under `initialize` (perf,
//! docs/benchmarks.md §J). A statement that ran to its end, or ended in an error Postgres sent,
//! leaves the connection usable: at most the rest of its answer is unread, and sqlx reads up to
//! the next ReadyForQuery before it sends anything (`wait_until_ready`). So [`Kept`] hands such a
//! connection to the next statement directly, newest first, while it has been idle less than
//! [`PING_IF_IDLE`](super::postgres::PING_IF_IDLE). Every other connection goes back to sqlx's
//! pool, ping included: one whose statement failed otherwise (I/O, TLS, protocol), one whose
//! statement future was dropped (a request timed out), one idle longer, and those of
//! transactions (sqlx's `Transaction` owns its connection and returns it on drop).
//!
//! The kept connections stay checked out of sqlx's pool, so its `max_connections` still bounds
//! the total; but the pool cannot see them. A task that finds none kept and waits on the pool
//! counts itself in [`Idle::waiting`] (under the same lock as the list), and while anyone waits
//! a connection handed back goes to the pool instead of the list, so nobody waits on a pool
//! whose connections sit here. A transaction hands the pool a kept connection before it asks
//! when the pool has none idle. A sweep every `PING_IF_IDLE` returns the stale ones, so an idle
//! instance gives its connections back to the pool's own idle timeout.

use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Instant;

use sqlx::Postgres;
use sqlx::pool::PoolConnection;
use sqlx::postgres::PgPool;

use super::postgres::PING_IF_IDLE;

/// sqlx's pool and the connections kept out of it between statements.
pub struct Kept {
    pool: PgPool,
    idle: Mutex<Idle>,
}

#[derive(Default)]
struct Idle {
    /// Oldest first: the last one was handed back last.
    conns: Vec<(PoolConnection<Postgres>, Instant)>,
    /// Tasks waiting on sqlx's pool for a connection.
    waiting: usize,
}

impl std::fmt::Debug for Kept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kept").field("pool", &self.pool).field("kept", &self.lock().conns.len()).finish()
    }
}

/// Counts a task as waiting on the pool until it has its connection (or gave up: dropped).
struct Waiting<'a>(&'a Kept);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.lock().waiting -= 1;
    }
}

impl Kept {
    /// Wraps the pool, and starts the sweep that returns stale connections to it (the sweep ends
    /// with the last handle).
    pub fn new(pool: PgPool) -> Arc<Self> {
        let kept = Arc::new(Self { pool, idle: Mutex::default() });
        let weak: Weak<Self> = Arc::downgrade(&kept);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(PING_IF_IDLE);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(kept) = weak.upgrade() else { break };
                drop(kept.stale());
            }
        });
        kept
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    fn lock(&self) -> MutexGuard<'_, Idle> {
        // Nothing panics while holding the lock; a poisoned list is still a valid list.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the stale connections off the list (to be dropped outside the lock: back to the pool).
    fn stale(&self) -> Vec<(PoolConnection<Postgres>, Instant)> {
        let mut idle = self.lock();
        let fresh = idle.conns.partition_point(|(_, at)| at.elapsed() >= PING_IF_IDLE);
        idle.conns.drain(..fresh).collect()
    }

    /// A connection for one statement: the one handed back last, else one from the pool.
    pub async fn take(&self) -> Result<PoolConnection<Postgres>, sqlx::Error> {
        let stale = self.stale();
        let waiting = {
            let mut idle = self.lock();
            match idle.conns.pop() {
                Some((conn, _)) => return Ok(conn),
                None => {
                    idle.waiting += 1;
                    Waiting(self)
                }
            }
        };
        drop(stale);
        let conn = self.pool.acquire().await;
        drop(waiting);
        conn
    }

    /// Hands back the connection of a statement that ran to its end (`ended`: it succeeded, or
    /// Postgres answered with an error): kept, unless a task waits on the pool. Any other goes
    /// back to the pool, which pings it or closes it.
    pub fn give_back<T>(&self, conn: PoolConnection<Postgres>, ended: &Result<T, sqlx::Error>) {
        if matches!(ended, Ok(_) | Err(sqlx::Error::Database(_))) {
            let mut idle = self.lock();
            if idle.waiting == 0 {
                idle.conns.push((conn, Instant::now()));
                return;
            }
        }
        drop(conn);
    }

    /// A transaction, on a connection of the pool. When the pool has none idle, a kept one goes
    /// to it first, so that it has one to give.
    pub async fn begin(&self) -> Result<sqlx::Transaction<'static, Postgres>, sqlx::Error> {
        let (spare, waiting) = {
            let mut idle = self.lock();
            let spare = if self.pool.num_idle() == 0 { idle.conns.pop() } else { None };
            idle.waiting += 1;
            (spare, Waiting(self))
        };
        drop(spare);
        let tx = self.pool.begin().await;
        drop(waiting);
        tx
    }
}

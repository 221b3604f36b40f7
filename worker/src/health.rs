//! What `/readyz` reports: consumers attached to the queue and the database
//! answering. Updated by the consumers as they connect, lose the broker, or
//! retry a batch because PostgreSQL is unavailable.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

#[derive(Debug)]
pub struct Health {
    /// Consumers currently attached to `idv.events`.
    consuming: AtomicUsize,
    /// The last transaction (or start-up check) reached PostgreSQL.
    database_up: AtomicBool,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            consuming: AtomicUsize::new(0),
            database_up: AtomicBool::new(true),
        }
    }
}

impl Health {
    pub fn ready(&self) -> bool {
        self.consuming.load(Ordering::SeqCst) > 0 && self.database_up.load(Ordering::SeqCst)
    }

    pub fn consumers(&self) -> usize {
        self.consuming.load(Ordering::SeqCst)
    }

    pub fn set_database_up(&self, up: bool) {
        self.database_up.store(up, Ordering::SeqCst);
    }

    /// Counts a consumer as attached until the guard drops.
    pub fn attached(&self) -> AttachedGuard<'_> {
        self.consuming.fetch_add(1, Ordering::SeqCst);
        AttachedGuard(self)
    }
}

/// Detaches its consumer from [`Health`] when dropped.
#[derive(Debug)]
pub struct AttachedGuard<'a>(&'a Health);

impl Drop for AttachedGuard<'_> {
    fn drop(&mut self) {
        self.0.consuming.fetch_sub(1, Ordering::SeqCst);
    }
}

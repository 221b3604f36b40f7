//! The fault run (`tests/fault_run.rs`): the real binaries under a
//! Stripe-like load while the broker, the database, the workers and the
//! dispatcher are broken on a schedule, on private services of its own,
//! then an audit of the record against a reference model and a ledger.

pub mod amqp;
pub mod audit;
pub mod ledger;
pub mod model;
pub mod pipeline;
pub mod private_pg;
pub mod private_rabbit;
pub mod process;
pub mod sender;
pub mod stories;
pub mod supervisor;

/// The run's state directory (`target/fault-run/<tag>`), deleted on drop
/// once the private services in it were taken down.
#[derive(Debug)]
pub struct RunDir(pub std::path::PathBuf);

impl Drop for RunDir {
    fn drop(&mut self) {
        if let Err(error) = std::fs::remove_dir_all(&self.0)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            eprintln!("could not delete {}: {error}", self.0.display());
        }
    }
}

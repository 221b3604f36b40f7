//! `idvctl migrate`: creates the database if it is missing, then applies the
//! numbered migrations embedded from `worker/migrations/`.

use anyhow::Context;
use secrecy::SecretString;
use tokio_postgres::NoTls;

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Applies every pending migration; returns the names of those applied.
pub async fn migrate(url: &SecretString) -> anyhow::Result<Vec<String>> {
    migrate_to(url, None).await
}

/// Applies the pending migrations up to `version` included (all of them
/// for `None`); returns the names of those applied. Tests use a version to
/// seed a database in the shape an older release left it.
pub async fn migrate_to(url: &SecretString, version: Option<i32>) -> anyhow::Result<Vec<String>> {
    let config = crate::store::pg_config(url)?;
    create_database_if_missing(&config).await?;
    let (mut client, connection) = config
        .connect(NoTls)
        .await
        .context("connecting to the database (DATABASE_URL)")?;
    let connection = tokio::spawn(connection);
    let target = version.map_or(refinery::Target::Latest, refinery::Target::Version);
    let report = embedded::migrations::runner()
        .set_target(target)
        .run_async(&mut client)
        .await
        .context("applying migrations")?;
    drop(client);
    let _ = connection.await;
    Ok(report
        .applied_migrations()
        .iter()
        .map(|m| format!("V{}__{}", m.version(), m.name()))
        .collect())
}

/// Connects to the `postgres` maintenance database and creates the target
/// database when it does not exist.
async fn create_database_if_missing(config: &tokio_postgres::Config) -> anyhow::Result<()> {
    let name = config
        .get_dbname()
        .context("DATABASE_URL names no database")?
        .to_owned();
    let mut admin = config.clone();
    admin.dbname("postgres");
    let (client, connection) = admin
        .connect(NoTls)
        .await
        .context("connecting to the server of DATABASE_URL (its `postgres` database)")?;
    let connection = tokio::spawn(connection);
    let exists = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await?
        .is_some();
    if !exists {
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        client
            .batch_execute(&format!("CREATE DATABASE {quoted}"))
            .await
            .with_context(|| format!("creating database {name}"))?;
        tracing::info!(database = %name, "created the database");
    }
    drop(client);
    let _ = connection.await;
    Ok(())
}

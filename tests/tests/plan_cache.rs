//! The worker's connections plan each execution of a prepared statement
//! for the tables as they are then. PostgreSQL's default switches a
//! prepared statement to a generic plan on its sixth execution, planned
//! for the table sizes of that moment: on a new database, empty tables,
//! and the plans were sequential scans that stayed, checking `= ANY($1)`
//! row by row, until autovacuum's next ANALYZE.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns

use idv_tests::database::TestDatabase;
use shared::config::Env;
use worker::settings::Settings;

/// How a batch writes its sessions (`store::write`): joined to the
/// batch's rows by id.
const BATCH_WRITE: &str = "UPDATE sessions s SET updated_at = now() \
     FROM unnest($1::text[]) AS u(id) WHERE s.id = u.id";

#[tokio::test]
async fn a_batch_write_prepared_on_an_empty_table_uses_the_index_once_the_table_is_large() {
    let db = TestDatabase::new().await;
    let settings =
        Settings::from_env(&Env::from_pairs([("DATABASE_URL", db.url.as_str())])).unwrap();
    let url = settings.database_url;
    worker::migrate::migrate(&url).await.unwrap();
    let admin = db.client().await;
    // No ANALYZE behind the test's back: only the plans are measured.
    admin
        .batch_execute("ALTER TABLE sessions SET (autovacuum_enabled = false)")
        .await
        .unwrap();
    let pool = worker::store::connect_pool(&url, 1).await.unwrap();
    let client = pool.get().await.unwrap();
    let ids = vec!["vs_plan_1".to_owned(), "vs_plan_2".to_owned()];
    // Past the executions after which PostgreSQL may settle on a generic plan.
    for _ in 0..8 {
        let statement = client.prepare_cached(BATCH_WRITE).await.unwrap();
        client.execute(&statement, &[&ids]).await.unwrap();
    }
    admin
        .batch_execute(
            "INSERT INTO sessions (id) SELECT 'vs_plan_' || n FROM generate_series(1, 50000) n",
        )
        .await
        .unwrap();

    let statement = client.prepare_cached(BATCH_WRITE).await.unwrap();
    // This backend's own counts, flushed or not, around one execution.
    let counts = || async {
        let row = client
            .query_one(
                "SELECT seq_scan, COALESCE(idx_scan, 0) FROM pg_stat_xact_user_tables \
                 WHERE relname = 'sessions'",
                &[],
            )
            .await
            .unwrap();
        (row.get::<_, i64>(0), row.get::<_, i64>(1))
    };
    client.batch_execute("BEGIN").await.unwrap();
    let before = counts().await;
    let updated = client.execute(&statement, &[&ids]).await.unwrap();
    let after = counts().await;
    client.batch_execute("COMMIT").await.unwrap();
    assert_eq!(updated, 2);
    let (sequential, index) = (after.0 - before.0, after.1 - before.1);
    assert!(
        sequential == 0 && index >= 1,
        "the update of 2 of 50,000 sessions: {sequential} sequential scans, {index} index scans \
         (a plan made when the table was empty reads it whole)"
    );
}

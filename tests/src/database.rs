//! A database of its own for one test, dropped when the test ends.

use tokio_postgres::NoTls;

/// A freshly created, empty database.
#[derive(Debug)]
pub struct TestDatabase {
    pub name: String,
    /// `DATABASE_URL` for the services under test.
    pub url: String,
}

async fn admin_client() -> tokio_postgres::Client {
    let url = format!("{}/postgres", crate::postgres_url());
    let (client, connection) = tokio_postgres::connect(&url, NoTls)
        .await
        .expect("PostgreSQL is reachable at IDV_TEST_POSTGRES_URL");
    tokio::spawn(connection);
    client
}

impl TestDatabase {
    pub async fn new() -> Self {
        let name = format!("idv_test_{}_{}", crate::run_tag(), crate::unique_suffix());
        admin_client()
            .await
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create the test database");
        let url = format!("{}/{name}", crate::postgres_url());
        Self { name, url }
    }

    /// The PostgreSQL server's address, for a proxy in front of it.
    pub fn server_addr(&self) -> std::net::SocketAddr {
        crate::server_addr(&self.url, 5432, "IDV_TEST_POSTGRES_URL")
    }

    /// `DATABASE_URL` for this database through `proxy` instead of directly.
    pub fn url_via(&self, proxy: std::net::SocketAddr) -> String {
        crate::url_via(&self.url, proxy)
    }

    /// A plain connection to this database, for assertions.
    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.url, NoTls)
            .await
            .expect("connect to the test database");
        tokio::spawn(connection);
        client
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        crate::run_blocking_cleanup(async move {
            let statement = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
            if let Err(error) = admin_client().await.batch_execute(&statement).await {
                eprintln!("could not drop {name}: {error}");
            }
        });
    }
}

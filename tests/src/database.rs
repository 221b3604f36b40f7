//! A database of its own for one test, dropped when the test ends.

use tokio_postgres::NoTls;

/// A freshly created, empty database.
#[derive(Debug)]
pub struct TestDatabase {
    pub name: String,
    /// `DATABASE_URL` for the services under test.
    pub url: String,
    /// The server, without a database (`IDV_TEST_POSTGRES_URL`, or a private one).
    server: String,
}

async fn admin_client(server: &str) -> tokio_postgres::Client {
    let url = format!("{server}/postgres");
    let (client, connection) = tokio_postgres::connect(&url, NoTls)
        .await
        .expect("PostgreSQL is reachable at IDV_TEST_POSTGRES_URL");
    tokio::spawn(connection);
    client
}

impl TestDatabase {
    pub async fn new() -> Self {
        Self::new_at(&crate::postgres_url()).await
    }

    /// A fresh database on `server` (`postgres://user@host:port`, no
    /// database): the fault run's private PostgreSQL.
    pub async fn new_at(server: &str) -> Self {
        let name = format!("idv_test_{}_{}", crate::run_tag(), crate::unique_suffix());
        admin_client(server)
            .await
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create the test database");
        let url = format!("{server}/{name}");
        Self {
            name,
            url,
            server: server.to_owned(),
        }
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
        let (name, server) = (self.name.clone(), self.server.clone());
        crate::run_blocking_cleanup(async move {
            let statement = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
            if let Err(error) = admin_client(&server).await.batch_execute(&statement).await {
                eprintln!("could not drop {name}: {error}");
            }
        });
    }
}

//! `/readyz` checks the database itself: an idle worker (no event to fail
//! on) whose PostgreSQL goes away, through a proxy only this test uses,
//! says 503, and 200 again once it is back, without a restart.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step should stop the test loudly

#[path = "worker_support/mod.rs"]
mod support;

use std::net::{SocketAddr, ToSocketAddrs as _};
use std::time::Duration;

use idv_tests::broker::TestBroker;
use idv_tests::database::TestDatabase;
use idv_tests::proxy::TcpProxy;
use idv_tests::wait::eventually;
use serde_json::Value;
use support::*;
use tokio_postgres::config::Host;

const DEADLINE: Duration = Duration::from_secs(30);

/// The PostgreSQL server `url` names, read with the driver's own parser.
fn server_of(url: &str) -> SocketAddr {
    let config: tokio_postgres::Config = url.parse().expect("a PostgreSQL URL");
    let Some(Host::Tcp(host)) = config.get_hosts().first() else {
        panic!("the test database is reached over TCP");
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    (host.as_str(), port)
        .to_socket_addrs()
        .expect("the database host resolves")
        .next()
        .expect("an address")
}

/// `url` with its `host[:port]` (after any `user:password@`) replaced by `addr`.
fn through(url: &str, addr: SocketAddr) -> String {
    let start = url.find("://").expect("a URL") + 3;
    let end = url[start..].find('/').map_or(url.len(), |i| start + i);
    let host_start = url[start..end].rfind('@').map_or(start, |i| start + i + 1);
    format!("{}{addr}{}", &url[..host_start], &url[end..])
}

async fn readyz(worker: &RunningWorker) -> (u16, Value) {
    let (status, body) = worker.get("/readyz").await;
    (status, serde_json::from_str(&body).expect("JSON"))
}

#[tokio::test]
async fn an_idle_worker_is_not_ready_while_its_database_is_away() {
    let (broker, db) = (TestBroker::new().await, TestDatabase::new().await);
    migrate(&settings(Some(&broker), &db, &[])).await;
    let proxy = TcpProxy::start(server_of(&db.url)).await;
    let via_proxy = through(&db.url, proxy.addr());
    assert_ne!(
        via_proxy, db.url,
        "the worker's database goes through the proxy"
    );
    let worker = RunningWorker::start(settings(
        Some(&broker),
        &db,
        &[("DATABASE_URL", via_proxy.as_str())],
    ))
    .await;
    eventually(DEADLINE, "/readyz 200 once consuming", || async {
        readyz(&worker).await.0 == 200
    })
    .await;

    proxy.cut();
    eventually(DEADLINE, "/readyz 503 with the database away", || async {
        let (status, body) = readyz(&worker).await;
        status == 503 && body["database"] == false && body["consumers"] == 1
    })
    .await;

    proxy.restore();
    eventually(DEADLINE, "/readyz 200 with the database back", || async {
        let (status, body) = readyz(&worker).await;
        status == 200 && body["database"] == true
    })
    .await;
    assert_eq!(
        worker.metrics.infrastructure_retries.get(),
        0,
        "no batch met the outage: /readyz found it by itself"
    );
    worker.stop().await;
}

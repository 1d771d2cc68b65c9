//! The PostgreSQL store against a real server: `GRAYSCOPE_TEST_POSTGRES` names one (an admin URL,
//! such as `scripts/postgres.sh start DIR` prints); each test gets a database of its own. Without
//! it the PostgreSQL tests pass without running, except under `CI=true`, where they fail.

use std::path::Path;
use std::sync::Arc;

use super::*;
use crate::store::SharedStore;
use crate::store::tests::config;
use crate::testkit::Kit;

/// The admin URL of the test server, if there is one.
pub(crate) fn server() -> Option<String> {
    match std::env::var("GRAYSCOPE_TEST_POSTGRES") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "GRAYSCOPE_TEST_POSTGRES is required in CI (.ci/run starts a server with scripts/postgres.sh)"
            );
            eprintln!("GRAYSCOPE_TEST_POSTGRES is not set: skipping a PostgreSQL test");
            None
        }
    }
}

/// A database for `place` (created the first time it is asked for), and its URL.
pub(crate) async fn database(admin: &str, place: &Path) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    place.hash(&mut h);
    let name = format!("grayscope_test_{:016x}", h.finish());
    let (client, conn) = tokio_postgres::connect(admin, NoTls).await.unwrap();
    tokio::spawn(conn);
    let exists = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await
        .unwrap()
        .is_some();
    if !exists {
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
    }
    let base = admin.rsplit_once('/').map_or(admin, |(b, _)| b);
    format!("{base}/{name}")
}

/// The suite's opener for PostgreSQL.
pub(crate) fn opener<'a>(
    k: &'a Kit,
    place: &'a Path,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<SharedStore>> + Send + 'a>> {
    Box::pin(async move {
        let admin = server()?;
        let url = database(&admin, place).await;
        let store = PostgresStore::connect(&url, &config(), k.sym.clone())
            .await
            .unwrap();
        Some(Arc::new(store) as SharedStore)
    })
}

#[test]
fn urls_are_told_apart_from_paths_and_passwords_never_shown() {
    use crate::config::Data;
    use std::path::PathBuf;
    let data = |s: &str| Data::of(PathBuf::from(s));
    assert_eq!(
        data("postgres://u@h:5432/db"),
        Data::Postgres("postgres://u@h:5432/db".into())
    );
    assert!(matches!(data("postgresql://h/db"), Data::Postgres(_)));
    assert_eq!(
        data("./grayscope-data"),
        Data::Dir("./grayscope-data".into())
    );
    assert!(matches!(data("/var/lib/postgres"), Data::Dir(_)));
    assert_eq!(
        redact("postgres://u:secret@h:5432/db"),
        "postgres://u:***@h:5432/db"
    );
    assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_store_of_a_newer_grayscope_is_refused() {
    let Some(admin) = server() else { return };
    let place = tempfile::tempdir().unwrap();
    let url = database(&admin, place.path()).await;
    let (client, conn) = tokio_postgres::connect(&url, NoTls).await.unwrap();
    tokio::spawn(conn);
    client
        .batch_execute(
            "CREATE TABLE grayscope_schema (version BIGINT NOT NULL);
             INSERT INTO grayscope_schema VALUES (99);",
        )
        .await
        .unwrap();
    let k = Kit::new();
    let err = PostgresStore::connect(&url, &config(), k.sym.clone())
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(
        err.contains("schema version 99, newer than this grayscope knows"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_servers_and_refused_logins_are_clear_errors() {
    let k = Kit::new();
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://grayscope:secret@127.0.0.1:{port}/grayscope");
    let err = PostgresStore::connect(&url, &config(), k.sym.clone())
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(
        err.starts_with(&format!(
            "cannot open the store postgres://grayscope:***@127.0.0.1:{port}/grayscope: "
        )),
        "{err}"
    );
    assert!(!err.contains("secret"), "{err}");
    let err = PostgresStore::connect("postgres://h:notaport/db", &config(), k.sym.clone())
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("not a PostgreSQL URL"), "{err}");
    let Some(admin) = server() else { return };
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
    let err = PostgresStore::connect(
        &format!("{base}/no_such_database"),
        &config(),
        k.sym.clone(),
    )
    .await
    .err()
    .expect("refused")
    .to_string();
    assert!(err.contains("does not exist"), "{err}");
}

//! The PostgreSQL server of the tests: `GRAYSCOPE_TEST_POSTGRES` (an admin URL, as
//! `scripts/postgres.sh start DIR` prints; `.ci/run` sets it). A test that needs one passes
//! without running when it is not set, except under `CI=true`, where it fails.

/// The admin URL of the test server, if there is one.
pub fn server() -> Option<String> {
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

/// A new, empty database on the test server, and its URL.
pub async fn fresh_database(admin: &str) -> String {
    let name = format!(
        "grayscope_it_{}_{:x}",
        std::process::id(),
        rand::random::<u64>()
    );
    let (client, conn) = tokio_postgres::connect(admin, tokio_postgres::NoTls)
        .await
        .expect("the test server answers");
    tokio::spawn(conn);
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("a database is created");
    let base = admin.rsplit_once('/').map_or(admin, |(b, _)| b);
    format!("{base}/{name}")
}

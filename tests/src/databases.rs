//! Real databases for the history tests: a throw-away PostgreSQL database
//! per test, and a TCP proxy in front of it that a test can cut to make the
//! database "go away" and come back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sqlx::Connection;
use sqlx::postgres::PgConnection;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// The server the PostgreSQL tests use (`AVTOMATIKA_TEST_POSTGRES` to change).
pub fn postgres_admin_uri() -> String {
    std::env::var("AVTOMATIKA_TEST_POSTGRES").unwrap_or_else(|_| "postgresql://postgres@127.0.0.1:5432/postgres".into())
}

/// A database created for one test, dropped by [`ThrowawayDb::drop_now`].
pub struct ThrowawayDb {
    pub name: String,
}

impl ThrowawayDb {
    /// Creates `avtomatika_test_<random>`. Fails the test (never skips it)
    /// when PostgreSQL is not there.
    pub async fn create() -> Self {
        let name = format!("avtomatika_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&postgres_admin_uri())
            .await
            .expect("PostgreSQL must be reachable at 127.0.0.1:5432 (or AVTOMATIKA_TEST_POSTGRES)");
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut admin).await.expect("CREATE DATABASE");
        Self { name }
    }

    /// The database's URI on `port` (the server's, or a proxy's in front of it).
    pub fn uri_via(&self, port: u16) -> String {
        format!("postgresql://postgres@127.0.0.1:{port}/{}", self.name)
    }

    pub fn uri(&self) -> String {
        self.uri_via(5432)
    }

    /// A direct connection, for checking what the server wrote.
    pub async fn connect(&self) -> PgConnection {
        PgConnection::connect(&self.uri()).await.expect("connect to the test database")
    }

    /// Drops the database, closing whatever still uses it.
    pub async fn drop_now(self) {
        if let Ok(mut admin) = PgConnection::connect(&postgres_admin_uri()).await {
            let _ =
                sqlx::query(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)).execute(&mut admin).await;
        }
    }
}

/// A TCP proxy to `127.0.0.1:target`. While cut, it closes every open
/// connection and refuses new ones, as a database host that went away would.
pub struct CutProxy {
    pub port: u16,
    cut: Arc<AtomicBool>,
    cut_now: Arc<Notify>,
}

impl CutProxy {
    pub async fn start(target: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let cut = Arc::new(AtomicBool::new(false));
        let cut_now = Arc::new(Notify::new());
        let (flag, notify) = (cut.clone(), cut_now.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if flag.load(Ordering::SeqCst) {
                    drop(client); // refused: closed at once
                    continue;
                }
                let notify = notify.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(("127.0.0.1", target)).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        () = notify.notified() => {}
                    }
                });
            }
        });
        Self { port, cut, cut_now }
    }

    /// Closes every connection and refuses new ones until [`restore`](Self::restore).
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.cut_now.notify_waiters();
    }

    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

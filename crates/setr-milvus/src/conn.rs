//! The connection: a dedicated tokio runtime and a Milvus client that is rebuilt after the
//! server was lost. Calls are synchronous: the future runs on the runtime's own workers and
//! the calling thread waits on a channel, so any thread may call, including a tokio worker
//! or a `spawn_blocking` thread of another runtime (nothing here uses `Handle::current()`
//! or `block_on`).

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use milvus::v2::prelude::{ClientV2, ConnectConfig, RetryConfig, TelemetryConfig};

use crate::{MilvusError, Result};

/// Time to establish a connection (at start, and when reconnecting after a loss).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time for one RPC attempt; generous because building an index or loading a collection
/// is one RPC.
const RPC_TIMEOUT: Duration = Duration::from_secs(120);
/// Retries of a failed RPC inside the SDK; kept short so that a lost server turns into
/// [`MilvusError::Unavailable`] within seconds instead of minutes.
const RETRY_ATTEMPTS: u32 = 3;
const RETRY_WINDOW: Duration = Duration::from_secs(5);

pub(crate) struct Conn {
    /// Always `Some` until dropped (taken by `Drop` to shut it down without blocking).
    rt: Option<tokio::runtime::Runtime>,
    config: ConnectConfig,
    client: Mutex<Option<ClientV2>>,
}

impl Conn {
    /// Connects to `endpoint` (`http://HOST:PORT`); fails with `Unavailable` when nobody
    /// answers within the connect time-out.
    pub(crate) fn connect(endpoint: &str) -> Result<Conn> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("setr-milvus")
            .enable_all()
            .build()
            .map_err(|e| MilvusError::Milvus(format!("cannot start the Milvus runtime: {e}")))?;
        let config = ConnectConfig::new()
            .uri(endpoint)
            .connect_timeout(CONNECT_TIMEOUT)
            .rpc_timeout(RPC_TIMEOUT)
            .retry(
                RetryConfig::new()
                    .max_attempts(RETRY_ATTEMPTS)
                    .max_retry_timeout(RETRY_WINDOW),
            )
            .telemetry(TelemetryConfig::new().enabled(false));
        let conn = Conn {
            rt: Some(rt),
            config,
            client: Mutex::new(None),
        };
        conn.client()?;
        Ok(conn)
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<ClientV2>> {
        // The slot only caches a client; a panic elsewhere cannot leave it inconsistent.
        self.client.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The connected client, connecting first when there is none.
    fn client(&self) -> Result<ClientV2> {
        if let Some(c) = self.slot().as_ref() {
            return Ok(c.clone());
        }
        let config = self.config.clone();
        let fresh = self
            .wait(async move { ClientV2::new(&config).await })?
            .map_err(|e| match MilvusError::from(e) {
                MilvusError::Unavailable(m) | MilvusError::Milvus(m) => MilvusError::Unavailable(
                    format!("cannot connect to {}: {m}", self.config.get_uri()),
                ),
                other => other,
            })?;
        *self.slot() = Some(fresh.clone());
        Ok(fresh)
    }

    /// Runs `f(client)` on the runtime and waits for it. A transport failure drops the
    /// client, so that the next call reconnects.
    pub(crate) fn call<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: FnOnce(ClientV2) -> Fut,
        Fut: Future<Output = milvus::v2::error::Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        let client = self.client()?;
        match self.wait(f(client))? {
            Ok(v) => Ok(v),
            Err(e) => {
                let e = MilvusError::from(e);
                if e.is_unavailable() {
                    tracing::warn!("Milvus call failed, reconnecting on the next call: {e}");
                    *self.slot() = None;
                }
                Err(e)
            }
        }
    }

    /// Runs a future on the runtime and waits for its output on this thread.
    fn wait<T: Send + 'static>(&self, fut: impl Future<Output = T> + Send + 'static) -> Result<T> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let rt = self
            .rt
            .as_ref()
            .ok_or_else(|| MilvusError::Milvus("the Milvus runtime is shut down".into()))?;
        rt.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv().map_err(|_| {
            MilvusError::Milvus("a Milvus call panicked or its runtime stopped".into())
        })
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which panics inside another runtime's async context.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("uri", &self.config.get_uri())
            .finish()
    }
}

//! A TCP proxy a test owns, in front of the shared PostgreSQL: it forwards until told to
//! stall, then holds every byte in both directions without closing anything, as a
//! frozen server would (the shared server itself is never stopped). Resumed, it
//! forwards what it held, in order.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub struct StallingProxy {
    pub address: SocketAddr,
    stalled: watch::Sender<bool>,
    accept: JoinHandle<()>,
}

impl StallingProxy {
    pub async fn start(upstream: SocketAddr) -> StallingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let address = listener.local_addr().expect("proxy address");
        let (stalled, _) = watch::channel(false);
        let pumps = stalled.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(pump(client_read, server_write, pumps.subscribe()));
                tokio::spawn(pump(server_read, client_write, pumps.subscribe()));
            }
        });
        StallingProxy {
            address,
            stalled,
            accept,
        }
    }

    pub fn stall(&self) {
        self.stalled.send_replace(true);
    }

    pub fn resume(&self) {
        self.stalled.send_replace(false);
    }
}

impl Drop for StallingProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Copies one direction; a chunk read just as the stall begins is held until resumed.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut stalled: watch::Receiver<bool>) {
    let mut buffer = vec![0; 16 * 1024];
    loop {
        if stalled.wait_for(|stalled| !stalled).await.is_err() {
            return;
        }
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        if stalled.wait_for(|stalled| !stalled).await.is_err() {
            return;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

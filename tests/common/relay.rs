//! A loopback TCP relay that can be cut (the port closed and every relayed
//! connection dropped, as when the far side's process dies or the network
//! fails) and started again on the same port.

/// Relays every connection to 127.0.0.1:`port` on to `upstream`.
pub struct Relay {
    pub port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    /// Listen on `port` (0: any free one) and relay to `upstream`
    /// (host, port).
    pub async fn start(port: u16, upstream: (String, u16)) -> Relay {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind the relay");
        let port = listener.local_addr().expect("address").port();
        let task = tokio::spawn(async move {
            // Owned here: aborting the task drops every connection.
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                let upstream = upstream.clone();
                conns.spawn(async move {
                    if let Ok(mut out) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
            }
        });
        Relay { port, task }
    }

    /// Close the port and drop every relayed connection; the port, to
    /// start again on.
    pub async fn cut(self) -> u16 {
        self.task.abort();
        let _ = self.task.await;
        self.port
    }
}

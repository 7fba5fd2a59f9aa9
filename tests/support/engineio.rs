//! A socket.io node as far as a proxy can tell: Engine.IO v4 over long-polling and the
//! WebSocket upgrade. A handshake (`GET /socket.io/?EIO=4&transport=polling` without
//! `sid`) issues a session id of this node; a request with a `sid` this node did not
//! issue gets 400 `Session ID unknown`, as a real socket.io server answers when a
//! client lands on the wrong node.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

#[derive(Clone)]
pub struct EngineIo {
    pub addr: SocketAddr,
    pub name: &'static str,
    issued: Arc<Mutex<HashSet<String>>>,
    /// Requests for a session this node knows.
    pub served: Arc<AtomicUsize>,
    /// Requests for a session it does not know (400).
    pub refused: Arc<AtomicUsize>,
}

impl EngineIo {
    pub async fn spawn(name: &'static str) -> EngineIo {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let node = EngineIo {
            addr: l.local_addr().unwrap(),
            name,
            issued: Arc::default(),
            served: Arc::default(),
            refused: Arc::default(),
        };
        let n = node.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                tokio::spawn(n.clone().serve(s));
            }
        });
        node
    }

    /// Sessions this node issued.
    pub fn sessions(&self) -> usize {
        self.issued.lock().unwrap().len()
    }

    async fn serve(self, mut s: TcpStream) {
        let mut pending = Vec::new();
        while let Some((head, _)) = super::read_message(&mut s, &mut pending).await {
            let target = head.split(' ').nth(1).unwrap_or("").to_owned();
            let sid = target
                .split(['?', '&'])
                .find_map(|kv| kv.strip_prefix("sid="))
                .map(str::to_owned);
            let upgrade = head.to_ascii_lowercase().contains("\r\nupgrade: websocket");
            let answer = self.answer(sid, upgrade, head.starts_with("POST"));
            if s.write_all(answer.as_bytes()).await.is_err() || upgrade {
                return;
            }
        }
    }

    fn answer(&self, sid: Option<String>, upgrade: bool, post: bool) -> String {
        let ok = |body: &str| {
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=UTF-8\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
        };
        let Some(sid) = sid else {
            let mut issued = self.issued.lock().unwrap();
            let sid = format!("{}-{}", self.name, issued.len());
            issued.insert(sid.clone());
            return ok(&format!(
                "0{{\"sid\":\"{sid}\",\"upgrades\":[\"websocket\"],\"pingInterval\":25000,\"pingTimeout\":20000,\"maxPayload\":1000000}}"
            ));
        };
        if !self.issued.lock().unwrap().contains(&sid) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            let body = "{\"code\":1,\"message\":\"Session ID unknown\"}";
            return format!(
                "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
        }
        self.served.fetch_add(1, Ordering::SeqCst);
        if upgrade {
            return "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n".into();
        }
        ok(if post { "ok" } else { "6" })
    }
}

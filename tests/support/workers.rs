//! An app server shaped like gunicorn's sync workers: it handles exactly `workers`
//! requests at once, and every other request (health probes included) waits for a
//! worker, as connections wait in gunicorn's backlog. How long a request holds its
//! worker is the test's rule over its head and body. `/api/method/ping` answers
//! Frappe's `{"message":"pong"}`. `kill` closes the listener and every connection.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// How long a request holds a worker, from its head and body.
pub type Hold = fn(&str, &[u8]) -> Duration;

pub struct Workers {
    pub addr: SocketAddr,
    /// Request targets in the order they got a worker.
    pub order: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Workers {
    pub async fn spawn(workers: usize, hold: Hold) -> Workers {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let sem = Arc::new(Semaphore::new(workers));
        let seen = order.clone();
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            while let Ok((s, _)) = l.accept().await {
                conns.spawn(serve(s, sem.clone(), seen.clone(), hold));
            }
        });
        Workers { addr, order, task }
    }

    /// Requests that got a worker so far.
    pub fn started(&self) -> usize {
        self.order.lock().unwrap().len()
    }

    /// Close the listener and every open connection (the JoinSet aborts them).
    pub async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

async fn serve(mut s: TcpStream, sem: Arc<Semaphore>, order: Arc<Mutex<Vec<String>>>, hold: Hold) {
    let mut pending = Vec::new();
    while let Some((head, body)) = super::read_message(&mut s, &mut pending).await {
        let target = head.split(' ').nth(1).unwrap_or("").to_owned();
        let Ok(_worker) = sem.acquire().await else {
            return;
        };
        order.lock().unwrap().push(target.clone());
        tokio::time::sleep(hold(&head, &body)).await;
        let answer = if target.starts_with("/api/method/ping") {
            "{\"message\":\"pong\"}"
        } else {
            "ok"
        };
        let msg = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{answer}",
            answer.len()
        );
        if s.write_all(msg.as_bytes()).await.is_err() {
            return;
        }
    }
}

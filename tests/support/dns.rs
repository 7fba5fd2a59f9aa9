//! A real DNS server for the name tests: dnsmasq (Debian's `dnsmasq-base`) on a
//! loopback port, answering for `*.test` only from a hosts file this helper writes
//! (TTL 1 s unless asked; a name not in it is NXDOMAIN) and from SRV records. `set` rewrites the
//! hosts file and tells dnsmasq (SIGHUP); `stop` kills it, so queries go unanswered.

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Dns {
    pub addr: SocketAddr,
    hosts: PathBuf,
    child: Option<Child>,
}

/// `(name, ip)` lines; `srv`: `(service name, target, port, weight)`.
impl Dns {
    pub fn start(hosts: &[(&str, &str)], srv: &[(&str, &str, u16, u16)]) -> Dns {
        Dns::start_ttl(hosts, srv, 1)
    }

    /// With answers cached for `ttl` seconds.
    pub fn start_ttl(hosts: &[(&str, &str)], srv: &[(&str, &str, u16, u16)], ttl: u32) -> Dns {
        // A port free now may be taken before dnsmasq binds it: try a few.
        let mut why = String::new();
        for _ in 0..8 {
            match Dns::try_start(hosts, srv, ttl) {
                Ok(dns) => return dns,
                Err(e) => why = e,
            }
        }
        panic!("dnsmasq did not start on any of 8 ports; the last said: {why}");
    }

    /// Start dnsmasq on a free port; `Err`: what it said when it exited.
    fn try_start(
        hosts: &[(&str, &str)],
        srv: &[(&str, &str, u16, u16)],
        ttl: u32,
    ) -> Result<Dns, String> {
        let port = free_port_below_ephemeral();
        let dir = std::env::temp_dir().join(format!("sy-dns-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let hosts_file = dir.join("hosts");
        write_hosts(&hosts_file, hosts);
        let bin = ["/usr/sbin/dnsmasq", "/sbin/dnsmasq"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .unwrap_or("dnsmasq");
        let mut cmd = Command::new(bin);
        cmd.args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--listen-address=127.0.0.1",
            "--local=/test/",
            "--user=root",
            "--pid-file=",
        ])
        .arg(format!("--port={port}"))
        .arg(format!("--local-ttl={ttl}"))
        .arg(format!("--addn-hosts={}", hosts_file.display()));
        for (name, target, p, weight) in srv {
            cmd.arg(format!("--srv-host={name},{target},{p},0,{weight}"));
        }
        let err_file = dir.join("stderr");
        let err = std::fs::File::create(&err_file).unwrap();
        let child = cmd
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("dnsmasq: install Debian's dnsmasq-base (.ci/run does)");
        let mut dns = Dns {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            hosts: hosts_file,
            child: Some(child),
        };
        match dns.wait_ready() {
            true => Ok(dns),
            false => Err(std::fs::read_to_string(&err_file).unwrap_or_default()),
        }
    }

    /// Replace the hosts file and have dnsmasq read it again.
    pub fn set(&self, hosts: &[(&str, &str)]) {
        write_hosts(&self.hosts, hosts);
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .args(["-HUP", &c.id().to_string()])
                .status();
        }
    }

    /// Kill dnsmasq: queries go unanswered.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Until dnsmasq answers a query (at most 10 s); false if it exited.
    fn wait_ready(&mut self) -> bool {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut q = vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in ["ready", "test"] {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.extend_from_slice(&[0, 0, 1, 0, 1]);
        while Instant::now() < deadline {
            let _ = sock.send_to(&q, self.addr);
            let mut buf = [0u8; 512];
            if sock.recv_from(&mut buf).is_ok() {
                return true;
            }
            let exited = self
                .child
                .as_mut()
                .is_none_or(|c| !matches!(c.try_wait(), Ok(None)));
            if exited {
                self.child = None;
                return false;
            }
        }
        panic!("dnsmasq never answered on {}", self.addr);
    }
}

/// A port free for both UDP and TCP, below Linux's ephemeral range (32768 and up): the
/// tests' many short client connections (thousands in TIME_WAIT) fill that range, and
/// a port there that is free for UDP is often taken for TCP, which dnsmasq binds too.
fn free_port_below_ephemeral() -> u16 {
    for _ in 0..200 {
        let port = fastrand::u16(20_000..32_000);
        let udp = UdpSocket::bind(("127.0.0.1", port));
        let tcp = std::net::TcpListener::bind(("127.0.0.1", port));
        if udp.is_ok() && tcp.is_ok() {
            return port;
        }
    }
    panic!("no free port for dnsmasq between 20000 and 32000");
}

impl Drop for Dns {
    fn drop(&mut self) {
        self.stop();
    }
}

fn write_hosts(path: &PathBuf, hosts: &[(&str, &str)]) {
    let text: String = hosts.iter().map(|(n, ip)| format!("{ip} {n}\n")).collect();
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

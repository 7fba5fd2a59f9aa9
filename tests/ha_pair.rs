//! An HA pair as shipped in `examples/keepalived/`: two switchyard load balancers share
//! a virtual IP through keepalived (VRRP), each in a network namespace this test makes
//! (veth pairs on a bridge in a third, client namespace; no traffic leaves them). A
//! client loop sends requests on new connections to the VIP; the master's switchyard is
//! killed (SIGKILL), later the new master's is stopped (SIGTERM); each time the test
//! measures how long until the other node answers and how many requests failed.
//!
//! Needs root (network namespaces), keepalived, curl and iproute2; skipped with a
//! message otherwise.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::Config;

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const VIP: &str = "10.213.0.100";
/// Longest the whole test waits for anything (VRRP's first election takes ~3 s).
const WAIT: Duration = Duration::from_secs(15);

/// The namespaces and every process started in them; all gone on drop.
struct Pair {
    id: String,
    dir: PathBuf,
    procs: Vec<(String, Child)>,
}

impl Drop for Pair {
    fn drop(&mut self) {
        for (_, c) in &mut self.procs {
            let _ = c.kill();
            let _ = c.wait();
        }
        for n in ["c", "a", "b"] {
            let _ = ip(&["netns", "del", &self.ns(n)]);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Pair {
    fn ns(&self, n: &str) -> String {
        format!("sy{}{n}", self.id)
    }

    /// Client namespace `c` with bridge 10.213.0.1/24; nodes `a` (.2) and `b` (.3), each
    /// with `eth0` on the bridge and loopback up.
    fn build() -> Result<Pair, String> {
        let id = std::process::id().to_string();
        let dir = std::env::temp_dir().join(format!("sy-ha-pair-{id}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let pair = Pair {
            id,
            dir,
            procs: Vec::new(),
        };
        let c = pair.ns("c");
        ip(&["netns", "add", &c])?;
        ip(&["-n", &c, "link", "set", "lo", "up"])?;
        ip(&["-n", &c, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &c, "addr", "add", "10.213.0.1/24", "dev", "br0"])?;
        ip(&["-n", &c, "link", "set", "br0", "up"])?;
        for (n, addr) in [("a", "10.213.0.2/24"), ("b", "10.213.0.3/24")] {
            let ns = pair.ns(n);
            let veth = format!("v{n}");
            ip(&["netns", "add", &ns])?;
            ip(&[
                "-n", &c, "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns",
                &ns,
            ])?;
            ip(&["-n", &c, "link", "set", &veth, "master", "br0", "up"])?;
            ip(&["-n", &ns, "addr", "add", addr, "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(pair)
    }

    /// Start `cmd` inside node `n`'s namespace; output goes to a log file in `dir`.
    fn spawn(&mut self, n: &str, what: &str, cmd: &[&str]) -> u32 {
        let log = std::fs::File::create(self.dir.join(format!("{what}-{n}.log"))).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns(n)])
            .args(cmd)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        self.procs.push((format!("{what}-{n}"), child));
        pid
    }

    /// switchyard on the VIP (freebind: the VIP is not here yet), the liveness loop
    /// and keepalived from the shipped example, on node `n`.
    fn start_node(&mut self, n: &str) {
        self.start_switchyard(n);
        let live = self.dir.join(format!("live-{n}"));
        let script = format!("{ROOT}/examples/keepalived/switchyard-live.sh");
        let live_s = live.display().to_string();
        self.spawn(
            n,
            "live",
            &[
                "sh",
                &script,
                "http://127.0.0.1:9901/health/live",
                &live_s,
                "0.05",
            ],
        );
        let conf = std::fs::read_to_string(format!("{ROOT}/examples/keepalived/keepalived.conf"))
            .unwrap()
            .replace("/run/switchyard-keepalived/live", &live_s)
            .replace("192.0.2.100/24", &format!("{VIP}/24"))
            .replace(
                "router_id switchyard_lb",
                &format!("router_id switchyard_{n}"),
            );
        let conf_path = self.dir.join(format!("keepalived-{n}.conf"));
        std::fs::write(&conf_path, conf).unwrap();
        let d = |f: &str| self.dir.join(format!("{f}-{n}.pid")).display().to_string();
        let (p, r) = (d("keepalived"), d("vrrp"));
        let conf_s = conf_path.display().to_string();
        self.spawn(
            n,
            "keepalived",
            &[
                "keepalived",
                "-n",
                "-l",
                "-P",
                "-f",
                &conf_s,
                "-p",
                &p,
                "-r",
                &r,
            ],
        );
    }

    fn start_switchyard(&mut self, n: &str) {
        let root = self.dir.join(format!("www-{n}"));
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("who"), n).unwrap();
        let cfg = self.dir.join(format!("switchyard-{n}.toml"));
        let config = Config::bare()
            .listener(format!("{VIP}:8080"), "freebind = true")
            .toml(
                r#"
                [admin]
                addr = "127.0.0.1:9901"
                [log]
                access_log = "off"
                "#,
            )
            .action_route("who", &format!("root = \"{}\"", root.display()));
        std::fs::write(&cfg, config).unwrap();
        let cfg_s = cfg.display().to_string();
        self.spawn(
            n,
            "switchyard",
            &[BIN, "--config", &cfg_s, "--log-level", "warn"],
        );
    }

    /// The node holding the VIP, if one does.
    fn master(&self) -> Option<&'static str> {
        ["a", "b"].into_iter().find(|n| {
            Command::new("ip")
                .args(["-n", &self.ns(n), "-o", "addr", "show", "dev", "eth0"])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(&format!("{VIP}/")))
        })
    }

    /// Signal node `n`'s switchyard.
    fn signal_switchyard(&mut self, n: &str, sig: &str) {
        let (_, c) = self
            .procs
            .iter_mut()
            .find(|(w, _)| w == &format!("switchyard-{n}"))
            .unwrap();
        assert!(
            Command::new("kill")
                .args([sig, &c.id().to_string()])
                .status()
                .unwrap()
                .success()
        );
    }

    fn log(&self, what: &str, n: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{what}-{n}.log"))).unwrap_or_default()
    }
}

/// Why this machine cannot run the test, if it cannot.
fn unsupported() -> Option<String> {
    for tool in ["keepalived", "curl", "ip"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Some(format!("{tool} not installed"));
        }
    }
    None
}

/// One answer (or failure) of the client loop, by time.
#[derive(Debug, Clone, Copy)]
struct Outcome {
    at: Instant,
    /// The node that answered, or `None` for a failed request.
    node: Option<u8>,
}

/// A client loop in namespace `ns`: a request per new connection to the VIP, until
/// `stop` (at most `WAIT` × 2), each outcome recorded.
fn client(
    ns: String,
    log: Arc<Mutex<Vec<Outcome>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let f = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
        rustix::thread::move_into_link_name_space(
            f.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .unwrap();
        let addr: SocketAddr = format!("{VIP}:8080").parse().unwrap();
        let until = Instant::now() + WAIT * 2;
        while !stop.load(std::sync::atomic::Ordering::SeqCst) && Instant::now() < until {
            let node = request(addr);
            log.lock().unwrap().push(Outcome {
                at: Instant::now(),
                node,
            });
            if node.is_none() {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    })
}

fn request(addr: SocketAddr) -> Option<u8> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(100)).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
    s.write_all(b"GET /who HTTP/1.1\r\nHost: vip\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    (out.starts_with(b"HTTP/1.1 200")).then(|| *out.last().unwrap_or(&b'?'))
}

/// Wait (bounded) until `f` holds.
fn wait_for(what: &str, pair: &Pair, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + WAIT;
    while !f() {
        assert!(
            Instant::now() < until,
            "{what} not within {WAIT:?}\nkeepalived a:\n{}\nkeepalived b:\n{}\nswitchyard a:\n{}\nswitchyard b:\n{}",
            pair.log("keepalived", "a"),
            pair.log("keepalived", "b"),
            pair.log("switchyard", "a"),
            pair.log("switchyard", "b")
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// From `from` on, until `to` answered 20 times: the longest time without any answer
/// (what a user waits), and the requests that failed.
fn failover(log: &[Outcome], from: Instant, to: u8) -> (Duration, usize) {
    let after: Vec<&Outcome> = log.iter().filter(|o| o.at >= from).collect();
    let end = after
        .iter()
        .filter(|o| o.node == Some(to))
        .nth(19)
        .map_or(Instant::now(), |o| o.at);
    let window: Vec<&&Outcome> = after.iter().filter(|o| o.at <= end).collect();
    let mut last_ok = from;
    let mut gap = Duration::ZERO;
    for o in &window {
        if o.node.is_some() {
            gap = gap.max(o.at - last_ok);
            last_ok = o.at;
        }
    }
    let failed = window.iter().filter(|o| o.node.is_none()).count();
    (gap, failed)
}

#[test]
fn the_backup_takes_the_vip_within_a_second_when_the_master_dies_or_stops() {
    if let Some(why) = unsupported() {
        eprintln!("SKIPPED HA pair test: {why}");
        return;
    }
    let mut pair = match Pair::build() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("SKIPPED HA pair test: cannot create network namespaces ({e})");
            return;
        }
    };
    pair.start_node("a");
    pair.start_node("b");
    wait_for("a master elected", &pair, || pair.master().is_some());
    let log = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = client(pair.ns("c"), log.clone(), stop.clone());
    let answered = |n: &str| {
        log.lock()
            .unwrap()
            .iter()
            .filter(|o| o.node == Some(n.as_bytes()[0]))
            .count()
    };
    let first = pair.master().unwrap();
    wait_for("the master answers", &pair, || answered(first) > 20);

    // SIGKILL: the process is gone; the liveness loop notices, keepalived goes to FAULT.
    let killed_at = Instant::now();
    pair.signal_switchyard(first, "-KILL");
    let second = if first == "a" { "b" } else { "a" };
    wait_for("the VIP moves", &pair, || pair.master() == Some(second));
    let kill_vip = killed_at.elapsed();
    wait_for("the backup answers", &pair, || answered(second) > 20);
    let (kill_time, kill_failed) = failover(&log.lock().unwrap(), killed_at, second.as_bytes()[0]);

    // Bring the first back (it stays backup: equal priorities), then stop the second
    // gracefully: its listeners close at once, /health/live with them.
    pair.start_switchyard(first);
    let live = pair.dir.join(format!("live-{first}"));
    wait_for("the first node is live again", &pair, || {
        std::fs::read_to_string(&live).is_ok_and(|s| s.trim() == "0")
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        pair.master(),
        Some(second),
        "a recovered node must not take the VIP back"
    );
    let at = answered(first);
    let stopped_at = Instant::now();
    pair.signal_switchyard(second, "-TERM");
    wait_for("the VIP moves back", &pair, || pair.master() == Some(first));
    let term_vip = stopped_at.elapsed();
    wait_for("the first node answers again", &pair, || {
        answered(first) > at + 20
    });
    let (term_time, term_failed) = failover(&log.lock().unwrap(), stopped_at, first.as_bytes()[0]);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    load.join().unwrap();

    let total = log.lock().unwrap().len();
    eprintln!(
        "HA pair failover: SIGKILL: VIP moved after {kill_vip:?}, longest wait for an answer {kill_time:?}, {kill_failed} failed requests; SIGTERM: VIP moved after {term_vip:?}, longest wait {term_time:?}, {term_failed} failed; {total} requests in all"
    );
    assert!(
        kill_time <= Duration::from_secs(1),
        "SIGKILL failover took {kill_time:?}"
    );
    assert!(
        term_time <= Duration::from_secs(1),
        "SIGTERM failover took {term_time:?}"
    );
}

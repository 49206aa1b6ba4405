//! nats-server processes: configuration, start, readiness, kill.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use crate::http::get_json;

/// How long a node may take to report ready: generous, the machine running tests is shared.
const READY_WITHIN: Duration = Duration::from_secs(60);
/// How often readiness is asked for while waiting.
const POLL_EVERY: Duration = Duration::from_millis(50);
/// The cluster's nodes: 127.0.0.11, .12 and .13, distinct hosts on the loopback network.
const CLUSTER_FIRST_HOST: u8 = 11;
const CLUSTER_SIZE: usize = 3;
/// The single node's address.
const SINGLE_HOST: u8 = 10;
/// Fresh ports tried for a single node, or a cluster, whose ports another process took first.
const START_ATTEMPTS: usize = 3;

/// `base` and the node's client port: names tell apart the servers of tests running at once.
fn unique_name(base: &str, ports: Ports) -> String {
    format!("{base}-{}", ports.client.port())
}

/// One nats-server process with JetStream, its configuration and store kept across restarts.
#[derive(Debug)]
pub struct NatsServer {
    name: String,
    binary: PathBuf,
    config: PathBuf,
    log: PathBuf,
    client: SocketAddr,
    monitor: SocketAddr,
    child: Option<Child>,
    // Last, so the process is killed (Drop) before its directory is removed.
    _own_dir: Option<TempDir>,
}

/// The three ports of one node, on its own address.
#[derive(Debug, Clone, Copy)]
struct Ports {
    client: SocketAddr,
    monitor: SocketAddr,
    route: SocketAddr,
}

impl Ports {
    fn free_on(host: u8) -> Result<Self, crate::Error> {
        let ip = Ipv4Addr::new(127, 0, 0, host);
        // Bound all at once so the kernel hands out three distinct ports.
        let listeners =
            [TcpListener::bind((ip, 0))?, TcpListener::bind((ip, 0))?, TcpListener::bind((ip, 0))?];
        let [client, monitor, route] = [0, 1, 2].map(|i| listeners[i].local_addr());
        Ok(Self { client: client?, monitor: monitor?, route: route? })
    }
}

impl NatsServer {
    /// A single node (no cluster) on 127.0.0.10, ready for JetStream requests.
    pub fn single() -> Result<Self, crate::Error> {
        Self::single_with("")
    }

    /// [`NatsServer::single`] with `extra` appended to its configuration (a `tls` or
    /// `authorization` block).
    pub fn single_with(extra: &str) -> Result<Self, crate::Error> {
        // Ports are picked free and released before the server binds them, so a test running
        // at the same time may take one first: the server then exits, and a few fresh ports
        // are tried.
        let mut last = None;
        for _ in 0..START_ATTEMPTS {
            let dir = tempfile::Builder::new().prefix("chatroom-nats-").tempdir()?;
            let ports = Ports::free_on(SINGLE_HOST)?;
            let mut server = Self::configure(&unique_name("single", ports), dir.path(), ports, None)?;
            let mut config = fs::read_to_string(&server.config)?;
            config.push_str(extra);
            fs::write(&server.config, config)?;
            server._own_dir = Some(dir);
            match server.start() {
                Ok(()) => return Ok(server),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| "nats-server did not start".into()))
    }

    /// Writes a node's configuration; `cluster` gives the cluster's name and every route.
    fn configure(
        name: &str,
        dir: &Path,
        ports: Ports,
        cluster: Option<(&str, &[SocketAddr])>,
    ) -> Result<Self, crate::Error> {
        let node_dir = dir.join(name);
        fs::create_dir_all(node_dir.join("js"))?;
        let mut config = format!(
            "server_name: {name}\nlisten: \"{}\"\nhttp: \"{}\"\n\
             jetstream {{\n  store_dir: \"{}\"\n  sync_interval: always\n}}\n",
            ports.client,
            ports.monitor,
            node_dir.join("js").display()
        );
        if let Some((cluster_name, routes)) = cluster {
            let routes: Vec<String> = routes.iter().map(|r| format!("nats-route://{r}")).collect();
            config.push_str(&format!(
                "cluster {{\n  name: {cluster_name}\n  listen: \"{}\"\n  routes: [{}]\n}}\n",
                ports.route,
                routes.join(", ")
            ));
        }
        let config_path = node_dir.join("nats.conf");
        fs::write(&config_path, config)?;
        Ok(Self {
            name: name.to_owned(),
            binary: crate::server_binary()?,
            config: config_path,
            log: node_dir.join("nats.log"),
            client: ports.client,
            monitor: ports.monitor,
            child: None,
            _own_dir: None,
        })
    }

    /// Starts the process (again, after [`NatsServer::kill`]) and waits until it reports healthy.
    pub fn start(&mut self) -> Result<(), crate::Error> {
        self.spawn()?;
        self.wait_until(|server| server.healthy())
    }

    /// Starts the process without waiting, its output appended to its log file.
    fn spawn(&mut self) -> Result<(), crate::Error> {
        if self.child.is_some() {
            return Err(format!("nats-server {} is already running", self.name).into());
        }
        let log = File::options().create(true).append(true).open(&self.log)?;
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| {
                format!(
                    "cannot run {} ({e}); install it with `{}`",
                    self.binary.display(),
                    crate::INSTALL_COMMAND
                )
            })?;
        self.child = Some(child);
        Ok(())
    }

    /// Kills the process with SIGKILL (no clean shutdown, as a crash) and reaps it.
    pub fn kill(&mut self) -> Result<(), crate::Error> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// The server's name in the cluster (`server_name`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `nats://` URL of the client port.
    pub fn url(&self) -> String {
        format!("nats://{}", self.client)
    }

    /// The client port's address.
    pub fn client_addr(&self) -> SocketAddr {
        self.client
    }

    /// A monitoring endpoint's JSON (`/varz`, `/jsz`, ...); errors unless the answer is 200.
    pub fn monitor(&self, path: &str) -> Result<Value, crate::Error> {
        match get_json(self.monitor, path)? {
            (200, body) => Ok(body),
            (status, body) => Err(format!("{} {path} answered {status}: {body}", self.name).into()),
        }
    }

    /// The `INFO` the server sends first on every client connection.
    pub fn info(&self) -> Result<Value, crate::Error> {
        let stream = TcpStream::connect_timeout(&self.client, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut line = String::new();
        BufReader::new(stream.take(64 * 1024)).read_line(&mut line)?;
        let json = line.strip_prefix("INFO ").ok_or_else(|| format!("not an INFO line: {line}"))?;
        Ok(serde_json::from_str(json.trim_end())?)
    }

    /// The name of the JetStream meta leader this node knows of, if any.
    pub fn meta_leader(&self) -> Result<Option<String>, crate::Error> {
        let jsz = self.monitor("/jsz")?;
        Ok(jsz["meta_cluster"]["leader"].as_str().filter(|l| !l.is_empty()).map(str::to_owned))
    }

    /// Healthy, and it is this process that answers on both ports (not another test's server
    /// that took a port first).
    fn healthy(&self) -> Result<bool, crate::Error> {
        let ok = matches!(get_json(self.monitor, "/healthz"), Ok((200, body)) if body["status"] == "ok");
        let ours = |v: Result<Value, crate::Error>| v.is_ok_and(|v| v["server_name"] == self.name.as_str());
        Ok(ok && ours(self.monitor("/varz")) && ours(self.info()))
    }

    /// Polls `ready` until it holds, the process exits (error with its log) or time runs out.
    fn wait_until(
        &mut self,
        ready: impl Fn(&Self) -> Result<bool, crate::Error>,
    ) -> Result<(), crate::Error> {
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    self.child = None;
                    return Err(
                        format!("nats-server {} exited ({status}): {}", self.name, self.log_text()).into()
                    );
                }
            }
            if ready(self).unwrap_or(false) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "nats-server {} not ready within {READY_WITHIN:?}: {}",
                    self.name,
                    self.log_text()
                )
                .into());
            }
            std::thread::sleep(POLL_EVERY);
        }
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// A 3-node JetStream cluster on 127.0.0.11-13, ready once every node knows one meta leader
/// and that leader sees the other nodes as current peers.
#[derive(Debug)]
pub struct NatsCluster {
    nodes: Vec<NatsServer>,
    _dir: TempDir,
}

impl NatsCluster {
    /// Starts the three nodes and waits until they have elected a JetStream meta leader. As for
    /// a single node, a port another test took between its pick and the bind fails a node at
    /// start: the whole cluster is then started again on fresh ports, a few times.
    pub fn start() -> Result<Self, crate::Error> {
        let mut last = None;
        for _ in 0..START_ATTEMPTS {
            match Self::start_on_fresh_ports() {
                Ok(cluster) => return Ok(cluster),
                Err(e) if e.to_string().contains("address already in use") => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| "the nats-server cluster did not start".into()))
    }

    fn start_on_fresh_ports() -> Result<Self, crate::Error> {
        let dir = tempfile::Builder::new().prefix("chatroom-nats-cluster-").tempdir()?;
        let ports = (0..CLUSTER_SIZE)
            .map(|i| Ports::free_on(CLUSTER_FIRST_HOST + i as u8))
            .collect::<Result<Vec<_>, _>>()?;
        let routes: Vec<SocketAddr> = ports.iter().map(|p| p.route).collect();
        let mut nodes = Vec::with_capacity(CLUSTER_SIZE);
        for (i, node_ports) in ports.iter().enumerate() {
            nodes.push(NatsServer::configure(
                &unique_name(&format!("n{}", i + 1), *node_ports),
                dir.path(),
                *node_ports,
                Some(("chatroom-test", &routes)),
            )?);
        }
        // All processes first: a node is not healthy before it sees a quorum.
        for node in &mut nodes {
            node.spawn()?;
        }
        let mut cluster = Self { nodes, _dir: dir };
        cluster.wait_for_meta_leader()?;
        Ok(cluster)
    }

    /// Every node's client URL, comma-separated (as `chatroom-relay --nats` takes them).
    pub fn urls(&self) -> String {
        self.nodes.iter().map(NatsServer::url).collect::<Vec<_>>().join(",")
    }

    /// The nodes, `n1` to `n3`.
    pub fn nodes(&self) -> &[NatsServer] {
        &self.nodes
    }

    /// The node whose `server_name` is `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// SIGKILLs node `i`; the other two keep a quorum.
    pub fn kill(&mut self, i: usize) -> Result<(), crate::Error> {
        self.node_mut(i)?.kill()
    }

    /// Starts node `i` again on its configuration and store and waits until the running nodes
    /// agree on one meta leader.
    pub fn restart(&mut self, i: usize) -> Result<(), crate::Error> {
        self.node_mut(i)?.start()?;
        self.wait_for_meta_leader().map(drop)
    }

    /// Waits until every running node reports the same meta leader, a running node, and returns its index.
    pub fn wait_for_meta_leader(&mut self) -> Result<usize, crate::Error> {
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            for node in &mut self.nodes {
                if let Some(child) = node.child.as_mut() {
                    if let Some(status) = child.try_wait()? {
                        node.child = None;
                        return Err(format!(
                            "nats-server {} exited ({status}): {}",
                            node.name,
                            node.log_text()
                        )
                        .into());
                    }
                }
            }
            if let Some(leader) = self.agreed_leader() {
                return Ok(leader);
            }
            if Instant::now() >= deadline {
                let logs: Vec<String> =
                    self.nodes.iter().map(|n| format!("{}: {}", n.name, n.log_text())).collect();
                return Err(format!(
                    "no JetStream meta leader within {READY_WITHIN:?}:\n{}",
                    logs.join("\n")
                )
                .into());
            }
            std::thread::sleep(POLL_EVERY);
        }
    }

    /// The leader every running node names and that is itself running and healthy, if any.
    fn agreed_leader(&self) -> Option<usize> {
        let running: Vec<&NatsServer> = self.nodes.iter().filter(|n| n.child.is_some()).collect();
        let mut leaders = running
            .iter()
            .map(|n| n.healthy().ok().filter(|h| *h).and_then(|_| n.meta_leader().ok().flatten()));
        let first = leaders.next()??;
        if !leaders.all(|l| l.as_deref() == Some(first.as_str())) {
            return None;
        }
        self.index_of(&first).filter(|&i| self.nodes[i].child.is_some() && self.peers_current(i))
    }

    /// Whether the leader sees every other running node as a current, online peer: before
    /// that, placing a stream or bucket on three replicas fails with "no suitable peers". (A
    /// node's first statistics can reach the leader a moment later still; callers that place
    /// replicated streams ask again on "peer offline", as the relay does.)
    fn peers_current(&self, leader: usize) -> bool {
        let Ok(jsz) = self.nodes[leader].monitor("/jsz") else { return false };
        let Some(replicas) = jsz["meta_cluster"]["replicas"].as_array() else { return false };
        let others = self.nodes.iter().enumerate().filter(|(i, n)| *i != leader && n.child.is_some());
        others.map(|(_, n)| n).all(|n| {
            replicas.iter().any(|r| r["name"] == n.name() && r["current"] == true && r["offline"] != true)
        })
    }

    fn node_mut(&mut self, i: usize) -> Result<&mut NatsServer, crate::Error> {
        self.nodes.get_mut(i).ok_or_else(|| format!("no node {i} in a cluster of {CLUSTER_SIZE}").into())
    }
}

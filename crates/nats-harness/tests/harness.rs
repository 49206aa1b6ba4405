//! The harness against the real nats-server: what it starts is the pinned version, configured
//! as documented, ready when returned, and gone when dropped.

use std::net::TcpStream;
use std::path::{Path, PathBuf};

use chatroom_nats_harness::{server_binary_from, NatsCluster, NatsServer, ENV, INSTALL_COMMAND, VERSION};

type TestResult = Result<(), chatroom_nats_harness::Error>;

/// The durability setting every node must run with (docs/CLUSTER.md).
fn syncs_always(server: &NatsServer) -> Result<bool, chatroom_nats_harness::Error> {
    Ok(server.monitor("/varz")?["jetstream"]["config"]["sync_always"] == true)
}

#[test]
fn a_single_node_runs_the_pinned_version_with_jetstream_syncing_always() -> TestResult {
    let server = NatsServer::single()?;
    let info = server.info()?;
    assert_eq!(info["version"], VERSION, "{info}");
    assert_eq!(info["jetstream"], true, "{info}");
    assert!(syncs_always(&server)?);
    assert!(server.meta_leader()?.is_none(), "a single node has no meta cluster");
    let addr = server.client_addr();
    drop(server);
    assert!(TcpStream::connect(addr).is_err(), "the server outlived its handle");
    Ok(())
}

#[test]
fn a_cluster_elects_a_meta_leader_survives_its_kill_and_takes_it_back() -> TestResult {
    let mut cluster = NatsCluster::start()?;
    let hosts: Vec<_> = cluster.nodes().iter().map(|n| n.client_addr().ip()).collect();
    assert_eq!(hosts.len(), 3);
    assert!(hosts[0] != hosts[1] && hosts[1] != hosts[2] && hosts[0] != hosts[2], "{hosts:?}");
    for node in cluster.nodes() {
        assert_eq!(node.monitor("/jsz")?["meta_cluster"]["cluster_size"], 3);
        assert!(syncs_always(node)?, "{}", node.name());
    }
    assert_eq!(cluster.urls().split(',').count(), 3);

    let leader = cluster.wait_for_meta_leader()?;
    cluster.kill(leader)?;
    assert!(TcpStream::connect(cluster.nodes()[leader].client_addr()).is_err());
    let successor = cluster.wait_for_meta_leader()?;
    assert_ne!(successor, leader, "the killed node cannot lead");

    cluster.restart(leader)?;
    let back = cluster.nodes()[leader].meta_leader()?;
    assert_eq!(back.as_deref(), Some(cluster.nodes()[successor].name()), "the restarted node rejoined");

    let addrs: Vec<_> = cluster.nodes().iter().map(NatsServer::client_addr).collect();
    drop(cluster);
    for addr in addrs {
        assert!(TcpStream::connect(addr).is_err(), "{addr} outlived the cluster");
    }
    Ok(())
}

#[test]
fn a_missing_binary_names_the_install_command() {
    let nowhere = Path::new("/nonexistent/nats-server");
    for from_env in [None, Some(PathBuf::from("/nonexistent/from-env"))] {
        let err = server_binary_from(from_env, nowhere).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains(INSTALL_COMMAND) && err.contains(ENV), "{err}");
    }
    let here = server_binary_from(None, Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml").as_path());
    assert!(here.is_ok(), "an existing file is taken");
}

//! The JetStream backend's setup against a real nats-server: the stream and buckets are
//! created once, accepted again, refused with the setting named when made otherwise, and kept
//! in three replicas on a 3-node cluster.

use async_nats::jetstream::{self, kv, stream};
use chatroom_nats_harness::{NatsCluster, NatsServer};
use chatroom_relay::rooms::jetstream::setup::{
    connect, ensure_buckets, ensure_stream, open_stream, stream_config, until_answered, SetupError, BUCKETS,
    FAN_SUBJECTS, PRESENCE_BUCKET, STREAM,
};

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

async fn bucket_stream(
    js: &jetstream::Context,
    bucket: &str,
) -> Result<stream::Config, Box<dyn std::error::Error + Send + Sync>> {
    Ok(js.get_stream(format!("KV_{bucket}")).await?.info().await?.config.clone())
}

#[tokio::test]
async fn a_single_node_gets_the_stream_and_buckets_once_and_accepts_them_again() -> TestResult {
    let server = NatsServer::single()?;
    let js = jetstream::new(connect(&server.url()).await?);
    for _ in 0..2 {
        let config = ensure_stream(&js, 1, 1000).await?;
        assert_eq!(config.republish.map(|r| r.destination).as_deref(), Some(FAN_SUBJECTS));
        assert!(config.allow_atomic_publish && config.allow_direct);
        ensure_buckets(&js, 1).await?;
    }
    assert_eq!(js.get_stream(STREAM).await?.info().await?.state.messages, 0);
    let err = ensure_stream(&js, 1, 10).await.err().ok_or("a node with another history was accepted")?;
    assert!(matches!(err, SetupError::Mismatch { field, .. } if field.contains("history")), "{err}");
    for (bucket, ttl) in BUCKETS {
        let config = bucket_stream(&js, bucket).await?;
        assert_eq!(config.allow_message_ttl, ttl, "{bucket}");
        assert_eq!(config.subject_delete_marker_ttl.is_some(), ttl, "{bucket}");
    }
    Ok(())
}

#[tokio::test]
async fn a_stream_or_bucket_made_otherwise_is_refused_naming_the_setting() -> TestResult {
    let server = NatsServer::single()?;
    let js = jetstream::new(connect(&server.url()).await?);
    // As the relay would make it, but without the RePublish the fan-out depends on.
    let mut without_fan_out = stream_config(1, 1000);
    without_fan_out.republish = None;
    js.create_stream(without_fan_out).await?;
    let err = ensure_stream(&js, 1, 1000).await.err().ok_or("a stream without republish was accepted")?;
    assert!(matches!(err, SetupError::Mismatch { field: "republish", .. }), "{err}");
    assert!(
        err.to_string().contains("the stream CHAT") && err.to_string().contains("fix or remove"),
        "{err}"
    );

    js.create_key_value(kv::Config { bucket: PRESENCE_BUCKET.into(), ..Default::default() }).await?;
    let err = ensure_buckets(&js, 1).await.err().ok_or("a presence bucket without TTLs was accepted")?;
    assert!(matches!(err, SetupError::Mismatch { field: "allow_msg_ttl", .. }), "{err}");
    assert!(err.to_string().contains(PRESENCE_BUCKET), "{err}");
    Ok(())
}

#[tokio::test]
async fn more_replicas_than_nodes_and_no_server_are_refused_with_what_to_check() -> TestResult {
    let server = NatsServer::single()?;
    let js = jetstream::new(connect(&server.url()).await?);
    let err = ensure_stream(&js, 3, 1000).await.err().ok_or("three replicas on one node were accepted")?;
    assert!(
        matches!(err, SetupError::JetStream { .. }) && err.to_string().contains("as many nodes as replicas"),
        "{err}"
    );

    let url = server.url();
    drop(server);
    let err = connect(&url).await.err().ok_or("a stopped server was connected to")?;
    assert!(matches!(err, SetupError::Connect { .. }) && err.to_string().contains(&url), "{err}");
    Ok(())
}

#[tokio::test]
async fn the_cluster_keeps_every_message_and_key_in_three_replicas() -> TestResult {
    let cluster = NatsCluster::start()?;
    let js = jetstream::new(connect(&cluster.urls()).await?);
    assert_eq!(until_answered(|| ensure_stream(&js, 3, 1000)).await?.num_replicas, 3);
    until_answered(|| ensure_buckets(&js, 3)).await?;
    let info = until_answered(|| open_stream(&js, STREAM))
        .await?
        .info()
        .await?
        .cluster
        .clone()
        .ok_or("no cluster info")?;
    assert!(info.leader.is_some(), "{info:?}");
    assert_eq!(info.replicas.len(), 2, "two followers beside the leader: {info:?}");
    for (bucket, _) in BUCKETS {
        assert_eq!(bucket_stream(&js, bucket).await?.num_replicas, 3, "{bucket}");
    }
    Ok(())
}

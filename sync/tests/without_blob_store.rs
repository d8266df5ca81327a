//! A build without the `blob-store` feature (the phone library's): a desktop node refuses to open,
//! with an error rather than a panic, and leaves the data directory alone. Run with
//! `cargo test -p deskhand-sync --no-default-features --test without_blob_store`.
#![cfg(not(feature = "blob-store"))]

use deskhand_sync::{Node, NodeConfig, NodeError, NodeRole};

#[tokio::test]
async fn a_desktop_needs_the_blob_store() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("desk");
    let role = NodeRole::Desktop {
        name: "desk".into(),
    };
    let err = Node::open(NodeConfig::new(&data, role))
        .await
        .expect_err("a desktop cannot open without the blob store");
    assert!(matches!(err, NodeError::WrongRole(_)), "{err:?}");
    assert!(err.to_string().contains("blob-store"), "{err}");
    assert!(!data.exists(), "nothing was created");
}

//! openraft's own storage test suite (`openraft::testing`) against the Raft log store
//! on chariot-log and the partition state machine.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use chariot_log::{LogConfig, SyncPolicy};
use chariot_raft::{PartitionStateMachine, RaftLogStore, TypeConfig};
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::StorageError;

struct Builder;

fn raft_config() -> LogConfig {
    LogConfig {
        segment_bytes: 1 << 20,
        max_batch_bytes: 512 << 10,
        ..LogConfig::default()
    }
}

fn partition_config() -> LogConfig {
    LogConfig {
        sync: SyncPolicy::Never,
        segment_bytes: 1 << 20,
        max_batch_bytes: 512 << 10,
        ..LogConfig::default()
    }
}

impl StoreBuilder<TypeConfig, RaftLogStore, PartitionStateMachine, tempfile::TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, RaftLogStore, PartitionStateMachine), StorageError<TypeConfig>>
    {
        let dir = tempfile::tempdir().unwrap();
        let log = RaftLogStore::open(dir.path().join("raft"), raft_config())
            .await
            .unwrap();
        let sm = PartitionStateMachine::open(dir.path().join("sm"), partition_config())
            .await
            .unwrap();
        Ok((dir, log, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite() {
    Suite::test_all(Builder).await.unwrap();
}

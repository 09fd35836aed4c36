//! Results folders, manifest, records, resume and shards.
pub mod info;
pub mod records;

/// Returned (as an error) when a run stops on SIGINT after finishing its writes.
#[derive(Debug, thiserror::Error)]
#[error("interrupted: the images finished so far are saved; run the same command again to resume")]
pub struct Interrupted;

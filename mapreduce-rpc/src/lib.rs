//! The gRPC service of mapreduce-rs workers, package `mapreduce.v1`.
//!
//! This crate is only the wire: the generated messages, the `Worker` client (used by the
//! master) and the `Worker` server trait (implemented by `mapreduce-runtime`). It knows
//! nothing of scheduling or of the record format.
//!
//! ```
//! use mapreduce_rpc::pb;
//! let req = pb::WaitRequest { millis: 100 };
//! assert_eq!(req.millis, 100);
//! ```

/// Generated protobuf messages and tonic client/server for `mapreduce.v1`.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("mapreduce.v1");
}

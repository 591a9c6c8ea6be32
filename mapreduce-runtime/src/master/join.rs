//! Workers that join: the master's `Join` service ([`Cluster::listen`]), and the list of
//! the workers it was offered, which the driver of each job watches.
//!
//! A worker names the address it serves on; the master dials it there, with its token
//! and TLS, as any worker. The call itself is authenticated as the worker service's are
//! (the token; a client certificate when the master has a CA), so only a holder of the
//! cluster's secret can offer a worker.

use std::net::{IpAddr, SocketAddr};

use mapreduce_core::scheduler::MAX_WORKERS;
use mapreduce_rpc::pb;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use super::transport::{Scheme, WorkerEndpoint};
use crate::security::Security;

#[cfg(doc)]
use super::Cluster;

/// The longest address a worker may offer, in bytes.
pub(crate) const MAX_JOIN_ADDR: usize = 256;

/// The workers that joined, in the order they did: each job's driver adds those it has
/// not seen to the job.
pub(crate) type Joined = watch::Sender<Vec<WorkerEndpoint>>;

/// The `mapreduce.v1.Master` service.
pub(crate) struct JoinService {
    pub(crate) joined: std::sync::Arc<Joined>,
    /// How the master dials the workers that join.
    pub(crate) security: Security,
}

#[tonic::async_trait]
impl pb::master_server::Master for JoinService {
    async fn join(&self, request: Request<pb::JoinRequest>) -> Result<Response<pb::JoinResponse>, Status> {
        let peer = request.remote_addr();
        let offered = request.into_inner().addr;
        let addr = resolve(&offered, peer.map(|p| p.ip())).map_err(|why| {
            let shown: String = offered.chars().take(80).collect();
            Status::invalid_argument(format!("worker address {shown:?}: {why}"))
        })?;
        let endpoint = WorkerEndpoint::new(&addr, &self.security, Scheme::Strict)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let mut full = false;
        let added = self.joined.send_if_modified(|list| {
            if list.iter().any(|w| w.addr == endpoint.addr) {
                return false;
            }
            if list.len() >= MAX_WORKERS as usize {
                full = true;
                return false;
            }
            list.push(endpoint);
            true
        });
        if full {
            return Err(Status::resource_exhausted(format!("the master has {MAX_WORKERS} workers, its most")));
        }
        if added {
            tracing::info!(%addr, peer = ?peer, "a worker joined");
        }
        Ok(Response::new(pb::JoinResponse { addr }))
    }
}

/// The address to dial of a worker that offered `addr` from `peer`: `host:port` as given,
/// or with the caller's host for an unspecified one (`0.0.0.0:7001`, `[::]:7001`).
pub(crate) fn resolve(addr: &str, peer: Option<IpAddr>) -> Result<String, &'static str> {
    if addr.len() > MAX_JOIN_ADDR {
        return Err("longer than 256 bytes");
    }
    if let Ok(socket) = addr.parse::<SocketAddr>() {
        if socket.port() == 0 {
            return Err("port 0");
        }
        if !socket.ip().is_unspecified() {
            return Ok(socket.to_string());
        }
        let ip = peer.ok_or("an unspecified host, and the call's own address is unknown")?;
        return Ok(SocketAddr::new(ip.to_canonical(), socket.port()).to_string());
    }
    let (host, port) = addr.rsplit_once(':').ok_or("not host:port")?;
    match port.parse::<u16>() {
        Ok(0) | Err(_) => return Err("not host:port with a port in 1..=65535"),
        Ok(_) => {}
    }
    let name = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '.';
    if host.is_empty() || !host.chars().all(name) {
        return Err("not host:port (a host is a name or an IP address; no scheme, no path)");
    }
    Ok(addr.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_offered_address_is_dialled_as_given_or_at_the_callers_host() {
        let peer = Some("10.0.0.7".parse().unwrap());
        for (offered, want) in [
            ("10.0.0.2:7001", "10.0.0.2:7001"),
            ("0.0.0.0:7001", "10.0.0.7:7001"),
            ("[::]:7001", "10.0.0.7:7001"),
            ("worker-3.example:7001", "worker-3.example:7001"),
        ] {
            assert_eq!(resolve(offered, peer).as_deref(), Ok(want), "{offered}");
        }
        let mapped = Some("::ffff:10.0.0.9".parse().unwrap());
        assert_eq!(resolve("0.0.0.0:1", mapped).as_deref(), Ok("10.0.0.9:1"));
        let long = format!("{}:1", "a".repeat(300));
        for bad in
            ["", "7001", "host:", "host:0", "host:70000", "0.0.0.0:0", "http://h:1", "h/x:1", "h:1/p", "a b:1", &long]
        {
            assert!(resolve(bad, peer).is_err(), "accepted {bad:?}");
        }
        assert!(resolve("0.0.0.0:7001", None).is_err());
    }
}

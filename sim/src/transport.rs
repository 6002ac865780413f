//! How a virtual buyer's request reaches a server instance: over real HTTP to an
//! instance's port (real mode), or into an instance's router in this process with no
//! socket at all (deterministic mode, [`crate::det`]). Either way the buyer gets an
//! [`Answer`] or a [`Lost`] request, and classifies it the same way.

use std::sync::Arc;

use bytes::Bytes;

use crate::det::DetInstances;
use crate::world::Instances;

/// A request as a buyer makes it.
#[derive(Debug, Clone)]
pub struct SimRequest {
    pub method: Method,
    /// Path and query, e.g. `/api/v1/user/buy/<id>`.
    pub path: String,
    pub headers: Vec<(&'static str, String)>,
    /// Empty for the buyers' requests; JSON (with its content type among the headers) for
    /// the simulator's own setup requests.
    pub body: Bytes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Put,
    Delete,
}

/// What came back.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    /// `Idempotent-Replayed: true`.
    pub replayed: bool,
    pub body: Bytes,
}

/// Why nothing (or not all of it) came back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lost {
    /// Refused before anything was sent: the server never saw it.
    ConnectRefused,
    /// No answer within the client's timeout: the outcome is unknown.
    Timeout,
    /// The connection (or the instance) went away mid-request: unknown.
    ConnectionLost,
    /// The status came, the body did not (timeout).
    BodyTimeout(u16),
    /// The status came, the body was cut off.
    BodyLost(u16),
}

/// Where the server instances are.
#[derive(Clone)]
pub enum Transport {
    Http { client: reqwest::Client, instances: Arc<Instances> },
    InProcess(Arc<DetInstances>),
}

impl Transport {
    pub fn instance_count(&self) -> usize {
        match self {
            Self::Http { instances, .. } => instances.count(),
            Self::InProcess(instances) => instances.count(),
        }
    }

    /// Whether the instance takes requests now (a load balancer's view).
    pub fn is_up(&self, index: usize) -> bool {
        match self {
            Self::Http { instances, .. } => instances.url(index).is_some(),
            Self::InProcess(instances) => instances.is_up(index),
        }
    }

    /// Sends `request` to instance `index`.
    pub async fn send(&self, index: usize, request: SimRequest) -> Result<Answer, Lost> {
        match self {
            Self::Http { client, instances } => {
                let Some(base) = instances.url(index) else { return Err(Lost::ConnectRefused) };
                send_http(client, &base, request).await
            }
            Self::InProcess(instances) => instances.send(index, request).await,
        }
    }
}

async fn send_http(client: &reqwest::Client, base: &str, request: SimRequest) -> Result<Answer, Lost> {
    let url = format!("{base}{}", request.path);
    let mut builder = match request.method {
        Method::Get => client.get(url),
        Method::Post => client.post(url),
        Method::Put => client.put(url),
        Method::Delete => client.delete(url),
    };
    for (name, value) in request.headers {
        builder = builder.header(name, value);
    }
    if !request.body.is_empty() {
        builder = builder.body(request.body);
    }
    let response = match builder.send().await {
        Ok(response) => response,
        Err(err) if err.is_connect() => return Err(Lost::ConnectRefused),
        Err(err) if err.is_timeout() => return Err(Lost::Timeout),
        Err(_) => return Err(Lost::ConnectionLost),
    };
    let status = response.status().as_u16();
    let replayed = response.headers().get("idempotent-replayed").is_some_and(|v| v.as_bytes() == b"true");
    match response.bytes().await {
        Ok(body) => Ok(Answer { status, replayed, body }),
        Err(err) if err.is_timeout() => Err(Lost::BodyTimeout(status)),
        Err(_) => Err(Lost::BodyLost(status)),
    }
}

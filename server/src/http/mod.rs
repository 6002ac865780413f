//! HTTP plumbing shared by every domain: extractors whose rejections are problem+json,
//! the operational endpoints, and the middleware stack.

pub mod extract;
pub mod middleware;
pub mod ops;

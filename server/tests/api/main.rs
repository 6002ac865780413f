//! Integration tests: the real server over real HTTP, against real redis-server and
//! FerretDB processes. One binary, one module per domain.

mod helpers;

mod admin_writes;
mod auth;
mod broken;
mod cluster;
mod concurrency;
mod faults;
mod fuzz;
mod http_limits;
mod input;
mod ops;
mod otp_delivery;
mod products;
mod purchase;
mod scripts;
mod store_outage;

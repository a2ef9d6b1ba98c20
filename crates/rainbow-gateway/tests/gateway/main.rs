//! Integration tests: a real gateway (in-process, on a free loopback port) and
//! a real HTTP backend on loopback, covering every flow of the v1 spec.

mod harness;

mod cluster;
mod connect;
mod demo;
mod forward;
mod hostile;
mod lifecycle;
mod limits;
mod push;
mod signatures;
mod worker_crash;
mod worker_harness;
mod workers;

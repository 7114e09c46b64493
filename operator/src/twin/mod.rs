//! The `Device` twin: its controller ([`controller`]), the pure computation of its status
//! ([`status`]) and of its firmware update ([`firmware`]), and what its cache keeps of each
//! Device ([`cache`]).

pub mod cache;
pub mod controller;
pub mod firmware;
pub mod status;

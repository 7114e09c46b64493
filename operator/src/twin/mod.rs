//! The `Device` twin: its controller ([`controller`]), the pure computation of its status
//! ([`status`]) and of its firmware update ([`firmware`]), what its cache keeps of each
//! Device ([`cache`]), and the walk that reconciles every Device now and then ([`resync`]).

pub mod cache;
pub mod controller;
pub mod firmware;
pub mod resync;
pub mod status;

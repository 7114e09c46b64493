//! The `Device` twin: its controller ([`controller`]), the pure computation of its status
//! ([`status`]) and of its firmware update ([`firmware`]).

pub mod controller;
pub mod firmware;
pub mod status;

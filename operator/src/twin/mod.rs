//! The `Device` twin: its controller ([`controller`]) and the pure computation of its status
//! ([`status`]).

pub mod controller;
pub mod status;

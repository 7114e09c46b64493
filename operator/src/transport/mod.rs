//! The MQTT edge of the operator: the broker connection ([`connection`]), what arrives and how
//! it reaches the fleet index and the controllers ([`inbound`]), and what the operator
//! publishes ([`outbound`]).

pub mod connection;
pub mod inbound;
pub mod outbound;

//! Device methods: one engine for every method kind.
//!
//! - [`engine`]: the pure decision `step(request, device, now, settings) -> effects`;
//! - [`kind`]: what differs per method kind (name, parameters, how success is confirmed);
//! - [`resource`]: what a request CRD provides to run on the engine;
//! - [`controller`]: the generic controller and the executor of effects;
//! - [`reboot`]: `reboot` and the `RebootRequest` resource;
//! - [`named`]: any named method (factory reset included) and the `MethodRequest` resource.
//!
//! A new method kind is a new [`kind::MethodKind`]; a new request CRD implements
//! [`resource::RequestResource`] and gets a `MethodController` in `app.rs`.

pub mod controller;
pub mod engine;
pub mod kind;
pub mod named;
pub mod reboot;
pub mod resource;

#[cfg(test)]
mod tests;

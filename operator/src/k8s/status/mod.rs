//! Status writes within a budget: the pure queue and token bucket ([`budget`]), the one
//! writer task that patches statuses of any kind ([`writer`]), and the statuses a controller
//! computed but the cache may not show yet ([`latest`]).

pub mod budget;
pub mod latest;
pub mod writer;

pub use budget::{Offer, Priority};
pub use latest::LatestStatuses;
pub use writer::{StatusKey, StatusKind, StatusWriter, WriteBudget};

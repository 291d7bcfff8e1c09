//! Images: references, registry pulls, the content store and snapshots.
//! Knows nothing of pods.

pub mod content;
pub mod digest;
pub mod gc;
pub mod layer;
pub mod layout;
pub mod manifest;
pub mod metadata;
pub mod platform;
pub mod reference;
pub mod registry;
pub mod snapshot;
pub mod store;
pub mod unpack;

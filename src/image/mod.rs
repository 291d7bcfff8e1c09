//! Images: references, registry pulls, the content store and snapshots.
//! Knows nothing of pods.

pub mod content;
pub mod digest;
pub mod reference;
pub mod unpack;

//! Images: references, registry pulls, the content store and snapshots.
//! Knows nothing of pods.

pub mod reference;

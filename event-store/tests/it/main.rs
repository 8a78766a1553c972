//! The integration tests of `event-store`, in one binary so that the crate links once.

mod group_commit;
mod memory;
mod open_lists;
mod privileges;
mod relay;
mod snapshots;

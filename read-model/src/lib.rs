//! What the read side shares between the projections, which write the read database, and the
//! query API, which reads it.
#![forbid(unsafe_code)]

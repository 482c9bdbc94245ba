//! admin (in progress)

//! The command API (work in progress).

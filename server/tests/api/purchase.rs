//! purchase tests.

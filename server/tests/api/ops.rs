//! ops tests.

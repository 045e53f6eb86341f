//! Helpers shared by duet's end-to-end tests.

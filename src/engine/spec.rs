//! Container spec parsing and validation (see helper).

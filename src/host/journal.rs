//! Read container and unit logs from the journal files (see helper).

//! Run a command inside a running container (see helper).

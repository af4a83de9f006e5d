//! Listeners and the process lifecycle. (to be implemented)

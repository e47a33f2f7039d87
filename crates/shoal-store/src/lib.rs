//! Replicated, persistent object store: openraft drives the log, sled holds the
//! log, the vote and the state machine; revisions and watch. Must never depend on
//! shoal-api (objects are JSON values here).
#![warn(missing_docs)]

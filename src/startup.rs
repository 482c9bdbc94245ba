//! startup (in progress)

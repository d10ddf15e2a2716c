pub mod error;
pub mod job;
pub mod media;
pub mod record;
pub mod timeline;

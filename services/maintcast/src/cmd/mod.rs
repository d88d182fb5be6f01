pub mod demo;
pub mod eval;
pub mod ingest;
pub mod models;
pub mod simulate;
pub mod sweep;
pub mod train;
pub mod train_service;

//! SqliteStore integration tests: the storage contract, equivalence with `MemoryStore` through the
//! engine, crash safety (a SIGKILLed child process).

#[path = "sqlite/cache.rs"]
mod cache;
#[path = "sqlite/contract.rs"]
mod contract;
#[path = "sqlite/crash.rs"]
mod crash;
#[path = "sqlite/equivalence.rs"]
mod equivalence;
#[path = "sqlite/rewind.rs"]
mod rewind;

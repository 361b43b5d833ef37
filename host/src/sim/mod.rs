//! Wire-faithful simulators of the Dataverse Web API and the Campaign Standard API, for the demo, tests and benchmarks.

pub mod campaign;

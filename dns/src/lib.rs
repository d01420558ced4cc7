pub mod error;
pub mod hostname;
pub mod records;
pub mod zone;

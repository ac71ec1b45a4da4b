/// The warning every node can serve with no set-up: plain text in English
/// and Norwegian Bokmål. Operators replace it with their own payload file
/// (`payload.file` in `warnseed.toml`).
pub const BUILTIN_WARNING: &str = include_str!("warning.txt");

//! Rebuild when embedded files change: `sqlx::migrate!` embeds the migrations and `rust-embed`
//! embeds the built browser editor at compile time.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
    println!("cargo:rerun-if-changed=static/dist");
}

//! `statusphere-sidecar`: the project's local Jetstream (see docs/sidecar.md once it grows).
//!
//! For now it only parses its command line; the server arrives with the sidecar issue.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--version") => println!("statusphere-sidecar {}", env!("CARGO_PKG_VERSION")),
        _ => {
            eprintln!("usage: statusphere-sidecar --version");
            std::process::exit(2);
        }
    }
}

//! Names the static assets by a hash of their content (`/assets/app.<hash>.js`), so that they can
//! be cached forever and a new deploy is picked up at once.

use std::fmt::Write;

fn main() {
    let out = std::env::var("OUT_DIR").expect("OUT_DIR");
    let mut code = String::new();
    for (name, file) in [
        ("CSS", "assets/app.css"),
        ("JS", "assets/app.js"),
        ("ICON", "assets/icon.svg"),
    ] {
        println!("cargo:rerun-if-changed={file}");
        let bytes = std::fs::read(file).expect("asset");
        // FNV-1a, 64 bits: a cache key, not a security boundary.
        let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
        });
        let (stem, ext) = file
            .trim_start_matches("assets/")
            .split_once('.')
            .unwrap_or((file, ""));
        writeln!(
            code,
            "pub const {name}_PATH: &str = \"/assets/{stem}.{hash:016x}.{ext}\";"
        )
        .unwrap();
    }
    std::fs::write(format!("{out}/assets.rs"), code).expect("write assets.rs");
}

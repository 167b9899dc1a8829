//! Names the static assets by a hash of their content (`/assets/app.<hash>.js`), so that they can
//! be cached forever and a new deploy is picked up at once; and writes them under those names to
//! `public/` (not committed), the folder `wrangler/edge.toml`'s `[assets]` serves. Cloudflare's
//! asset layer answers a request for one of them before the worker runs, so an asset costs no
//! worker invocation; `public/_headers` gives them their long cache.

use std::fmt::Write;
use std::path::Path;

/// What `public/_headers` says for every asset: cached for a year (the name changes with the
/// content), and never sniffed as another type.
const HEADERS: &str = "\
/assets/*
  Cache-Control: public, max-age=31536000, immutable
  X-Content-Type-Options: nosniff
";

fn main() {
    let out = std::env::var("OUT_DIR").expect("OUT_DIR");
    let public = Path::new("public");
    let served = public.join("assets");
    std::fs::create_dir_all(&served).expect("creating public/assets");
    let mut code = String::new();
    let mut names = Vec::new();
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
        let hashed = format!("{stem}.{hash:016x}.{ext}");
        writeln!(code, "pub const {name}_PATH: &str = \"/assets/{hashed}\";").unwrap();
        let target = served.join(&hashed);
        std::fs::write(&target, &bytes).expect("writing a public asset");
        // Written again if someone removes it (a missing file is always out of date).
        println!("cargo:rerun-if-changed={}", target.display());
        names.push(hashed);
    }
    // An older build's assets go: the folder holds exactly what this build's pages name.
    for entry in std::fs::read_dir(&served)
        .expect("listing public/assets")
        .flatten()
    {
        let file = entry.file_name().to_string_lossy().into_owned();
        if !names.contains(&file) {
            std::fs::remove_file(entry.path()).expect("removing a stale asset");
        }
    }
    let headers = public.join("_headers");
    std::fs::write(&headers, HEADERS).expect("writing public/_headers");
    println!("cargo:rerun-if-changed={}", headers.display());
    std::fs::write(format!("{out}/assets.rs"), code).expect("write assets.rs");
}

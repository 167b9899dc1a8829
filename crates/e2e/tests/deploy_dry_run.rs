//! `deploy-all --dry-run`: wrangler bundles all three workers offline, and each bundle is within the
//! guard of 1 MiB gzipped each (the free plan allows 3 MiB; the targets of docs/design.md are
//! tighter, and docs/benchmarks.md reads the sizes against them).

use xtask::deploy;
use xtask::toolchain::Tools;

const GZIP_BUDGET: u64 = 1024 * 1024;

#[test]
fn dry_run_bundles_three_workers() {
    let tools = Tools::locate().expect("toolchain");
    let outdir = xtask::paths::scratch().join("test-dry-run");
    // The workers were built by `cargo xtask test` before the tests ran.
    let bundles = deploy::dry_run(&tools, &outdir, deploy::Wasm::AsBuilt).expect("dry run");
    println!("{}", deploy::report(&bundles));
    let names: Vec<&str> = bundles.iter().map(|b| b.worker.name()).collect();
    assert_eq!(names, ["broker", "listener", "edge"]);
    for bundle in &bundles {
        assert!(
            bundle
                .files
                .iter()
                .any(|f| f.extension().is_some_and(|e| e == "js")),
            "{}: no JavaScript entry in {:?}",
            bundle.worker,
            bundle.files
        );
        assert!(
            bundle.wasm_raw_bytes > 10_000,
            "{}: wasm too small to be real",
            bundle.worker
        );
        assert!(
            bundle.gzip_bytes < GZIP_BUDGET,
            "{}: {} bytes gzipped, over the 1 MiB budget",
            bundle.worker,
            bundle.gzip_bytes
        );
    }
}

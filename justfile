# The project's recipes. Each is a thin wrapper over `cargo xtask` (crates/xtask), which also works
# without `just` installed: `cargo xtask help`.

# list the recipes
default:
    @just --list

# run the whole app locally at http://127.0.0.1:8787
dev *ARGS:
    cargo xtask dev {{ARGS}}

# every check and test (what CI runs)
test:
    cargo xtask test

# migrations + broker, listener, edge to Cloudflare; `just deploy-all --dry-run` bundles offline
deploy-all *FLAGS:
    cargo xtask deploy-all {{FLAGS}}

# live logs of one deployed worker (edge, listener, broker); `--format json` for one object a line
tail WORKER *FLAGS:
    cargo xtask tail {{WORKER}} {{FLAGS}}

# benchmarks; results into docs/benchmarks.md
bench *names:
    cargo xtask bench {{names}}

# rustfmt the workspace
fmt:
    cargo xtask fmt

# rustfmt --check, clippy -D warnings (native and wasm32), wasm32 builds of the shared crates
lint:
    cargo xtask lint

# build the workers to wasm (all, or the ones named)
build *WORKERS:
    cargo xtask build {{WORKERS}}

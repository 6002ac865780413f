# Recipes for people who have `just` (https://just.systems). Each one calls a script,
# so everything here also works without `just`: see README.md.

set shell := ["bash", "-euo", "pipefail", "-c"]

# List the recipes.
default:
    @just --list

# Install redis-server and FerretDB 1.24.2 where missing.
install-deps:
    scripts/install-deps

# Run the server on local backends at http://127.0.0.1:8080 (extra flags go to `flashsale dev`).
dev *ARGS:
    scripts/dev {{ARGS}}

# Run the whole test suite (extra arguments go to `cargo test`).
test *ARGS:
    scripts/test {{ARGS}}

# Run what CI runs: formatting check, clippy with warnings as errors, the tests.
ci:
    bash .ci/run

# Format every crate.
fmt:
    cargo fmt --all

# Lint every crate and target, warnings as errors.
lint:
    cargo clippy --workspace --all-targets --locked -- -D warnings

# Rebuild one product's sale state in Redis from MongoDB (backends from FLASHSALE_REDIS_URL / FLASHSALE_MONGO_URL).
rebuild PRODUCT:
    cargo run -p flashsale -- admin rebuild --product {{PRODUCT}}

# One simulator run (release build), e.g. `just sim 1` or `just sim 1 --topology cluster`.
sim SEED *ARGS:
    cargo run --release -p flashsale-sim -- run --seed {{SEED}} {{ARGS}}

# The CI sweep of simulator seeds, in release.
sweep:
    cargo run --release -p flashsale-sim -- sweep --seeds 1..6 --buyers 1500 --duration-ms 15000

# The full `sale` load report into reports/<date>-sale/ (release build; extra flags go to `sale`).
load-sale *ARGS:
    cargo run --release -p flashsale-loadgen -- sale {{ARGS}}

# A `browse` report into reports/<date>-browse/ (release; extra flags go to `browse`).
load-browse *ARGS:
    cargo run --release -p flashsale-loadgen -- browse {{ARGS}}

# An `auth` report (a sign-up rush at production Argon2id cost) into reports/<date>-auth/.
load-auth *ARGS:
    cargo run --release -p flashsale-loadgen -- auth {{ARGS}}

# A `mixed` report (shoppers, buyers and newcomers at once) into reports/<date>-mixed/.
load-mixed *ARGS:
    cargo run --release -p flashsale-loadgen -- mixed {{ARGS}}

# What a sale's costs become as it grows, into reports/<date>-costs/ (release; extra flags go to `costs`).
load-costs *ARGS:
    cargo run --release -p flashsale-loadgen -- costs {{ARGS}}

# What the HTTP stack and the sold-out handler cost per request, in process (no sockets).
bench-http:
    cargo bench -p flashsale --bench http_stack

# A short `sale` report into target/ (what CI runs).
load-sale-quick:
    cargo run -p flashsale-loadgen -- sale --buyers 2000 --stock 100 --report-dir target/flashsale-loadgen --name quick-sale

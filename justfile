# negimg: every recipe sets up its own environment; a fresh clone needs nothing else.
set shell := ["bash", "-euo", "pipefail", "-c"]

venv := justfile_directory() / ".venv"
export VIRTUAL_ENV := venv
export PATH := venv / "bin" + ":" + env_var("PATH")
export LIBTORCH_USE_PYTORCH := "1"
export PYTHON_SYS_EXECUTABLE := venv / "bin" / "python"
export NEGIMG_PYTHON := venv / "bin" / "python"

# list recipes
default:
    @just --list

# create .venv with the pinned torch and reference libraries (no-op when up to date)
setup:
    scripts/setup.sh

# build target/release/negimg
build: setup
    cargo build --release --locked

# run an experiment file (the main job): just run experiments/winter.toml
run FILE *ARGS: build
    target/release/negimg run {{FILE}} {{ARGS}}

# the whole test suite (CPU; parity tests call diffusers/transformers from .venv; the report test needs chromium)
test: build
    scripts/install-chromium.sh
    cargo test --release --locked -- --test-threads 2

# speed benchmark: random SD1.5-shape weights; e.g. just bench --device cpu
bench *ARGS: build
    target/release/negimg bench {{ARGS}}

# formatting and clippy, warnings are errors
lint: setup
    cargo fmt --check
    cargo clippy --release --all-targets --locked -- -D warnings

# any negimg subcommand: just negimg doctor
negimg *ARGS: build
    target/release/negimg {{ARGS}}

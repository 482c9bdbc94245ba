//! The `hookgate` binary: everything lives in the library; this only hands over to the CLI.

// mimalloc instead of glibc malloc: the request path allocates many small, short-lived objects from
// several threads, and glibc's arena locking and fastbin consolidation cost a measurable share of the
// ingest CPU (see bench/RESULTS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    hookgate::cli::main()
}

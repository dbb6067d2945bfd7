#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // SIGHUP's default action ends the process; an operator's reload sent
    // while sessiongate is still starting must not. Ignored from the first
    // instruction until the reload handler takes it over.
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to SIG_IGN installs no handler
    // code and is done before any other thread exists.
    unsafe {
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
    }
    sessiongate::main()
}

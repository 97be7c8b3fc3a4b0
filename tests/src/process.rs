//! Local servers as child processes of the test binary: killed by the kernel when their parent
//! thread ends, and the shared ones started from a thread that lives as long as the process.

use std::process::Command;

/// Makes the kernel kill the child (SIGKILL) when the thread that started it ends, so no
/// server outlives a test binary that crashed or was killed.
pub fn die_with_parent(command: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe and touches only the child being exec'd.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = command;
}

/// Runs `start` (which spawns a server with [`die_with_parent`] and returns its port, keeping
/// the child alive) on a thread that never ends, so the server lives until the process exits.
pub fn start_for_process(start: impl FnOnce() -> u16 + Send + 'static) -> u16 {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        tx.send(start()).unwrap();
        loop {
            std::thread::park();
        }
    });
    rx.recv().expect("the shared server did not start")
}

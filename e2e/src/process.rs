//! Child processes that log to a file and never outlive the harness.

use std::{
    fs::File,
    io::{Read, Seek, SeekFrom},
    net::{SocketAddr, TcpListener},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

use crate::error::{Error, Result, io_context};

/// A running child process; it is killed when this value is dropped. It can be started again
/// with the same command ([`ManagedProcess::restart`]), as a supervisor would.
#[derive(Debug)]
pub struct ManagedProcess {
    name: String,
    log: PathBuf,
    child: Mutex<Child>,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, std::ffi::OsString)>,
}

impl ManagedProcess {
    /// Starts `program` with `args`, stdout and stderr appended to `log`.
    ///
    /// The child gets `PR_SET_PDEATHSIG`, so it is killed even when the test process is
    /// killed without running destructors.
    pub fn spawn(name: &str, program: &Path, args: &[String], log: &Path) -> Result<Self> {
        Self::spawn_with_env(name, program, args, log, &[])
    }

    /// Like [`ManagedProcess::spawn`], with extra environment variables.
    pub fn spawn_with_env(
        name: &str,
        program: &Path,
        args: &[String],
        log: &Path,
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Result<Self> {
        let out = File::create(log).map_err(io_context(format!("creating {}", log.display())))?;
        let env: Vec<(String, std::ffi::OsString)> =
            env.iter().map(|(k, v)| (k.to_string(), v.to_os_string())).collect();
        let child = start(name, program, args, &env, out)?;
        Ok(Self {
            name: name.to_string(),
            log: log.to_path_buf(),
            child: Mutex::new(child),
            program: program.to_path_buf(),
            args: args.to_vec(),
            env,
        })
    }

    /// Kills the child if it still runs, then starts the same command again, appending to the
    /// same log.
    pub fn restart(&self) -> Result<()> {
        let mut child = self.lock();
        let _ = child.kill();
        let _ = child.wait();
        let out = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.log)
            .map_err(io_context(format!("opening {}", self.log.display())))?;
        *child = start(&self.name, &self.program, &self.args, &self.env, out)?;
        Ok(())
    }

    /// The child's exit status, if it has exited.
    pub fn exit_status(&self) -> Option<std::process::ExitStatus> {
        self.lock().try_wait().ok().flatten()
    }

    /// Sends `signal` to the child (if it still runs).
    pub fn signal(&self, signal: Signal) -> Result<()> {
        let mut child = self.lock();
        if !matches!(child.try_wait(), Ok(None)) {
            // Exited (and now reaped): its pid may belong to someone else already.
            return Ok(());
        }
        self::signal(child.id(), signal)
            .map_err(io_context(format!("signalling {} ({signal:?})", self.name)))
    }

    /// Process id of the child.
    pub fn pid(&self) -> u32 {
        self.lock().id()
    }

    /// Path of the child's log file.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Fails when the child has exited.
    pub fn check_running(&self) -> Result<()> {
        match self.lock().try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(self.startup_error(format!("exited with {status}"))),
            Err(error) => Err(self.startup_error(format!("cannot be polled: {error}"))),
        }
    }

    /// Waits until `addr` accepts TCP connections, failing early when the child exits.
    pub async fn wait_for_port(&self, addr: SocketAddr, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            self.check_running()?;
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(self.startup_error(format!("{addr} not open after {timeout:?}")));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// An error for this process, with the end of its log attached.
    pub fn startup_error(&self, reason: String) -> Error {
        Error::Startup {
            name: self.name.clone(),
            reason,
            log: self.log.display().to_string(),
            tail: log_tail(&self.log, 4096),
        }
    }

    /// Sends SIGKILL and reaps the child.
    pub fn kill(&self) {
        let mut child = self.lock();
        let _ = child.kill();
        let _ = child.wait();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Child> {
        self.child.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for ManagedProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

fn start(
    name: &str,
    program: &Path,
    args: &[String],
    env: &[(String, std::ffi::OsString)],
    out: File,
) -> Result<Child> {
    let err = out.try_clone().map_err(io_context("duplicating a log handle"))?;
    let mut command = Command::new(program);
    command
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    die_with_parent(&mut command);
    command.spawn().map_err(io_context(format!("starting {name} ({})", program.display())))
}

/// The last `max` bytes of a file, for error messages.
pub fn log_tail(path: &Path, max: u64) -> String {
    let Ok(mut file) = File::open(path) else {
        return String::from("(no log)");
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(max)));
    let mut buf = Vec::new();
    let _ = file.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

/// A loopback TCP port that was free a moment ago.
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(io_context("finding a free port"))?;
    let port = listener.local_addr().map_err(io_context("finding a free port"))?.port();
    Ok(port)
}

/// Two different free TCP ports on 127.0.0.1 (both held while the second is found, so they
/// differ).
pub fn two_free_ports() -> Result<(u16, u16)> {
    let first = TcpListener::bind("127.0.0.1:0").map_err(io_context("finding a free port"))?;
    let second = TcpListener::bind("127.0.0.1:0").map_err(io_context("finding a free port"))?;
    let port = |l: &TcpListener| l.local_addr().map(|a| a.port());
    Ok((
        port(&first).map_err(io_context("finding a free port"))?,
        port(&second).map_err(io_context("finding a free port"))?,
    ))
}

/// A signal the harness sends to its own children.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM: stop gracefully.
    Term,
    /// SIGKILL: die at once.
    Kill,
    /// SIGSTOP: freeze.
    Stop,
    /// SIGCONT: thaw after SIGSTOP.
    Cont,
}

/// Sends `signal` to process `pid` (one of the harness's own children).
#[allow(unsafe_code)]
pub fn signal(pid: u32, signal: Signal) -> std::io::Result<()> {
    let number = match signal {
        Signal::Term => libc::SIGTERM,
        Signal::Kill => libc::SIGKILL,
        Signal::Stop => libc::SIGSTOP,
        Signal::Cont => libc::SIGCONT,
    };
    let pid = libc::pid_t::try_from(pid).map_err(std::io::Error::other)?;
    // SAFETY: kill(2) takes plain integers and touches no memory of this process.
    if unsafe { libc::kill(pid, number) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Makes the child `command` starts die with SIGKILL when the test process dies, so a killed
/// test run leaves no control plane behind.
#[allow(unsafe_code)]
fn die_with_parent(command: &mut Command) {
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

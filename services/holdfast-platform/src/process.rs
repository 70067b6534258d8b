//! A `redis-server` child process: what `holdfast dev` runs when no Redis is configured, and
//! what the testkit starts for every test.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `redis-server`; stopped (SIGTERM, then waited for) when dropped.
#[derive(Debug)]
pub struct RedisProcess {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl RedisProcess {
    /// Starts `redis-server` on a free loopback port with its files in `dir` and the extra
    /// `args` (e.g. `["--cluster-enabled", "yes"]`), and waits until it answers PING.
    pub fn start(dir: &Path, args: &[&str]) -> std::io::Result<Self> {
        Self::start_on(dir, free_port()?, args)
    }

    /// Like [`RedisProcess::start`] on a given port (a restart keeps its address).
    pub fn start_on(dir: &Path, port: u16, args: &[&str]) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut command = Command::new("redis-server");
        command
            .arg("--port")
            .arg(port.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "yes"])
            .args([
                "--protected-mode",
                "no",
                "--daemonize",
                "no",
                "--loglevel",
                "warning",
            ])
            .arg("--dir")
            .arg(dir)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        die_with_parent(&mut command);
        let child = command.spawn().map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot start redis-server ({e}); run `make deps` to install it"),
            )
        })?;
        let mut process = Self {
            child,
            port,
            dir: dir.to_path_buf(),
        };
        process.wait_ready(Duration::from_secs(10))?;
        Ok(process)
    }

    /// The process id of the `redis-server`.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn wait_ready(&mut self, limit: Duration) -> std::io::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Err(std::io::Error::other(format!(
                    "redis-server on port {} exited at start: {status}",
                    self.port
                )));
            }
            if ping(self.port).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(std::io::Error::other(format!(
                    "redis-server on port {} did not answer PING within {limit:?}",
                    self.port
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Its data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stops it: SIGTERM (so it can finish its append-only file), then waits.
    pub fn stop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(self.child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Asks the kernel for a free loopback port.
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Sends one inline PING and expects `+PONG`.
pub fn ping(port: u16) -> std::io::Result<()> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_millis(500)))?;
    stream.write_all(b"PING\r\n")?;
    let mut buf = [0u8; 7];
    stream.read_exact(&mut buf)?;
    if &buf == b"+PONG\r\n" {
        Ok(())
    } else {
        Err(std::io::Error::other("unexpected PING answer (still loading?)"))
    }
}

/// Asks the kernel to SIGTERM the child if we die first, so a crashed or SIGKILLed holdfast
/// (or test) never leaves an orphan server (redis-server, a test broker) holding its port and
/// data. The signal fires when the *thread* that spawned the child exits, so spawn from a
/// thread that lives as long as the child should (not from `spawn_blocking`).
#[allow(unsafe_code)]
pub fn die_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

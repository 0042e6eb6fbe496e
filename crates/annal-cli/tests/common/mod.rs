//! What the `annal` command's test files share: running the command, and a running
//! `annal serve` child that is stopped (by its PID) when dropped; [`kurrent`] adds the
//! official KurrentDB client's set-up for the `kurrentdb_*` files.
//! `ANNAL_TEST_SERVER_LOG=1` (with `ANNAL_LOG=debug`) shows the servers' logs.
#![allow(dead_code)] // each test file uses its own subset

pub mod docs;
pub mod kurrent;
pub mod log_check;
pub mod pg;
pub mod pg_cluster;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// Runs `annal ARGS` with `stdin` and waits for it.
pub fn annal(args: &[&str], stdin: &str) -> Output {
    annal_with(args, stdin, |_| {})
}

/// [`annal`], with the command adjusted by `configure` first (its environment, say).
pub fn annal_with(args: &[&str], stdin: &str, configure: impl FnOnce(&mut Command)) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_annal"));
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    configure(&mut cmd);
    let mut child = cmd.spawn().expect("start annal");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("annal finishes")
}

/// A running `annal serve`, killed when dropped.
pub struct Served {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl Served {
    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process (SIGKILL: no chance to clean up) and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits up to `within` for the server to exit; whether it did.
    pub fn terminate(&mut self, within: Duration) -> bool {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(sent, "could not send SIGTERM");
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `annal serve --data DATA --listen 127.0.0.1:<free port> EXTRA…` and waits
/// until it accepts connections.
pub fn serve(data: &Path, extra: &[&str]) -> Served {
    let data = data.to_str().expect("a UTF-8 path");
    let mut args = vec!["--data", data];
    args.extend(extra);
    serve_with(&args)
}

/// Starts `annal serve ARGS --listen 127.0.0.1:<free port>` (ARGS name the store) and
/// waits until it accepts connections.
pub fn serve_with(args: &[&str]) -> Served {
    serve_listening("127.0.0.1", args)
}

/// Starts `annal serve ARGS --listen HOST:<free port>` and waits until it accepts
/// connections on 127.0.0.1 (HOST: `127.0.0.1`, `localhost`, …).
pub fn serve_listening(host: &str, args: &[&str]) -> Served {
    serve_listening_env(host, args, &[])
}

/// [`serve_with`] with these environment variables set for the server.
pub fn serve_with_env(args: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> Served {
    serve_listening_env("127.0.0.1", args, env)
}

/// [`serve_with`], the server's log (stderr) written to the file `log`.
pub fn serve_logging_to(args: &[&str], log: &Path) -> Served {
    let file = std::fs::File::create(log).expect("a log file");
    serve_on("127.0.0.1", args, &[], Stdio::from(file))
}

fn serve_listening_env(host: &str, args: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> Served {
    let stderr = if std::env::var_os("ANNAL_TEST_SERVER_LOG").is_some() {
        Stdio::inherit()
    } else {
        Stdio::null()
    };
    serve_on(host, args, env, stderr)
}

fn serve_on(host: &str, args: &[&str], env: &[(&str, &std::ffi::OsStr)], stderr: Stdio) -> Served {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let child = Command::new(env!("CARGO_BIN_EXE_annal"))
        .arg("serve")
        .args(args)
        .args(["--listen", &format!("{host}:{port}")])
        .envs(env.iter().copied())
        .stderr(stderr)
        .spawn()
        .expect("start annal serve");
    let served = Served { child, port };
    let ready = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    assert!(ready, "annal serve did not start listening");
    served
}

/// A self-signed server certificate for `localhost` and 127.0.0.1 (made by `openssl`)
/// in `dir`: the paths of its certificate and key PEM files.
pub fn test_certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        // A server certificate, not a CA (rustls refuses a CA certificate as a leaf).
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl makes a test certificate");
    assert!(made.status.success(), "openssl failed: {made:?}");
    (cert, key)
}

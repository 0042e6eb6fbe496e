//! A PostgreSQL cluster of a test's own, and its streaming standby (`initdb`,
//! `pg_basebackup -R`, `pg_ctl`), for the tests that stop, restart or fail over their
//! server (faults.rs) or read from a standby (read_store.rs) without disturbing the
//! machine's server or each other.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A PostgreSQL cluster of the test's own (initdb in a temporary folder, as the
/// `postgres` user when the test runs as root), so restarting it disturbs no other test.
pub struct PrivateCluster {
    bin: PathBuf,
    /// Its data folder.
    pub data: PathBuf,
    /// Its port on 127.0.0.1.
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl PrivateCluster {
    pub fn start() -> Self {
        let cluster = Self::unstarted();
        cluster.initdb_and_start();
        cluster
    }

    fn initdb_and_start(&self) {
        let cluster = self;
        cluster.run(
            "initdb",
            &[
                "-D",
                path(&cluster.data),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        cluster.pg_ctl(&["start"]);
    }

    /// A streaming standby of this cluster (`pg_basebackup -R`), started; this cluster
    /// then waits for it at every commit (`synchronous_standby_names`).
    pub fn synchronous_standby(&self) -> Self {
        let standby = self.standby_on(Self::unstarted());
        succeed(
            self.psql(&[
                "-c",
                "ALTER SYSTEM SET synchronous_standby_names = '*'",
                "-c",
                "SELECT pg_reload_conf()",
            ]),
            "psql",
        );
        self.until_streaming("sync");
        standby
    }

    /// An asynchronous streaming standby of this cluster (`pg_basebackup -R`, hot
    /// standby, as PostgreSQL makes it by default), started on a port of `ports`, once
    /// it streams.
    pub fn standby_in(&self, ports: std::ops::Range<u16>) -> Self {
        let standby = self.standby_on(Self::unstarted_in(ports));
        self.until_streaming("async");
        standby
    }

    fn standby_on(&self, standby: Self) -> Self {
        let port = self.port.to_string();
        standby.run(
            "pg_basebackup",
            &[
                "-D",
                path(&standby.data),
                "-R",
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        standby.pg_ctl(&["start"]);
        standby
    }

    /// Waits until one standby streams from this cluster with `sync_state` `state`.
    fn until_streaming(&self, state: &str) {
        let sql = format!(
            "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming' AND sync_state = '{state}'"
        );
        for _ in 0..300 {
            let out = self.psql(&["-tAc", &sql]).output().expect("psql");
            if String::from_utf8_lossy(&out.stdout).trim() == "1" {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the standby never streamed ({state})");
    }

    /// A cluster of its own on a port of `ports` (initdb, started).
    pub fn start_in(ports: std::ops::Range<u16>) -> Self {
        let cluster = Self::unstarted_in(ports);
        cluster.initdb_and_start();
        cluster
    }

    /// One row's first column of `sql` on this cluster, as text.
    pub fn query(&self, sql: &str) -> String {
        let out = self.psql(&["-tAc", sql]).output().expect("psql");
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// [`PrivateCluster::unstarted`] on a free port of `ports` (tried from a random one).
    pub fn unstarted_in(ports: std::ops::Range<u16>) -> Self {
        let mut cluster = Self::unstarted();
        let span = ports.end - ports.start;
        let first = fastrand::u16(0..span);
        cluster.port = (0..span)
            .map(|i| ports.start + (first + i) % span)
            .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
            .unwrap_or_else(|| panic!("no free port in {ports:?}"));
        cluster
    }

    /// A cluster's folder and port, nothing in it yet.
    pub fn unstarted() -> Self {
        let bin = postgres_bin().unwrap_or_else(|| {
            panic!(
                "ANNAL_TEST_POSTGRES_URL is set but PostgreSQL's server programs (initdb, \
                 pg_ctl) are not under /usr/lib/postgresql/*/bin"
            )
        });
        let dir = tempfile::tempdir().expect("dir");
        if is_root() {
            let owned = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(dir.path())
                .status()
                .expect("chown");
            assert!(owned.success(), "chown the cluster's folder to postgres");
        }
        let data = dir.path().join("pg");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        Self {
            bin,
            data,
            port,
            _dir: dir,
        }
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Runs `pg_ctl ACTION -D DATA -w` with the cluster's port and socket folder.
    pub fn pg_ctl(&self, action: &[&str]) {
        let socket_dir = self.data.parent().expect("parent");
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            path(socket_dir)
        );
        let log = self.data.with_file_name("server.log");
        let mut args = action.to_vec();
        args.extend(["-D", path(&self.data), "-w", "-t", "60", "-o", &options]);
        args.extend(["-l", path(&log)]);
        self.run("pg_ctl", &args);
    }

    /// Runs one of PostgreSQL's programs, which must succeed.
    pub fn run(&self, program: &str, args: &[&str]) {
        succeed(self.command(program, args), program);
    }

    /// `psql` on this cluster's `postgres` database, `args` after the connection's.
    pub fn psql(&self, args: &[&str]) -> Command {
        let port = self.port.to_string();
        let mut all = vec![
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            "postgres",
            "-d",
            "postgres",
        ];
        all.extend_from_slice(args);
        self.command("psql", &all)
    }

    /// One of PostgreSQL's programs, as the `postgres` user when the test is root (the
    /// server refuses to run as root).
    pub fn command(&self, program: &str, args: &[&str]) -> Command {
        let program = self.bin.join(program);
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        cmd.args(args);
        cmd
    }
}

/// Runs `cmd` (one of PostgreSQL's programs, `program`), which must succeed.
pub fn succeed(mut cmd: Command, program: &str) {
    let out = cmd.output().expect("run a PostgreSQL program");
    assert!(
        out.status.success(),
        "{program} {:?}: {}{}",
        cmd.get_args().collect::<Vec<_>>(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let stop = ["stop", "-D", path(&self.data), "-m", "immediate"];
        let _ = self.command("pg_ctl", &stop).output();
    }
}

pub fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// The newest PostgreSQL's server programs on this machine.
pub fn postgres_bin() -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| Some(e.ok()?.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists() && bin.join("pg_ctl").exists())
        .collect();
    found.sort_by_key(|bin| {
        bin.parent()
            .and_then(|v| v.file_name()?.to_str()?.parse::<u32>().ok())
            .unwrap_or(0)
    });
    found.pop()
}

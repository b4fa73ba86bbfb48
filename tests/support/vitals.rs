//! Launcher for the binary under test, `vitals`, built by cargo for this test target.
//!
//! Runs `vitals exporter --web.listen-address=127.0.0.1:PORT --config.file=PATH [args...]`
//! in its own temp dir, with stdout and stderr captured to files there, and waits until
//! `GET /-/ready` answers 200. If the process exits first, the start panics with its logs.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

use super::server::{ServerProcess, start_on_free_port};
use super::{LOOPBACK, exited, http_client, poll_until, temp_dir, write_file};

/// Path of the `vitals` binary cargo built for these integration tests.
pub const BINARY: &str = env!("CARGO_BIN_EXE_vitals");

/// How long [`Vitals::sigterm`] waits for the process to exit.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// What to run; see [`Vitals::builder`].
pub struct VitalsBuilder {
    subcommand: String,
    config: String,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    wrapper: Vec<String>,
}

impl VitalsBuilder {
    /// Runs vitals through a wrapper command that execs it (e.g. `setpriv` with options
    /// that drop capabilities), so the process id stays the one of vitals.
    pub fn wrapper<I, S>(mut self, command: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.wrapper = command
            .into_iter()
            .map(|a| a.as_ref().to_string())
            .collect();
        self
    }

    /// The config file's YAML text (default `{}`).
    pub fn config(mut self, yaml: &str) -> Self {
        self.config = yaml.to_string();
        self
    }

    /// The subcommand (default `exporter`). The listen and config flags follow it.
    pub fn subcommand(mut self, name: &str) -> Self {
        self.subcommand = name.to_string();
        self
    }

    /// Appends one argument after the listen and config flags.
    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_string());
        self
    }

    /// Appends arguments after the listen and config flags.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_string()));
        self
    }

    /// Sets an environment variable for the process (the test's environment is inherited).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.envs.push((key.to_string(), value.to_string()));
        self
    }

    /// Starts vitals and waits until `/-/ready` answers 200; see [`Vitals::start`].
    pub fn start(self) -> Vitals {
        Vitals::launch(self)
    }

    /// Runs vitals on a free port without waiting for readiness, and waits up to `timeout`
    /// for it to exit by itself — for tests of start-up failures (bad config, bad flags).
    /// Returns the exit status and the combined logs. Panics if it is still running then.
    pub fn run_until_exit(self, timeout: Duration) -> (ExitStatus, String) {
        let mut vitals = Vitals::prepare(&self);
        vitals.port = super::start_port();
        vitals.spawn(&self);
        let status = vitals.wait_exit(timeout);
        (status, vitals.logs())
    }
}

/// A running `vitals` process, killed on drop (its temp dir with config and logs removed).
pub struct Vitals {
    port: u16,
    process: ServerProcess,
    config_path: PathBuf,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
    client: reqwest::blocking::Client,
    dir: tempfile::TempDir,
}

impl Vitals {
    /// Starts `vitals exporter` with `config_yaml` as its config file and no extra args.
    pub fn start(config_yaml: &str) -> Vitals {
        Self::builder().config(config_yaml).start()
    }

    /// A builder for the config, subcommand, extra args and environment.
    pub fn builder() -> VitalsBuilder {
        VitalsBuilder {
            subcommand: "exporter".to_string(),
            config: "{}\n".to_string(),
            args: Vec::new(),
            envs: Vec::new(),
            wrapper: Vec::new(),
        }
    }

    fn prepare(builder: &VitalsBuilder) -> Vitals {
        let dir = temp_dir("vitals");
        let config_path = dir.path().join("vitals.yml");
        write_file(&config_path, &builder.config);
        Vitals {
            port: 0,
            process: ServerProcess::default(),
            config_path,
            stdout_path: dir.path().join("stdout.log"),
            stderr_path: dir.path().join("stderr.log"),
            client: http_client(),
            dir,
        }
    }

    /// Spawns vitals on `self.port`, stdout and stderr into their logs.
    fn spawn(&mut self, builder: &VitalsBuilder) {
        let mut command = match builder.wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(BINARY);
                c
            }
            None => Command::new(BINARY),
        };
        command
            .arg(&builder.subcommand)
            .arg(format!("--web.listen-address={LOOPBACK}:{}", self.port))
            .arg(format!("--config.file={}", self.config_path.display()))
            .args(&builder.args)
            .env("RUST_BACKTRACE", "1")
            .envs(builder.envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .current_dir(self.dir.path());
        self.process
            .spawn(&mut command, &self.stdout_path, &self.stderr_path);
    }

    fn launch(builder: VitalsBuilder) -> Vitals {
        let mut vitals = Self::prepare(&builder);
        let (stderr, stdout) = (vitals.stderr_path.clone(), vitals.stdout_path.clone());
        let logs = [
            ("vitals stderr", stderr.as_path()),
            ("vitals stdout", stdout.as_path()),
        ];
        start_on_free_port("vitals", &logs, |port| {
            vitals.port = port;
            vitals.spawn(&builder);
            let url = format!("{}/-/ready", vitals.base_url());
            vitals
                .process
                .wait_http_ready(&vitals.client, &url, "vitals")
                .map_err(|why| {
                    format!(
                        "{why}\ncommand: {BINARY} {} --web.listen-address={LOOPBACK}:{port} --config.file={} {}",
                        builder.subcommand,
                        vitals.config_path.display(),
                        builder.args.join(" "),
                    )
                })
        });
        vitals
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://{LOOPBACK}:{}", self.port)
    }

    /// `127.0.0.1:PORT`, the form a Prometheus static target takes.
    pub fn host_port(&self) -> String {
        format!("{LOOPBACK}:{}", self.port)
    }

    /// The port vitals listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.id()
    }

    /// The config file passed with `--config.file`.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The temp dir holding the config and the logs; the process' working directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Replaces the config file's contents (follow with [`Vitals::sighup`] to reload).
    pub fn write_config(&self, yaml: &str) {
        write_file(&self.config_path, yaml);
    }

    fn signal(&mut self, signal: libc::c_int) {
        if let Err(status) = self.process.signal(signal) {
            panic!(
                "cannot send signal {signal}: vitals already exited with {status}\n{}",
                self.logs()
            );
        }
    }

    /// Sends SIGKILL (a crash: no shutdown code runs) and reaps the process.
    pub fn kill_hard(&mut self) {
        self.signal(libc::SIGKILL);
        let _ = self.wait_exit(SHUTDOWN_TIMEOUT);
    }

    /// Sends SIGHUP (reload the config).
    pub fn sighup(&mut self) {
        self.signal(libc::SIGHUP);
    }

    /// Sends SIGTERM and waits up to [`SHUTDOWN_TIMEOUT`] for the process to exit; returns
    /// its exit status. Panics with the logs if it does not exit in time.
    pub fn sigterm(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait_exit(SHUTDOWN_TIMEOUT)
    }

    /// Waits up to `timeout` for the process to exit and returns its status; panics with
    /// the logs if it is still running then.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let child = self.process.child_mut().expect("vitals was started");
        match poll_until(timeout, || exited(child)) {
            Some(status) => status,
            None => panic!("vitals did not exit within {timeout:?}\n{}", self.logs()),
        }
    }

    /// Whether the process has exited (reaping it if so).
    pub fn has_exited(&mut self) -> Option<ExitStatus> {
        self.process.child_mut().and_then(exited)
    }

    /// The captured stdout followed by the captured stderr.
    pub fn logs(&self) -> String {
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        format!(
            "--- vitals stdout ---\n{}--- vitals stderr ---\n{}",
            read(&self.stdout_path),
            read(&self.stderr_path)
        )
    }

    /// The captured stderr alone (where vitals logs).
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// GETs `path` (e.g. `/metrics`) and returns the status code and body.
    pub fn get(&self, path: &str) -> (u16, String) {
        let url = format!("{}{path}", self.base_url());
        let response = self
            .client
            .get(&url)
            .send()
            .unwrap_or_else(|e| panic!("GET {url} failed: {e}\n{}", self.logs()));
        let status = response.status().as_u16();
        let body = response
            .text()
            .unwrap_or_else(|e| panic!("reading the body of GET {url} failed: {e}"));
        (status, body)
    }

    /// GETs `/metrics`, asserts 200 and returns the exposition text.
    pub fn metrics(&self) -> String {
        let (status, body) = self.get("/metrics");
        assert_eq!(status, 200, "GET /metrics answered {status}: {body}");
        body
    }
}

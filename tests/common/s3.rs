//! A real S3-compatible server for the tests: `s3s-fs`, serving a folder on
//! a loopback port. `cargo xtask test` installs it and names it in
//! `MME_S3S_FS`. It can be stopped and started again on the same port, to
//! play a store that goes down in the middle of a run.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The keys the server accepts and the host signs with.
pub const ACCESS_KEY: &str = "mme-test-access";
/// See [`ACCESS_KEY`].
pub const SECRET_KEY: &str = "mme-test-secret-key";

/// A running `s3s-fs`.
pub struct S3Server {
    child: Option<Child>,
    /// The folder it serves: `<root>/<bucket>/<key>`.
    pub root: PathBuf,
    /// Its port.
    pub port: u16,
}

fn binary() -> PathBuf {
    let path = std::env::var_os("MME_S3S_FS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tools/bin/s3s-fs")
        });
    assert!(
        path.is_file(),
        "no s3s-fs at {}: run the tests with `cargo xtask test`, which installs it",
        path.display()
    );
    path
}

impl S3Server {
    /// Starts a server over a new folder `root` and waits until it listens.
    pub fn start(root: &Path) -> S3Server {
        std::fs::create_dir_all(root).expect("S3 root folder");
        let mut server = S3Server {
            child: None,
            root: root.to_path_buf(),
            port: super::free_port(),
        };
        server.resume();
        server
    }

    /// Stops the server: connections are refused until [`S3Server::resume`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and folder.
    pub fn resume(&mut self) {
        let log = std::fs::File::create(self.root.with_extension(format!("{}.log", self.port)))
            .expect("s3 log");
        let child = Command::new(binary())
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(&self.root)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("s3s-fs starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "s3s-fs did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Puts `bytes` at `s3://bucket/key` (written where the server reads it).
    pub fn put(&self, bucket: &str, key: &str, bytes: &[u8]) {
        let path = self.root.join(bucket).join(key);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("bucket folder");
        std::fs::write(path, bytes).expect("object written");
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The arguments that point `mme serve` at this server.
    pub fn serve_args(&self) -> Vec<String> {
        vec![
            "--s3-endpoint".into(),
            self.endpoint(),
            "--s3-path-style".into(),
        ]
    }

    /// The environment that gives `mme serve` its credentials and region,
    /// as the standard AWS chain reads them.
    pub fn env() -> [(&'static str, &'static str); 4] {
        [
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
            ("AWS_REGION", "us-east-1"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ]
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

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

/// A TCP proxy in front of the store that cuts downloads short: the first
/// `cuts` connections to carry more than `after` bytes back lose the rest,
/// and are closed. It plays a store that fails in the middle of a download.
pub struct CuttingProxy {
    port: u16,
    cuts: std::sync::Arc<std::sync::atomic::AtomicU32>,
    task: tokio::task::JoinHandle<()>,
}

impl CuttingProxy {
    /// Starts the proxy on a free loopback port, in front of `upstream`.
    pub async fn start(upstream: &S3Server, after: usize, cuts: u32) -> CuttingProxy {
        use std::sync::atomic::{AtomicU32, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let upstream_port = upstream.port;
        let cuts = std::sync::Arc::new(AtomicU32::new(cuts));
        let cuts_left = cuts.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let cuts_left = cuts_left.clone();
                tokio::spawn(async move {
                    let Ok(server) =
                        tokio::net::TcpStream::connect(("127.0.0.1", upstream_port)).await
                    else {
                        return;
                    };
                    let (mut client_read, mut client_write) = client.into_split();
                    let (mut server_read, mut server_write) = server.into_split();
                    let upload = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
                    });
                    let mut sent = 0usize;
                    let mut buffer = vec![0u8; 16 * 1024];
                    while let Ok(read) = server_read.read(&mut buffer).await {
                        if read == 0 {
                            break;
                        }
                        let cut = sent + read > after
                            && cuts_left
                                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                                    n.checked_sub(1)
                                })
                                .is_ok();
                        if cut {
                            let _ = client_write
                                .write_all(&buffer[..after - sent.min(after)])
                                .await;
                            break;
                        }
                        if client_write.write_all(&buffer[..read]).await.is_err() {
                            break;
                        }
                        sent += read;
                    }
                    upload.abort();
                });
            }
        });
        CuttingProxy { port, cuts, task }
    }

    /// The endpoint to give `mme serve` instead of the store's.
    pub fn serve_args(&self) -> Vec<String> {
        vec![
            "--s3-endpoint".into(),
            format!("http://127.0.0.1:{}", self.port),
            "--s3-path-style".into(),
        ]
    }

    /// Cuts the next `cuts` long responses.
    pub fn set_cuts(&self, cuts: u32) {
        self.cuts.store(cuts, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for CuttingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

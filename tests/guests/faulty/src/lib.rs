//! A guest that misbehaves on command, so the tests can show that each kind
//! of misbehaviour is contained. The body is a JSON string naming what to do.
//! `option.load_ms=N` makes `load` compute for N milliseconds, and
//! `option.panic_load=true` makes it panic.
//! Two commands serve the work-load tests: `work:MS:ID` computes for MS
//! milliseconds and answers ID; `batch` answers the size of its batch.
//! Two wait in the host instead of computing, where no epoch check can stop
//! them: `sleep:MS` sleeps (`std::thread::sleep`), and `poll:MS` waits on a
//! WASI clock with `wasi:io/poll.poll`; `option.sleep_load_ms=N` makes
//! `load` sleep. `option.hold_mb=N` makes `load` write N MiB that the
//! instance keeps for its life, so that it really holds that memory.

use mme_guest::{Config, Error, Model, Request, Response, export_model};

/// The model's state: whether `load` saw `option.greeting`, and the
/// memory `option.hold_mb` asked it to keep.
struct Faulty {
    greeting: Option<String>,
    _held: Vec<u8>,
}

impl Model for Faulty {
    fn load(config: &Config) -> Result<Self, Error> {
        if config.get("fail_load") == Some("true") {
            return Err(Error::internal("load refused on purpose"));
        }
        if config.get("panic_load") == Some("true") {
            panic!("load panicked on purpose");
        }
        if let Some(ms) = config.get("load_ms").and_then(|ms| ms.parse().ok()) {
            compute_for(std::time::Duration::from_millis(ms));
        }
        if let Some(ms) = config.get("sleep_load_ms").and_then(|ms| ms.parse().ok()) {
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
        let held_mb: usize = config
            .get("hold_mb")
            .and_then(|mb| mb.parse().ok())
            .unwrap_or(0);
        // Written, not only allocated: a zeroed allocation may stay untouched.
        let held = vec![1u8; held_mb << 20];
        Ok(Faulty {
            greeting: config.get("greeting").map(str::to_string),
            _held: std::hint::black_box(held),
        })
    }

    fn predict_batch(&self, batch: Vec<Request>) -> Vec<Result<Response, Error>> {
        let size = batch.len();
        batch
            .into_iter()
            .map(|request| match request.json::<String>() {
                Ok(command) if command == "batch" => Response::json(&size),
                _ => self.predict(request),
            })
            .collect()
    }

    fn predict(&self, request: Request) -> Result<Response, Error> {
        let command: String = request.json()?;
        if let Some(rest) = command.strip_prefix("work:") {
            let (ms, id) = rest.split_once(':').unwrap_or((rest, ""));
            let ms: u64 = ms
                .parse()
                .map_err(|_| Error::invalid_input("work:MS:ID needs a number of milliseconds"))?;
            compute_for(std::time::Duration::from_millis(ms));
            return Response::json(&id);
        }
        if let Some(ms) = command.strip_prefix("sleep:") {
            std::thread::sleep(std::time::Duration::from_millis(milliseconds(ms)?));
            return Response::json("slept");
        }
        if let Some(ms) = command.strip_prefix("poll:") {
            let nanos = milliseconds(ms)?.saturating_mul(1_000_000);
            let clock = wasip2::clocks::monotonic_clock::subscribe_duration(nanos);
            let ready = wasip2::io::poll::poll(&[&clock]);
            return Response::json(&ready);
        }
        match command.as_str() {
            "ok" => Response::json(&self.greeting.as_deref().unwrap_or("ok")),
            "attributes" => Ok(Response::json(&request.attributes)?
                .with_attributes(format!("seen={}", request.attributes))),
            "panic" => panic!("the model panicked on purpose"),
            "loop" => spin(),
            "alloc" => {
                let huge = vec![1u8; 1 << 30];
                Response::json(&huge.len())
            }
            "grow" => {
                let mut chunks = Vec::new();
                loop {
                    chunks.push(std::hint::black_box(vec![1u8; 1 << 20]));
                }
            }
            "recurse" => Response::json(&recurse(std::hint::black_box(1))),
            "big" => Ok(Response::new(
                "application/octet-stream",
                vec![b'x'; 16 << 20],
            )),
            "print" => {
                println!("hello from the guest");
                eprintln!("a warning from the guest");
                Response::json("printed")
            }
            "flood" => {
                // 16 MiB of output, far past the log cap, on both streams.
                let line = "x".repeat(1023);
                for _ in 0..8 * 1024 {
                    println!("{line}");
                    eprintln!("{line}");
                }
                Response::json("flooded")
            }
            "sandbox" => Response::json(&probe_sandbox()),
            other => Err(Error::invalid_input(format!("unknown command {other:?}"))),
        }
    }
}

fn milliseconds(text: &str) -> Result<u64, Error> {
    text.parse()
        .map_err(|_| Error::invalid_input("sleep:MS and poll:MS need a number of milliseconds"))
}

/// Keeps the core busy for `duration`, as inference does.
fn compute_for(duration: std::time::Duration) {
    let started = std::time::Instant::now();
    let mut n: u64 = 0;
    while started.elapsed() < duration {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

fn spin() -> ! {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

#[allow(unconditional_recursion)] // Overflowing the stack is the point.
fn recurse(depth: u64) -> u64 {
    // No locals in linear memory: every frame lands on the wasm stack,
    // so this exhausts the host's `max_wasm_stack`, not the guest's heap.
    std::hint::black_box(recurse(std::hint::black_box(depth) + 1)) + 1
}

/// What the guest can reach; every entry should be false but `model_readable`.
fn probe_sandbox() -> serde_json::Value {
    serde_json::json!({
        "env_vars": std::env::vars().count(),
        "model_readable": std::fs::read("/model/serving.properties").is_ok(),
        "model_writable": std::fs::write("/model/planted", b"x").is_ok(),
        "etc_readable": std::fs::read("/etc/passwd").is_ok(),
        "root_listable": std::fs::read_dir("/").is_ok(),
        "escape_readable": std::fs::read("/model/../../../../etc/passwd").is_ok(),
        "tmp_writable": std::fs::write("/tmp/planted", b"x").is_ok(),
        "network": std::net::TcpStream::connect("127.0.0.1:80").is_ok(),
    })
}

export_model!(Faulty);

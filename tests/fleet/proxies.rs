//! A fleet of three replicas behind nginx and behind HAProxy, started by
//! `deploy/local/cluster.sh` over an S3 store, through its whole life.

use super::*;

/// A fleet on loopback, started by `deploy/local/cluster.sh` over an S3 store.
struct Fleet {
    script: Child,
    /// The proxy's `http://127.0.0.1:PORT`.
    proxy: String,
    replicas: Vec<Replica>,
    /// Where the script keeps its logs and the replicas their caches.
    dir: PathBuf,
}

/// One replica, as the script printed it.
#[derive(Debug, Clone)]
struct Replica {
    url: String,
    pid: u32,
}

impl Fleet {
    /// Three replicas behind `proxy` (`nginx` or `haproxy`), over `s3`.
    async fn start(proxy: &str, s3: &S3Server, dir: &Path) -> Fleet {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/local/cluster.sh");
        let mut child = Command::new("bash")
            .arg(script)
            .arg(REPLICAS.to_string())
            .arg(STORE)
            .args(s3.serve_args())
            .envs(S3Server::env())
            .env("MME", env!("CARGO_BIN_EXE_mme"))
            .env("PROXY", proxy)
            .env("CLUSTER_DIR", dir)
            .env("MME_DRAIN_DELAY", "2s")
            .env("MME_ONNX_PRECOMPILE", "false")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.with_extension("log")).unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let lines = tokio::task::spawn_blocking(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let line = line.unwrap();
                if line == "ready" {
                    return lines;
                }
                lines.push(line);
            }
            lines
        });
        let lines = tokio::time::timeout(Duration::from_secs(120), lines)
            .await
            .expect("the fleet is ready within 120 s")
            .unwrap();
        let log = std::fs::read_to_string(dir.with_extension("log")).unwrap_or_default();
        // The contract: `proxy URL`, then `replica I URL pid PID` for each.
        let proxy = lines
            .first()
            .and_then(|line| line.strip_prefix("proxy "))
            .unwrap_or_else(|| panic!("no proxy line: {lines:?}\n{log}"))
            .to_string();
        let replicas: Vec<Replica> = lines[1..]
            .iter()
            .enumerate()
            .map(|(index, line)| {
                let words: Vec<&str> = line.split(' ').collect();
                assert_eq!(words.len(), 5, "{line}");
                assert_eq!(words[0..2], ["replica", &(index + 1).to_string()], "{line}");
                assert_eq!(words[3], "pid", "{line}");
                Replica {
                    url: words[2].to_string(),
                    pid: words[4].parse().unwrap(),
                }
            })
            .collect();
        assert_eq!(replicas.len(), REPLICAS, "{lines:?}");
        Fleet {
            script: child,
            proxy,
            replicas,
            dir: dir.to_path_buf(),
        }
    }

    /// Starts replica `index` (from 0) again, as the script started it, on
    /// the same port, and waits until it answers.
    async fn restart(&mut self, index: usize, s3: &S3Server) -> Child {
        let address = self.replicas[index]
            .url
            .trim_start_matches("http://")
            .to_string();
        let child = Command::new(env!("CARGO_BIN_EXE_mme"))
            .args(["serve", "--model-store", STORE, "--bind", &address])
            .args(["--grpc-bind", "off", "--drain-delay", "2s"])
            .arg("--cache-dir")
            .arg(self.dir.join(format!("replica-{}", index + 1)))
            .args(s3.serve_args())
            .envs(S3Server::env())
            .env("MME_ONNX_PRECOMPILE", "false")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.replicas[index].pid = child.id();
        let deadline = Instant::now() + Duration::from_secs(30);
        while reqwest::get(format!("{}/ping", self.replicas[index].url))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "the replica did not come back");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        child
    }

    /// SIGTERM to the script: everything it started stops, and it exits 0.
    fn stop(mut self) -> bool {
        send_signal("TERM", self.script.id());
        exited_zero_within(&mut self.script, Duration::from_secs(60))
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if let Ok(None) = self.script.try_wait() {
            send_signal("TERM", self.script.id());
            let _ = self.script.wait();
        }
    }
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

const REPLICAS: usize = 3;
const MODELS: usize = 100;
const STORE: &str = "s3://models/prod";
/// No request may take longer than this (the models' own timeout is shorter).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(15);

/// An S3 store of `MODELS` copies of the example.
fn store(root: &Path) -> S3Server {
    let s3 = S3Server::start(root);
    let package = std::fs::read(guest("linear-regression")).unwrap();
    for index in 0..MODELS {
        s3.put("models", &format!("prod/m{index}.tar.gz"), &package);
    }
    // Outside the store's prefix: only a registration loads it.
    s3.put("models", "extra.tar.gz", &package);
    s3
}

/// What one request of a load saw.
#[derive(Debug)]
struct Outcome {
    model: usize,
    sent: Instant,
    took: Duration,
    /// The status, or the client's error.
    answer: Result<u16, String>,
}

/// Requests over all the models through `url` from `clients` clients until
/// `until`, each with its own kept-alive connection, as a load balancer's
/// clients do.
async fn load(url: &str, clients: usize, until: Instant) -> Vec<Outcome> {
    let mut tasks = Vec::new();
    for client_index in 0..clients {
        let url = url.to_string();
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .timeout(CLIENT_TIMEOUT)
                .build()
                .unwrap();
            let mut outcomes = Vec::new();
            let mut next = client_index;
            while Instant::now() < until {
                let model = next % MODELS;
                next += clients;
                let sent = Instant::now();
                let answer = client
                    .post(format!("{url}/predictions/m{model}"))
                    .header("content-type", "application/json")
                    .body("[[0.5]]")
                    .send()
                    .await;
                let answer = match answer {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        let _ = response.bytes().await;
                        Ok(status)
                    }
                    Err(error) => Err(format!("{error:?}")),
                };
                outcomes.push(Outcome {
                    model,
                    sent,
                    took: sent.elapsed(),
                    answer,
                });
            }
            outcomes
        }));
    }
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.extend(task.await.unwrap());
    }
    outcomes
}

fn failures(outcomes: &[Outcome]) -> Vec<&Outcome> {
    outcomes.iter().filter(|o| o.answer != Ok(200)).collect()
}

/// Requests answered 200 per model by the replica at `url`, from its `/metrics`.
async fn served_by(url: &str) -> Vec<f64> {
    let text = reqwest::get(format!("{url}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    (0..MODELS)
        .map(|index| {
            metric_in(
                &text,
                &format!("mme_requests_total{{model=\"m{index}\",version=\"1\",status=\"200\"}}"),
            )
        })
        .collect()
}

/// Which replicas (by index) served each model between two scrapes.
fn placement(before: &[Vec<f64>], after: &[Vec<f64>]) -> Vec<Vec<usize>> {
    (0..MODELS)
        .map(|model| {
            (0..before.len())
                .filter(|&replica| after[replica][model] > before[replica][model])
                .collect()
        })
        .collect()
}

async fn scrape(replicas: &[Replica]) -> Vec<Vec<f64>> {
    let mut all = Vec::new();
    for replica in replicas {
        all.push(served_by(&replica.url).await);
    }
    all
}

/// Requests for `model` that the replica at `url` answered, whatever the status.
async fn requests_for(url: &str, model: &str) -> f64 {
    let text = reqwest::get(format!("{url}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let prefix = format!("mme_requests_total{{model=\"{model}\",");
    text.lines()
        .filter(|line| line.starts_with(&prefix))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// Each way of naming a model (the path of every protocol, SageMaker's
/// query and header, a registration's `model_name`) reaches the replica
/// that `/predictions` reaches, as `placed` found it.
async fn every_route_reaches_the_models_replica(fleet: &Fleet, placed: &[Vec<usize>]) {
    let client = reqwest::Client::new();
    let v2 = r#"{"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [0.5]}]}"#;
    for (model, owners) in placed.iter().enumerate().take(6) {
        let name = format!("m{model}");
        let owner = owners[0];
        let forms = [
            (format!("/v2/models/{name}/infer"), None, v2),
            (format!("/models/{name}/invoke"), None, "[[0.5]]"),
            (format!("/invocations?model_name={name}"), None, "[[0.5]]"),
            ("/invocations".to_string(), Some(name.as_str()), "[[0.5]]"),
        ];
        for (path, header, body) in forms {
            let before = requests_for(&fleet.replicas[owner].url, &name).await;
            let mut request = client
                .post(format!("{}{path}", fleet.proxy))
                .header("content-type", "application/json")
                .body(body);
            if let Some(target) = header {
                request = request.header("X-Amzn-SageMaker-Target-Model", target);
            }
            let status = request.send().await.unwrap().status();
            // `invoke` answers 404 on any replica but the one that loaded it.
            assert_eq!(status, 200, "{path} {header:?}");
            let after = requests_for(&fleet.replicas[owner].url, &name).await;
            assert_eq!(
                after,
                before + 1.0,
                "{path} {header:?} missed replica {owner}"
            );
        }
    }
    // A registration goes where the model's requests will go.
    let answer = client
        .post(format!(
            "{}/models?model_name=extra&url=s3://models/extra.tar.gz",
            fleet.proxy
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200, "{:?}", answer.text().await);
    let holders: Vec<usize> = {
        let mut holders = Vec::new();
        for (index, replica) in fleet.replicas.iter().enumerate() {
            if get_url(&format!("{}/models/extra", replica.url)).await == 200 {
                holders.push(index);
            }
        }
        holders
    };
    assert_eq!(holders.len(), 1, "{holders:?}");
    let answer = client
        .post(format!("{}/models/extra/invoke", fleet.proxy))
        .header("content-type", "application/json")
        .body("[[0.5]]")
        .send()
        .await
        .unwrap();
    assert_eq!(
        answer.status(),
        200,
        "the registered model's requests reach it"
    );
}

async fn get_url(url: &str) -> u16 {
    reqwest::get(url).await.unwrap().status().as_u16()
}

/// The whole life of a fleet behind `proxy`: affinity, a drain, a replica
/// that comes back, one that dies, and a clean stop.
async fn fleet_behind(proxy: &str) {
    let work = tempfile::tempdir().unwrap();
    let s3 = store(&work.path().join("s3"));
    let mut fleet = Fleet::start(proxy, &s3, &work.path().join("fleet")).await;

    // Affinity: each model on exactly one replica, the models over all three.
    let before = scrape(&fleet.replicas).await;
    let warm = load(&fleet.proxy, 4, Instant::now() + Duration::from_secs(4)).await;
    assert!(failures(&warm).is_empty(), "{:?}", failures(&warm));
    let after = scrape(&fleet.replicas).await;
    let placed = placement(&before, &after);
    for (model, replicas) in placed.iter().enumerate() {
        assert_eq!(
            replicas.len(),
            1,
            "m{model} was served by replicas {replicas:?}"
        );
    }
    for replica in 0..REPLICAS {
        let held = placed.iter().filter(|r| r[0] == replica).count();
        assert!(held > 0, "replica {replica} holds no model: {placed:?}");
    }

    // Every route that names a model reaches the model's replica.
    every_route_reaches_the_models_replica(&fleet, &placed).await;

    // A drain: SIGTERM to a replica under load loses no request.
    let until = Instant::now() + Duration::from_secs(6);
    let proxy_url = fleet.proxy.clone();
    let during = tokio::spawn(async move { load(&proxy_url, 8, until).await });
    tokio::time::sleep(Duration::from_secs(1)).await;
    send_signal("TERM", fleet.replicas[2].pid);
    let during = during.await.unwrap();
    assert!(
        failures(&during).is_empty(),
        "a drain lost requests: {:?}",
        failures(&during)
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while alive(fleet.replicas[2].pid) {
        assert!(
            Instant::now() < deadline,
            "the drained replica did not exit"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // It comes back: about a third of the models move to it, none fails.
    let survivors = &fleet.replicas[..2].to_vec();
    let mut returned = fleet.restart(2, &s3).await;
    // Until the proxy tries it again (nginx after fail_timeout, HAProxy
    // after its checks), its models stay where they are.
    let settle = load(&fleet.proxy, 4, Instant::now() + Duration::from_secs(7)).await;
    assert!(failures(&settle).is_empty(), "{:?}", failures(&settle));
    let before = scrape(survivors).await;
    let round = load(&fleet.proxy, 4, Instant::now() + Duration::from_secs(3)).await;
    assert!(failures(&round).is_empty(), "{:?}", failures(&round));
    let after = scrape(survivors).await;
    let moved = placement(&before, &after)
        .iter()
        .filter(|r| r.is_empty())
        .count();
    assert!(
        (10..=50).contains(&moved),
        "{moved} of {MODELS} models moved to the replica that came back"
    );

    // A replica dies: only what it had in flight may fail.
    let until = Instant::now() + Duration::from_secs(6);
    let proxy_url = fleet.proxy.clone();
    let during = tokio::spawn(async move { load(&proxy_url, 8, until).await });
    tokio::time::sleep(Duration::from_secs(1)).await;
    let killed = Instant::now();
    send_signal("KILL", fleet.replicas[0].pid);
    let during = during.await.unwrap();
    let failed = failures(&during);
    eprintln!(
        "{proxy}: {} requests, {} failed when a replica was killed",
        during.len(),
        failed.len()
    );
    for outcome in &failed {
        assert!(
            outcome.sent <= killed && outcome.sent + outcome.took >= killed,
            "m{} failed, but was not in flight when the replica died: {outcome:?}",
            outcome.model
        );
    }
    assert!(
        failed.len() <= 8,
        "more failures than requests in flight: {failed:?}"
    );
    let slowest = during.iter().map(|o| o.took).max().unwrap();
    assert!(slowest < CLIENT_TIMEOUT, "a request took {slowest:?}");
    let served_after = during.iter().filter(|o| o.sent > killed).count();
    assert!(served_after > 100, "{served_after} requests after the kill");

    // SIGTERM to the script stops everything it started.
    let pids: Vec<u32> = fleet.replicas.iter().map(|r| r.pid).collect();
    let proxy_url = fleet.proxy.clone();
    let _ = returned.kill();
    let _ = returned.wait();
    assert!(fleet.stop(), "the script exits 0 on SIGTERM");
    for pid in pids {
        assert!(!alive(pid), "replica pid {pid} still runs");
    }
    assert!(
        reqwest::get(format!("{proxy_url}/ping")).await.is_err(),
        "the proxy still answers"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fleet_behind_nginx() {
    fleet_behind("nginx").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fleet_behind_haproxy() {
    fleet_behind("haproxy").await;
}

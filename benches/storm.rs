//! A push storm with real git: commits made in bare repositories, each followed by its signed `push` webhook.
//!
//!   cargo bench --bench storm -- init DIR [REPOS=20]
//!   cargo bench --bench storm -- run URL DIR [RATE=1000] [SECONDS=10] [CONNECTIONS=64] [SECRET=bench-secret]
//!                                        [SEED=17] [GIVE_UP=60]
//!
//! `init` makes DIR/bare/repoNN.git with one commit on `main` each; the driver (`bench/storm`) then clones
//! DIR/mirrors/repoNN from them. `run` sends request i at start + i / RATE (open loop, as `benches/load.rs`):
//! it advances a repository picked by a seeded generator by one real commit (a blob, a tree and a commit
//! written as loose objects, then `refs/heads/main` moved by a long-lived `git update-ref --stdin` whose
//! "commit: ok" says the ref is visible), and only then queues its webhook. Commit contents and dates follow
//! from the seed, so the same SEED replays the same stream, down to the object ids, to every server.
//!
//! Spawning `git commit` per webhook would cost more CPU than the servers under test on 2 cores; and one
//! `git fast-import` per repository only makes objects visible through a `checkpoint`, which writes a new
//! pack each time (500 packs per repository after 10 s, which every fetch would then walk).
//!
//! After the last acknowledgement it polls every mirror's `refs/heads/main` (loose file or `packed-refs`,
//! read directly so polling costs no process) every 20 ms until each holds its repository's last commit,
//! and prints the time from the last webhook sent until then, or "did not converge" after GIVE_UP seconds.
//! Loopback only; bounded by SECONDS and GIVE_UP.

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use rand::{Rng, SeedableRng};
use sha1::{Digest, Sha1};

use common::{percentile, Push, Seen};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Commit dates start here (2025-12-01T00:00Z) and advance a second per commit of a repository.
const EPOCH: u64 = 1_764_547_200;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or_else(|| default.to_string());
    match arg(0, "").as_str() {
        "init" => init(Path::new(&arg(1, "")), arg(2, "20").parse().expect("REPOS")),
        "run" => {
            let url: url::Url = arg(1, "http://127.0.0.1:18080/hooks/github").parse().expect("URL");
            let host = url.host_str().unwrap_or_default();
            assert!(
                host == "127.0.0.1" || host == "localhost" || host == "[::1]",
                "the storm is only ever sent to loopback, not {host}"
            );
            let plan = Plan {
                url,
                dir: PathBuf::from(arg(2, "")),
                rate: arg(3, "1000").parse().expect("RATE"),
                seconds: arg(4, "10").parse().expect("SECONDS"),
                connections: arg(5, "64").parse().expect("CONNECTIONS"),
                secret: arg(6, "bench-secret"),
                seed: arg(7, "17").parse().expect("SEED"),
                give_up: Duration::from_secs(arg(8, "60").parse().expect("GIVE_UP")),
            };
            run(plan);
        }
        _ => panic!("usage: storm init DIR [REPOS] | storm run URL DIR [RATE] [SECONDS] [CONNECTIONS] [SECRET] [SEED]"),
    }
}

struct Plan {
    url: url::Url,
    dir: PathBuf,
    rate: u64,
    seconds: u64,
    connections: usize,
    secret: String,
    seed: u64,
    give_up: Duration,
}

/// One bare repository: its objects directory, its head, and the `git update-ref --stdin` that moves it.
struct Repo {
    name: String,
    git_dir: PathBuf,
    head: String,
    commits: u64,
    refs: Option<(Child, ChildStdin, BufReader<ChildStdout>)>,
}

impl Drop for Repo {
    /// Closing its input ends `git update-ref --stdin`; it is reaped here.
    fn drop(&mut self) {
        if let Some((mut child, stdin, _)) = self.refs.take() {
            drop(stdin);
            let _ = child.wait();
        }
    }
}

impl Repo {
    fn open(git_dir: PathBuf) -> Repo {
        let name = git_dir.file_stem().expect("repoNN.git").to_string_lossy().into_owned();
        Repo { name, git_dir, head: String::new(), commits: 0, refs: None }
    }

    /// Writes one object as git does (`<kind> <len>\0<data>`, zlib, under objects/xx/) and returns its id.
    fn write_object(&self, kind: &str, data: &[u8]) -> [u8; 20] {
        let mut raw = format!("{kind} {}\0", data.len()).into_bytes();
        raw.extend_from_slice(data);
        let id: [u8; 20] = Sha1::digest(&raw).into();
        let hex = hex::encode(id);
        let dir = self.git_dir.join("objects").join(&hex[..2]);
        let path = dir.join(&hex[2..]);
        if !path.exists() {
            fs::create_dir_all(&dir).expect("objects dir");
            let tmp = dir.join(format!("tmp_obj_storm_{}", std::process::id()));
            fs::write(&tmp, zlib_stored(&raw)).expect("write object");
            fs::rename(&tmp, &path).expect("rename object");
        }
        id
    }

    /// One real commit on `main`: a new `counter` file, the tree holding it, the commit, then the ref.
    fn commit(&mut self) -> String {
        self.commits += 1;
        let n = self.commits;
        let blob = self.write_object("blob", format!("{} commit {n}\n", self.name).as_bytes());
        let mut tree = b"100644 counter\0".to_vec();
        tree.extend_from_slice(&blob);
        let tree = hex::encode(self.write_object("tree", &tree));
        let when = EPOCH + n;
        let mut text = format!("tree {tree}\n");
        if !self.head.is_empty() {
            text.push_str(&format!("parent {}\n", self.head));
        }
        text.push_str(&format!(
            "author Storm <storm@bench.invalid> {when} +0000\ncommitter Storm <storm@bench.invalid> {when} +0000\n\n\
             storm: {} commit {n}\n",
            self.name
        ));
        let id = hex::encode(self.write_object("commit", text.as_bytes()));
        self.move_main(&id);
        self.head = id.clone();
        id
    }

    /// Moves `refs/heads/main` from the last head to `id` in one transaction; returns once git says it is done.
    fn move_main(&mut self, id: &str) {
        let (_, stdin, stdout) = self.refs.get_or_insert_with(|| {
            // The generator's own ref updates need no fsync (git fsyncs refs by default): they are not what is
            // measured, and at 1,000/s the flushes alone would make the generator fall behind.
            let mut child = Command::new("git")
                .args(["-c", "core.fsync=none", "--git-dir"])
                .arg(&self.git_dir)
                .args(["update-ref", "--stdin"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("git update-ref --stdin");
            let (stdin, stdout) = (child.stdin.take().expect("stdin"), child.stdout.take().expect("stdout"));
            (child, stdin, BufReader::new(stdout))
        });
        let old = if self.head.is_empty() { "0".repeat(40) } else { self.head.clone() };
        write!(stdin, "start\nupdate refs/heads/main {id} {old}\ncommit\n").expect("update-ref stdin");
        stdin.flush().expect("update-ref flush");
        for expected in ["start: ok", "commit: ok"] {
            let mut line = String::new();
            stdout.read_line(&mut line).expect("update-ref answer");
            assert_eq!(line.trim_end(), expected, "git update-ref in {}", self.git_dir.display());
        }
    }
}

/// zlib with stored (uncompressed) deflate blocks: valid for git, and no compressor in the hot loop.
fn zlib_stored(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x78, 0x01];
    let mut chunks = data.chunks(0xffff).peekable();
    if data.is_empty() {
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(chunk) = chunks.next() {
        out.push(u8::from(chunks.peek().is_none()));
        let len = chunk.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in data {
        a = (a + u32::from(byte)) % 65521;
        b = (b + a) % 65521;
    }
    out.extend_from_slice(&((b << 16) | a).to_be_bytes());
    out
}

fn repos(dir: &Path) -> Vec<Repo> {
    let mut paths: Vec<PathBuf> = fs::read_dir(dir.join("bare"))
        .expect("DIR/bare")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "git"))
        .collect();
    paths.sort();
    paths.into_iter().map(Repo::open).collect()
}

fn init(dir: &Path, count: usize) {
    for i in 0..count {
        let git_dir = dir.join("bare").join(format!("repo{i:02}.git"));
        let status = Command::new("git")
            .args(["init", "--quiet", "--bare", "--initial-branch=main"])
            .arg(&git_dir)
            .status()
            .expect("git init");
        assert!(status.success(), "git init {}", git_dir.display());
        Repo::open(git_dir).commit();
    }
}

/// A webhook ready to send: when it was due, and its signed body.
struct Hook {
    due: Instant,
    body: Bytes,
    signature: String,
    delivery: String,
}

fn run(plan: Plan) {
    let template: serde_json::Value =
        serde_json::from_slice(&fs::read("bench/push.json").expect("bench/push.json (run from the repository root)"))
            .expect("push.json");
    let mut repos = repos(&plan.dir);
    assert!(!repos.is_empty(), "no DIR/bare/*.git: run `storm init DIR` first");
    for repo in &mut repos {
        // The head `init` left; commits continue from it, so a replay on fresh repositories is identical.
        let out = Command::new("git").arg("--git-dir").arg(&repo.git_dir).args(["rev-parse", "main"]).output();
        repo.head = String::from_utf8(out.expect("git rev-parse").stdout).expect("utf8").trim().to_string();
        repo.commits = 1;
    }
    let total = plan.rate * plan.seconds;
    let start = Instant::now() + Duration::from_millis(100);
    let (tx, rx) = tokio::sync::mpsc::channel::<Hook>(4096);

    // One thread per repository makes its commits in order (they form a chain, and a commit's webhook leaves only
    // after its ref moved); a scheduler hands each due webhook to its repository's thread. A ref update is a
    // rename over the old ref, which ext4 flushes (auto_da_alloc): ~1-3 ms of I/O wait each, so one thread
    // for all repositories could not keep 1,000/s, while 20 wait in parallel.
    let template = Arc::new(template);
    let mut lanes = Vec::new();
    let mut committers = Vec::new();
    for mut repo in repos {
        let (lane, due_rx) = std::sync::mpsc::channel::<(u64, Instant)>();
        lanes.push(lane);
        let (tx, template, secret, seed) = (tx.clone(), template.clone(), plan.secret.clone(), plan.seed);
        committers.push(std::thread::spawn(move || {
            let mut late = Duration::ZERO;
            for (i, due) in due_rx {
                let before = repo.head.clone();
                let after = repo.commit();
                late = late.max(Instant::now().saturating_duration_since(due));
                let body = push_body(&template, &repo, &before, &after);
                let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
                mac.update(&body);
                let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
                let delivery = format!("{seed:08x}-0000-4000-8000-{i:012x}");
                if tx.blocking_send(Hook { due, body: body.into(), signature, delivery }).is_err() {
                    break;
                }
            }
            (repo.name.clone(), repo.head.clone(), late)
        }));
    }
    drop(tx);
    let (seed, rate) = (plan.seed, plan.rate);
    let scheduler = std::thread::spawn(move || {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        for i in 0..total {
            let due = start + Duration::from_nanos(i * 1_000_000_000 / rate);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            let pick = rng.random_range(0..lanes.len());
            lanes[pick].send((i, due)).expect("committer thread");
        }
    });

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let mut seen = runtime.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..plan.connections {
            let (rx, url) = (rx.clone(), plan.url.clone());
            tasks.spawn(async move { connection(&url, &rx).await });
        }
        let mut seen = Seen::default();
        while let Some(part) = tasks.join_next().await {
            let part = part.expect("connection task");
            seen.from_send.extend(part.from_send);
            seen.from_due.extend(part.from_due);
            seen.failed += part.failed;
            seen.errors += part.errors;
            seen.last_sent = seen.last_sent.max(part.last_sent);
        }
        seen
    });
    let acked_at = Instant::now();
    scheduler.join().expect("scheduler thread");
    let mut heads = Vec::new();
    let mut late = Duration::ZERO;
    for committer in committers {
        let (name, head, lane_late) = committer.join().expect("committer thread");
        heads.push((name, head));
        late = late.max(lane_late);
    }
    let last_sent = seen.last_sent.unwrap_or(acked_at);
    let converged = converge(&plan.dir, &heads, last_sent, plan.give_up);

    seen.from_send.sort_unstable();
    seen.from_due.sort_unstable();
    let elapsed = (last_sent - start).as_secs_f64();
    let answered = seen.from_send.len();
    println!(
        "storm: {total} commits+webhooks due at {} /s over {} repositories, {} connections to {}; a commit was \
         visible at most {:.1} ms after it was due",
        plan.rate,
        heads.len(),
        plan.connections,
        plan.url,
        late.as_secs_f64() * 1000.0
    );
    println!(
        "  {answered} answered; sent over {elapsed:.2} s = {:.0} acks/s; {} non-2xx, {} connection errors",
        answered as f64 / elapsed,
        seen.failed,
        seen.errors
    );
    for (name, sorted) in [("sent → answered", &seen.from_send), ("due → answered", &seen.from_due)] {
        println!(
            "  {name:<16} p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms",
            percentile(sorted, 50.0),
            percentile(sorted, 90.0),
            percentile(sorted, 99.0),
            percentile(sorted, 99.9),
            percentile(sorted, 100.0)
        );
    }
    let converged_text = match converged {
        Ok(t) => format!("{:.2}s", t.as_secs_f64()),
        Err(behind) => format!("did not converge ({behind} mirrors behind after {} s)", plan.give_up.as_secs()),
    };
    println!("  converged {converged_text} after the last webhook was sent");
    // One line for bench/storm to put in its table.
    println!(
        "STORM answered={answered} acks_per_s={:.0} p50_ms={:.2} p99_ms={:.2} due_p99_ms={:.2} non2xx={} errors={} converged={}",
        answered as f64 / elapsed,
        percentile(&seen.from_send, 50.0),
        percentile(&seen.from_send, 99.0),
        percentile(&seen.from_due, 99.0),
        seen.failed,
        seen.errors,
        converged.map(|t| format!("{:.2}s", t.as_secs_f64())).unwrap_or_else(|_| "never".into())
    );
}

/// The real GitHub payload from bench/push.json, pointed at this repository and commit.
fn push_body(template: &serde_json::Value, repo: &Repo, before: &str, after: &str) -> Vec<u8> {
    let mut body = template.clone();
    body["before"] = before.into();
    body["after"] = after.into();
    body["repository"]["name"] = repo.name.clone().into();
    body["repository"]["full_name"] = format!("bench/{}", repo.name).into();
    body["head_commit"]["id"] = after.into();
    body["compare"] = format!("https://github.invalid/bench/{}/compare/{before}...{after}", repo.name).into();
    serde_json::to_vec(&body).expect("json")
}

async fn connection(url: &url::Url, rx: &tokio::sync::Mutex<tokio::sync::mpsc::Receiver<Hook>>) -> Seen {
    let mut seen = Seen::default();
    let mut sender = None;
    loop {
        let Some(hook) = rx.lock().await.recv().await else {
            return seen;
        };
        let push = Push {
            delivery: &hook.delivery,
            signature: &hook.signature,
            body: hook.body,
            user_agent: "GitHub-Hookshot/hookgate-storm",
        };
        seen.send(&mut sender, url, push, hook.due).await;
    }
}

/// Polls the mirrors until each `refs/heads/main` is its repository's last commit; Err(mirrors behind).
fn converge(dir: &Path, heads: &[(String, String)], since: Instant, give_up: Duration) -> Result<Duration, usize> {
    loop {
        let behind = heads.iter().filter(|(name, head)| mirror_main(dir, name).as_deref() != Some(head)).count();
        if behind == 0 {
            return Ok(since.elapsed());
        }
        if since.elapsed() > give_up {
            return Err(behind);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A mirror's `refs/heads/main`: the loose ref if there is one, else its line in `packed-refs`.
fn mirror_main(dir: &Path, name: &str) -> Option<String> {
    let git_dir = dir.join("mirrors").join(name);
    if let Ok(text) = fs::read_to_string(git_dir.join("refs/heads/main")) {
        return Some(text.trim().to_string());
    }
    let packed = fs::read_to_string(git_dir.join("packed-refs")).ok()?;
    packed.lines().find_map(|l| l.strip_suffix(" refs/heads/main").map(str::to_string))
}

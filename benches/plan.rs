//! Planning at scale: a generated repository of N packages and N commits (default 10,000;
//! `PACKETARY_BENCH_PACKAGES` to change), measured in one run:
//!
//! - fresh `git clone` plus a file-system scan of every package (what a script-based bot does),
//! - a cold mirror fetch, then an incremental fetch of one new commit over file://,
//! - planning a one-package change with the warm mirror and a warm spec cache, in process
//!   (median of several runs) and as a child `packetary plan --offline` (wall time, peak RSS).
//!
//! Run: `cargo bench --bench plan` (needs the `git` command; no Docker).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use git2::{Oid, Repository};
use packetary::config::Config;
use packetary::git::{FetchAuth, MirrorCache, RemoteRef};
use packetary::model::Nevr;
use packetary::plan::{self, Change, PlanOptions};
use packetary::spec::{SpecCache, SpecInfo, SpecOracle};

fn spec_text(name: &str, rev: usize) -> String {
    format!(
        "Name: {name}\nVersion: 1.{rev}\nRelease: 1\nSummary: {name}\nLicense: MIT\nBuildArch: noarch\n\n%description\n{name}\n\n%files\n"
    )
}

fn pkg(i: usize) -> String {
    format!("p{i:05}")
}

/// `git fast-import` stream: commit i adds package i; every 10th commit also edits an older one.
fn generate(origin: &Path, n: usize) {
    let status = Command::new("git")
        .args(["init", "-q", "--bare", "-b", "main"])
        .arg(origin)
        .status()
        .expect("git init");
    assert!(status.success());
    let mut child = Command::new("git")
        .args(["fast-import", "--quiet"])
        .current_dir(origin)
        .stdin(Stdio::piped())
        .spawn()
        .expect("git fast-import");
    {
        let mut w = std::io::BufWriter::new(child.stdin.take().expect("stdin"));
        let blob = |w: &mut dyn Write, path: &str, data: &str| {
            writeln!(w, "M 100644 inline {path}\ndata {}\n{data}", data.len()).expect("write");
        };
        for i in 0..n {
            let t = 1_700_000_000 + i;
            write!(
                w,
                "commit refs/heads/main\ncommitter Bench <b@x> {t} +0000\ndata 8\ncommit {:01}\n",
                i % 10
            )
            .expect("write");
            let p = pkg(i);
            blob(&mut w, &format!("rpms/{p}/{p}.spec"), &spec_text(&p, 0));
            blob(
                &mut w,
                &format!("rpms/{p}/{p}-fix.patch"),
                &format!("--- a\n+++ b\n{i}\n"),
            );
            if i % 10 == 9 {
                let old = pkg(i / 2);
                blob(
                    &mut w,
                    &format!("rpms/{old}/{old}.spec"),
                    &spec_text(&old, i),
                );
            }
            writeln!(w).expect("write");
        }
        w.flush().expect("flush");
    }
    assert!(child.wait().expect("fast-import").success());
}

/// One commit on `main` of a bare repository, editing one package's spec, made by rebuilding
/// only the trees on its path (no index of the whole repository).
fn commit_one(repo: &Repository, package: &str, text: &str) -> Oid {
    let head = repo.refname_to_id("refs/heads/main").expect("main");
    let parent = repo.find_commit(head).expect("commit");
    let root = parent.tree().expect("tree");
    let rpms = repo
        .find_tree(root.get_name("rpms").expect("rpms").id())
        .expect("rpms");
    let p = repo
        .find_tree(rpms.get_name(package).expect("package").id())
        .expect("pkg");
    let blob = repo.blob(text.as_bytes()).expect("blob");
    let mut b = repo.treebuilder(Some(&p)).expect("tb");
    b.insert(format!("{package}.spec"), blob, 0o100644)
        .expect("insert");
    let p2 = b.write().expect("write");
    let mut b = repo.treebuilder(Some(&rpms)).expect("tb");
    b.insert(package, p2, 0o040000).expect("insert");
    let rpms2 = b.write().expect("write");
    let mut b = repo.treebuilder(Some(&root)).expect("tb");
    b.insert("rpms", rpms2, 0o040000).expect("insert");
    let root2 = repo.find_tree(b.write().expect("write")).expect("tree");
    let sig = git2::Signature::now("Bench", "b@x").expect("sig");
    repo.commit(
        Some("refs/heads/main"),
        &sig,
        &sig,
        "one change",
        &root2,
        &[&parent],
    )
    .expect("commit")
}

/// Runs a child and returns (wall time, peak RSS in KiB, stdout).
///
/// `getrusage`/`wait4` cannot be used here: Linux folds the parent's RSS high-water mark into
/// a child spawned with vfork, so every figure would be this (large) benchmark's own. Instead
/// the child is traced, stopped at its exit (PTRACE_O_TRACEEXIT, before its memory is freed),
/// and its own `VmHWM` is read from /proc.
#[allow(clippy::zombie_processes)]
fn run_measured(cmd: &mut Command) -> (Duration, i64, Vec<u8>) {
    use std::os::unix::process::CommandExt;
    let started = Instant::now();
    // SAFETY: only async-signal-safe ptrace(2) between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::ptrace(
                libc::PTRACE_TRACEME,
                0,
                std::ptr::null_mut::<libc::c_void>(),
                std::ptr::null_mut::<libc::c_void>(),
            ) == -1
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut out = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut out, &mut v).expect("read");
        v
    });
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    let mut hwm_kib = -1;
    // SAFETY: waitpid/ptrace on our own traced child.
    unsafe {
        assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
        assert!(libc::WIFSTOPPED(status), "child did not stop at exec");
        libc::ptrace(
            libc::PTRACE_SETOPTIONS,
            pid,
            0,
            libc::PTRACE_O_TRACEEXIT as libc::c_long,
        );
        libc::ptrace(libc::PTRACE_CONT, pid, 0, 0);
        loop {
            assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
            if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
                break;
            }
            let mut signal = 0;
            if status >> 8 == (libc::SIGTRAP | (libc::PTRACE_EVENT_EXIT << 8)) {
                hwm_kib = std::fs::read_to_string(format!("/proc/{pid}/status"))
                    .ok()
                    .and_then(|s| {
                        s.lines()
                            .find_map(|l| l.strip_prefix("VmHWM:"))
                            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                    })
                    .unwrap_or(-1);
            } else if libc::WIFSTOPPED(status) {
                signal = libc::WSTOPSIG(status);
            }
            libc::ptrace(libc::PTRACE_CONT, pid, 0, signal as libc::c_long);
        }
    }
    let elapsed = started.elapsed();
    let stdout = reader.join().expect("reader");
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{cmd:?} failed (status {status})"
    );
    (elapsed, hwm_kib, stdout)
}

fn main() {
    let n: usize = std::env::var("PACKETARY_BENCH_PACKAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    // `cargo bench` passes --bench; anything else (like `cargo test --benches`) runs small.
    let n = if std::env::args().any(|a| a == "--bench") {
        n
    } else {
        n.min(200)
    };
    let work = tempfile::tempdir().expect("tmp");
    // PACKETARY_BENCH_KEEP=1 leaves the generated repository, mirror and caches for a look.
    let work_path = work.path().to_path_buf();
    let _keep = std::env::var_os("PACKETARY_BENCH_KEEP").map(|_| work.keep());
    let origin = work_path.join("origin.git");
    let url = format!("file://{}", origin.display());
    let bin = env!("CARGO_BIN_EXE_packetary");
    println!("packetary plan benchmark: {n} packages, {n} commits");
    if std::env::var_os("PACKETARY_BENCH_KEEP").is_some() {
        println!("  keeping {}", work_path.display());
    }

    let t = Instant::now();
    generate(&origin, n);
    println!(
        "  generate repository (git fast-import):      {:>9.1} ms",
        ms(t.elapsed())
    );

    // The old way: clone with a working tree, then scan the file system for packages.
    let t = Instant::now();
    let clone = work_path.join("clone");
    let st = Command::new("git")
        .args(["clone", "-q"])
        .arg(&url)
        .arg(&clone)
        .status()
        .expect("git clone");
    assert!(st.success());
    let clone_time = t.elapsed();
    let t = Instant::now();
    let found = plan::discover(&clone, &[]).expect("scan");
    let scan_time = t.elapsed();
    assert_eq!(found.len(), n);
    let clone_scan = clone_time + scan_time;
    println!(
        "  fresh git clone + scan:                     {:>9.1} ms  (clone {:.1} ms, scan {:.1} ms, {} packages)",
        ms(clone_scan),
        ms(clone_time),
        ms(scan_time),
        found.len()
    );

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let cache_dir = work_path.join("cache");
    let cache = MirrorCache::new(cache_dir.join("mirrors"));
    let t = Instant::now();
    let (mirror, _) = rt
        .block_on(cache.fetch(&url, &[RemoteRef::AllBranches], &FetchAuth::None))
        .expect("fetch");
    println!(
        "  cold mirror fetch:                          {:>9.1} ms",
        ms(t.elapsed())
    );
    let mrepo = mirror.open().expect("open");
    let t = Instant::now();
    let tree = mrepo
        .find_commit(mrepo.refname_to_id("refs/heads/main").expect("main"))
        .expect("c")
        .tree()
        .expect("t");
    let all = plan::discover_tree(&mrepo, &tree, Default::default()).expect("discover");
    assert_eq!(all.len(), n);
    println!(
        "  full package scan of the mirror's tree:     {:>9.1} ms",
        ms(t.elapsed())
    );

    // One new commit upstream, fetched incrementally.
    let origin_repo = Repository::open_bare(&origin).expect("origin");
    let before = origin_repo.refname_to_id("refs/heads/main").expect("main");
    let changed = pkg(n / 3);
    let new_text = spec_text(&changed, 99_999);
    let after = commit_one(&origin_repo, &changed, &new_text);
    let mut fetches = Vec::new();
    for round in 0..5 {
        let t = Instant::now();
        let (_, report) = rt
            .block_on(cache.fetch(&url, &[RemoteRef::AllBranches], &FetchAuth::None))
            .expect("fetch");
        fetches.push(t.elapsed());
        if round == 0 {
            assert_eq!(report.updated.len(), 1, "one ref moved");
        }
        // Next round: one more commit to fetch.
        commit_one(&origin_repo, &pkg(n / 4 + round), &spec_text("x", round));
    }
    let fetch_one = median(&mut fetches);
    println!(
        "  incremental fetch of one commit (median 5): {:>9.1} ms  (first {:.1} ms)",
        ms(fetch_one),
        ms(fetches[0])
    );

    // A warm spec cache: the changed spec was asked about before.
    let config = Config::load(None).expect("config");
    let target = config.targets.values().next().expect("target").clone();
    let spec_cache = SpecCache::new(cache_dir.join("specs"));
    let blob = Oid::hash_object(git2::ObjectType::Blob, new_text.as_bytes())
        .expect("hash")
        .to_string();
    spec_cache
        .put(
            &SpecCache::key(&target, None),
            &blob,
            &Ok(SpecInfo {
                nevr: Nevr::parse_query_line(&format!("{changed}\t(none)\t1.99999\t1"))
                    .expect("nevr"),
                build_requires: vec![],
                provides: vec![format!("{changed} = 1.99999-1")],
                sources: vec![],
            }),
        )
        .expect("cache");
    let opts = PlanOptions {
        default_branch: Some("refs/heads/main".into()),
        default_targets: config
            .default_targets
            .iter()
            .map(|t| t.to_string())
            .collect(),
        known_targets: config.targets.keys().map(|t| t.to_string()).collect(),
    };
    // No Docker reachable: a cache miss would show as a notice, and is checked below.
    let oracle = SpecOracle::new(spec_cache, Some("tcp://127.0.0.1:9".into()));
    let change = Change::Push {
        before: Some(before.to_string()),
        after: after.to_string(),
    };
    let mut runs = Vec::new();
    for _ in 0..15 {
        let t = Instant::now();
        let p = rt
            .block_on(plan::plan_change(
                mirror.path.clone(),
                url.clone(),
                change.clone(),
                opts.clone(),
                &config.targets,
                Some(&oracle),
            ))
            .expect("plan");
        runs.push(t.elapsed());
        assert_eq!(p.packages.len(), 1, "{p:?}");
        assert_eq!(
            p.packages[0].nevr.as_ref().map(|n| n.version.as_str()),
            Some("1.99999")
        );
        assert!(p.notices.is_empty(), "{:?}", p.notices);
    }
    let plan_in_process = median(&mut runs);
    println!(
        "  plan one-package change, warm (in process, median 15): {:.2} ms",
        ms(plan_in_process)
    );

    let (wall, rss_kib, out) = run_measured(
        Command::new(bin)
            .args(["plan", "--json", "--offline", "--cache-dir"])
            .arg(&cache_dir)
            .arg(&url)
            .arg(format!("{before}..{after}")),
    );
    let parsed: plan::Plan = serde_json::from_slice(&out).expect("plan JSON");
    assert_eq!(parsed.packages.len(), 1);
    println!(
        "  `packetary plan` child process, warm:       {:>9.1} ms, peak RSS {:.1} MiB",
        ms(wall),
        rss_kib as f64 / 1024.0
    );
    println!("figures:");
    println!(
        "  warm plan {:.2} ms (limit 50 ms: {}), child peak RSS {:.1} MiB (limit 100 MB: {}), incremental fetch {:.1} ms (limit 200 ms: {})",
        ms(plan_in_process),
        verdict(plan_in_process <= Duration::from_millis(50)),
        rss_kib as f64 / 1024.0,
        verdict(rss_kib * 1024 <= 100_000_000),
        ms(fetch_one),
        verdict(fetch_one <= Duration::from_millis(200)),
    );
    println!(
        "  clone+scan / warm plan = {:.0}x (in process), {:.0}x (child process)",
        clone_scan.as_secs_f64() / plan_in_process.as_secs_f64(),
        clone_scan.as_secs_f64() / wall.as_secs_f64()
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(v: &mut [Duration]) -> Duration {
    let mut s = v.to_vec();
    s.sort();
    s[s.len() / 2]
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "OVER"
    }
}

//! What runs inside the build container, per backend. Pure functions of the target and the
//! package, so they are unit-tested without Docker.

use std::path::Path;

use crate::config::{Backend, Target};
use sha2::Digest;

mod mock;
mod rpmbuild;

pub use mock::{
    init_command as mock_init_command, mock_config, mock_root, MOCK_CFG, MOCK_LOGS, MOCK_LOG_NAMES,
};

/// Where things are inside the build container.
pub const SPEC_DIR: &str = "/spec";
pub const SOURCE_DIR: &str = "/src";
pub const OUT_DIR: &str = "/out";
pub const REPO_DIR: &str = "/repos";
/// File in OUT_DIR where the SRPM phase leaves the package's NEVR.
pub const NEVR_FILE: &str = ".nevr";

/// Shell line for the SRPM phase, with `$1` the SRPM: a macro rpm left unexpanded in the
/// package's name, version or release (`Release: %autorelease` where nothing defines it)
/// fails the phase with an rpm-style error naming it, instead of building
/// `x-1.0-%autorelease` (rpm only warns; `rpm -qp` then prints nothing for the file, whose
/// name rpm macro-expands).
fn unexpanded_nevr_check() -> String {
    format!(r#"case "${{1##*/}}" in *%*) echo "{UNEXPANDED_MARK}${{1##*/}}"; exit 1;; esac"#)
}

/// Marker the dependency phase prints before each capability it could not install, and the
/// start of the SRPM phase's unexpanded-NEVR error (defined where they are read back).
pub use super::classify::{MISSING_MARK, UNEXPANDED_MARK};

/// Environment variable giving the driver the secret for [`net_on_marker`]. Only the driver
/// (root) sees it: it unsets it before any phase runs, and a process's initial environment
/// is readable by its own user only, whereas its command line (holding the phase markers'
/// nonce) is readable by all.
pub const NET_TOKEN_ENV: &str = "PACKETARY_NET_TOKEN";

/// The line a dependency phase prints to be put on the network; the driver's shell holds
/// the token in `$net_token`.
pub fn net_on_marker(token: &str) -> String {
    format!("@@packetary-net-{token} on")
}

/// The line asking for the network to be taken away: harmless, so it needs no secret.
pub const NET_OFF_MARKER: &str = "@@packetary-net off";

/// A repository as the container sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRepo {
    pub name: String,
    pub url: String,
}

/// The commands of one build, phase by phase: bash script bodies.
#[derive(Debug, Clone, PartialEq)]
pub struct Script {
    pub srpm: String,
    /// Installs missing BuildRequires; `None` where the backend does it itself (Mock).
    pub deps: Option<String>,
    pub build: String,
    /// Whether the binary build phase must run with the network cut (rpmbuild). Mock needs
    /// its repositories while rebuilding and isolates rpmbuild's network itself.
    pub offline_build: bool,
    /// Files to write into OUT_DIR/.packetary before the first phase: (name, content).
    pub files: Vec<(String, String)>,
    pub env: Vec<String>,
    pub cap_add: Vec<String>,
    pub security_opt: Vec<String>,
}

/// A backend's own reading of a failed phase, where its tool says more than the generic
/// reading of the output can (Mock's exit codes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Not the package's fault: the image, the configuration, a repository out of reach.
    Infra(String),
    /// BuildRequires that no repository provides.
    MissingDeps(Vec<String>),
}

/// How `backend` reads a phase that exited `code` having printed `text`; `None` leaves it
/// to the generic reading (`executor::classify`).
pub fn classify(backend: Backend, code: i64, text: &str) -> Option<Verdict> {
    match backend {
        Backend::Rpmbuild => None,
        Backend::Mock => mock::classify(code, text),
    }
}

pub fn script(target: &Target, spec_file: &str, repos: &[ContainerRepo]) -> Script {
    match target.backend {
        Backend::Rpmbuild => rpmbuild::script(target, spec_file, repos),
        Backend::Mock => mock::script(target, spec_file, repos),
    }
}

/// A named volume the backend keeps its dependency downloads in across builds of the
/// target in one scope (see [`super::DepsCache`]): `(volume name, mount point)`. Mounted
/// read-write; the backend's scripts keep spec code from writing it, and builds of another
/// scope (an untrusted change, another repository) never see it.
pub fn cache_volume(target: &Target, cache: &super::DepsCache) -> Option<(String, String)> {
    let super::DepsCache::Shared(scope) = cache else {
        return None;
    };
    match target.backend {
        Backend::Rpmbuild => {
            let digest = sha2::Sha256::digest(scope.as_bytes());
            Some((
                format!(
                    "{}-{}",
                    rpmbuild::cache_volume(target),
                    &hex::encode(digest)[..16]
                ),
                rpmbuild::CACHE_DIR.to_string(),
            ))
        }
        Backend::Mock => None,
    }
}

/// Whether the dependency phase needs the network even when the target has no http(s)
/// repository: the rpmbuild backend installs from Debian's mirror what rpm cannot satisfy.
/// Longest spec [`may_name_build_deps`] reads; a longer one may name anything.
const SPEC_SCAN_MAX: u64 = 1 << 20;

/// Whether the spec at `path` may name build dependencies (`BuildRequires`, the older
/// `BuildPrereq`, `%generate_buildrequires`) or take some from another file (`%include`),
/// so that its dependency phase may need the network. A plain search that errs towards
/// yes (unreadable or longer than 1 MiB: yes); a macro that spells BuildRequires without
/// the word is caught when the phase asks for the network (`Stop::NeedsNetwork`).
pub async fn may_name_build_deps(path: &Path) -> bool {
    use tokio::io::AsyncReadExt;
    // Not a regular file (a FIFO would never end): nothing to read.
    if !tokio::fs::metadata(path).await.is_ok_and(|m| m.is_file()) {
        return true;
    }
    let Ok(f) = tokio::fs::File::open(path).await else {
        return true;
    };
    let mut text = Vec::new();
    if f.take(SPEC_SCAN_MAX + 1)
        .read_to_end(&mut text)
        .await
        .is_err()
        || text.len() as u64 > SPEC_SCAN_MAX
    {
        return true;
    }
    text.make_ascii_lowercase();
    let text = String::from_utf8_lossy(&text);
    ["buildrequires", "buildprereq", "%include"]
        .iter()
        .any(|w| text.contains(w))
}

pub fn deps_online(target: &Target) -> bool {
    matches!(target.backend, Backend::Rpmbuild)
}

/// The target's distribution macros as rpm `--define` options ([`Target::rpm_defines`]), so
/// that a build sees the same `%{?fedora}` as the spec queries that planned it.
pub fn target_defines(target: &Target) -> String {
    target
        .rpm_defines()
        .iter()
        .map(|d| format!("--define {}", sh_quote(d)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Quotes a word for POSIX sh.
pub fn sh_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Marker lines a driver script prints between phases; `nonce` keeps a package's own
/// output from faking them.
pub fn marker(nonce: &str, what: &str, phase: &str) -> String {
    format!("@@packetary-{nonce} {what} {phase}")
}

/// One bash script running several phases in order, in a single exec call: each exec costs
/// a round trip to the daemon, which is most of Packetary's fixed cost on a small package.
/// Everything goes to stdout (`exec 2>&1`) so that markers and output keep their order.
pub fn driver(nonce: &str, steps: &[(&str, &str)]) -> Vec<String> {
    // OUT_DIR is the container's own: uploaded inputs bring it, mounted ones do not.
    let mut s = format!(
        "exec 2>&1\nnet_token=${{{NET_TOKEN_ENV}:-}}\nunset {NET_TOKEN_ENV}\nmkdir -p {OUT_DIR}\n{NET_GATE}\n"
    );
    for (phase, body) in steps {
        // Where a Swarm job's agent gates the network, it gives it only while the
        // dependency phase runs, and the driver waits for it to be gone after.
        let (before, after) = if *phase == "deps" {
            ("net_gate deps\n", "net_gate end\n")
        } else {
            ("", "")
        };
        s.push_str(before);
        s.push_str(&format!(
            // Not `( ... ) || ...`: that context would switch off `set -e` inside the body.
            "echo {begin}\n(\n{body}\n)\nrc=$?\necho \"{end} $rc\"\n[ \"$rc\" -eq 0 ] || {{ {oom}; exit \"$rc\"; }}\n",
            begin = sh_quote(&marker(nonce, "begin", phase)),
            end = marker(nonce, "end", phase),
            oom = oom_report(nonce),
        ));
        s.push_str(after);
    }
    vec!["bash".into(), "-c".into(), s]
}

/// The driver's side of a Swarm job agent's network gate (`executor::swarm`): tells the
/// agent, through its FIFO (root's only; none in a local container), when the dependency
/// phase starts and ends, and after its end waits until no link but loopback is up.
const NET_GATE: &str = r#"net_gate() {
  [ -p /run/packetary/net ] || return 0
  echo "$1" > /run/packetary/net
  [ "$1" = end ] || return 0
  local i f n
  for n in $(seq 600); do
    f=0; for i in /sys/class/net/*; do [ "${i##*/}" = lo ] && continue; (( $(<"$i/flags") & 1 )) && f=1; done
    [ "$f" = 0 ] && return 0
    sleep 0.1
  done
  echo "packetary: the network was not taken away after the dependency phase"; exit 1
}"#;

/// Shell that prints the container's OOM kill count (cgroup v2 memory.events, v1
/// memory.oom_control) as a marker line. Read from inside because the cgroup is gone once
/// the driver, the container's main process, has exited; and Docker's OOMKilled flag only
/// covers the main process, while the kernel usually kills the compiler under it.
fn oom_report(nonce: &str) -> String {
    format!(
        r#"n=0; for f in /sys/fs/cgroup/memory.events /sys/fs/cgroup/memory/memory.oom_control; do [ -r "$f" ] || continue; while read -r k v; do [ "$k" = oom_kill ] && n=$((n+v)); done < "$f"; done; echo "{} $n""#,
        marker(nonce, "oom", "kills")
    )
}

/// rpm (4.15+) classifies and packs files on OpenMP threads, which by default spin while
/// waiting: on a busy host that burns the CPU the other builds need (measured: 6.6% of all
/// CPU in libgomp during eight trivial builds). Passive threads sleep instead.
pub(super) const OMP_PASSIVE: &str = "OMP_WAIT_POLICY=PASSIVE";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    /// Only a spec that cannot name build dependencies is called free of them; anything
    /// unreadable or too long to read whole may.
    #[tokio::test]
    async fn specs_naming_build_dependencies_are_told_apart() {
        let d = tempfile::tempdir().expect("tmp");
        let case = |name: &str, text: &[u8]| {
            let path = d.path().join(name);
            std::fs::write(&path, text).expect("write");
            path
        };
        let plain = case("plain.spec", b"Name: a\nVersion: 1\n%build\ntrue\n");
        assert!(!may_name_build_deps(&plain).await);
        for (name, text) in [
            ("br.spec", &b"Name: a\nBuildRequires: gcc\n"[..]),
            ("lower.spec", b"Name: a\nbuildrequires: gcc\n"),
            ("prereq.spec", b"Name: a\nBuildPreReq: gcc\n"),
            ("dyn.spec", b"Name: a\n%generate_buildrequires\necho gcc\n"),
            ("incl.spec", b"Name: a\n%include deps.inc\n"),
            ("bytes.spec", b"\xff\xfeName: a\nBUILDREQUIRES: gcc\n"),
        ] {
            assert!(may_name_build_deps(&case(name, text)).await, "{name}");
        }
        let long = case("long.spec", &vec![b'x'; (SPEC_SCAN_MAX + 1) as usize]);
        assert!(may_name_build_deps(&long).await);
        assert!(may_name_build_deps(&d.path().join("missing.spec")).await);
        assert!(may_name_build_deps(d.path()).await);
    }

    pub(super) fn target(name: &str) -> Target {
        let c = Config::parse(include_str!("../../../config/packetary.example.toml"), None)
            .expect("example parses");
        c.targets
            .values()
            .find(|t| t.name.as_str() == name)
            .cloned()
            .expect("target exists")
    }

    pub(super) fn repos() -> Vec<ContainerRepo> {
        vec![
            ContainerRepo {
                name: "fedora".into(),
                url: "https://example.org/f43/".into(),
            },
            ContainerRepo {
                name: "local".into(),
                url: "file:///repos/local".into(),
            },
        ]
    }

    #[test]
    fn quoting() {
        assert_eq!(sh_quote("/spec/a.spec"), "/spec/a.spec");
        assert_eq!(sh_quote("it's here"), r"'it'\''s here'");
        assert_eq!(sh_quote(""), "''");
    }

    /// Issue 22: a repository URL's credentials are written into a file dnf reads, never
    /// on the container's command line (`/proc/1/cmdline`, readable by spec code).
    #[test]
    fn credentials_of_a_repository_stay_off_the_command_line() {
        let mut repos = repos();
        repos[0].url = "https://user:s3cret@example.org/f43/".into();
        for t in ["bookworm-rpmbuild", "fedora-43"] {
            let s = script(&target(t), "a.spec", &repos);
            let steps: Vec<(&str, &str)> = [Some(&s.srpm), s.deps.as_ref(), Some(&s.build)]
                .into_iter()
                .flatten()
                .map(|b| ("phase", b.as_str()))
                .collect();
            let cmd = driver("n", &steps).join(" ");
            assert!(!cmd.contains("s3cret"), "{t}: {cmd}");
            assert!(
                s.files
                    .iter()
                    .any(|(_, f)| f.contains("https://user:s3cret@example.org/f43/")),
                "{t}: dnf is given the URL in a file"
            );
        }
        let s = script(&target("bookworm-rpmbuild"), "a.spec", &repos);
        let deps = s.deps.as_ref().expect("deps");
        assert!(deps.contains("--repo=fedora"), "{deps}");
        assert!(
            deps.contains("--repofrompath=local,file:///repos/local"),
            "{deps}"
        );
    }

    #[test]
    fn rpmbuild_two_phases_and_repos() {
        let s = script(&target("bookworm-rpmbuild"), "hello world.spec", &repos());
        let srpm = &s.srpm;
        assert!(srpm.contains("rpmbuild -bs"), "{srpm}");
        assert!(srpm.contains("'/spec/hello world.spec'"), "{srpm}");
        assert!(srpm.contains("_sourcedir /builddir/src"), "{srpm}");
        let deps = s.deps.as_ref().expect("rpmbuild installs deps");
        assert!(
            deps.contains("--repofrompath=fedora,https://example.org/f43/ --repo=fedora"),
            "{deps}"
        );
        assert!(
            deps.contains("--repofrompath=local,file:///repos/local"),
            "{deps}"
        );
        assert!(deps.contains(MISSING_MARK));
        let build = &s.build;
        assert!(
            build.contains("rpmbuild --rebuild --target x86_64"),
            "{build}"
        );
        // Docker's default capabilities dropped, a few kept for root's dependency phase.
        assert_eq!(s.cap_add[0], crate::docker::DROP_DEFAULT_CAPS);
        assert!(!s.cap_add.iter().any(|c| c == "NET_RAW" || c == "MKNOD"));
        // Spec code runs unprivileged, and its phases are not the dependency phase.
        assert!(srpm.contains("setpriv --reuid=builder"), "{srpm}");
        assert!(build.contains("setpriv --reuid=builder"), "{build}");
        assert!(!deps.contains("setpriv"), "{deps}");
    }

    #[test]
    fn rpm_is_told_to_use_source_date_epoch() {
        let s = script(&target("bookworm-rpmbuild"), "a.spec", &[]);
        for phase in [&s.srpm, &s.build] {
            for m in [
                "'use_source_date_epoch_as_buildtime 1'",
                "'clamp_mtime_to_source_date_epoch 1'",
                "'_buildhost packetary'",
            ] {
                assert!(phase.contains(m), "{m} missing: {phase}");
            }
            assert!(!phase.contains("clamp_mtime_to_source_epoch"), "{phase}");
        }
        let cfg = mock_config(&target("fedora-43"), &[]);
        assert!(
            cfg.contains("config_opts['macros']['%clamp_mtime_to_source_date_epoch'] = '1'"),
            "{cfg}"
        );
        assert!(
            cfg.contains("config_opts['environment']['SOURCE_DATE_EPOCH'] = "),
            "{cfg}"
        );
    }

    #[test]
    fn rpmbuild_without_repos_never_calls_dnf() {
        let s = script(&target("bookworm-rpmbuild"), "a.spec", &[]);
        let deps = s.deps.expect("deps");
        assert!(!deps.contains("dnf -y"), "{deps}");
        assert!(deps.contains("has no repositories"));
    }

    /// Issue 22 (H1): a cache per scope, none for an untrusted change.
    #[test]
    fn dependency_caches_are_kept_apart_by_scope() {
        use crate::executor::DepsCache;
        let t = target("bookworm-rpmbuild");
        let a = cache_volume(&t, &DepsCache::Shared("github:acme/pkgs".into())).expect("a");
        let b = cache_volume(&t, &DepsCache::Shared("github:other/pkgs".into())).expect("b");
        assert_ne!(a.0, b.0);
        assert_eq!(a.1, b.1);
        assert!(
            a.0.starts_with("packetary-deps-cache-bookworm-rpmbuild-"),
            "{}",
            a.0
        );
        assert_eq!(cache_volume(&t, &DepsCache::None), None);
    }

    #[test]
    fn driver_marks_each_phase() {
        let cmd = driver(
            "n1",
            &[
                ("srpm", "set -e\nfalse\necho not reached"),
                ("build", "exit 3"),
            ],
        );
        assert_eq!(cmd[..2], ["bash", "-c"]);
        let out = std::process::Command::new("bash")
            .args(["-c", &cmd[2]])
            .output()
            .expect("bash runs");
        assert_eq!(out.status.code(), Some(1));
        let text = String::from_utf8_lossy(&out.stdout);
        let (phases, oom) = text
            .split_once("@@packetary-n1 oom kills ")
            .expect("a failing step reports the OOM kill count");
        assert_eq!(
            phases,
            "@@packetary-n1 begin srpm\n@@packetary-n1 end srpm 1\n"
        );
        assert!(oom.trim_end().parse::<u64>().is_ok(), "{oom:?}");
        assert!(oom.ends_with('\n') && oom.lines().count() == 1, "{oom:?}");
        let cmd = driver("n2", &[("srpm", "true"), ("build", "exit 3")]);
        let out = std::process::Command::new("bash")
            .args(["-c", &cmd[2]])
            .output()
            .expect("bash runs");
        assert_eq!(out.status.code(), Some(3));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.starts_with("@@packetary-n2 begin srpm\n@@packetary-n2 end srpm 0\n@@packetary-n2 begin build\n@@packetary-n2 end build 3\n@@packetary-n2 oom kills "),
            "{text}"
        );
        let ok = driver("n3", &[("srpm", "true")]);
        let out = std::process::Command::new("bash")
            .args(["-c", &ok[2]])
            .output()
            .expect("bash runs");
        assert_eq!(out.status.code(), Some(0));
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("oom"),
            "only failures report"
        );
    }
}

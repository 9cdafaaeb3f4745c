//! What runs inside the build container, per backend. Pure functions of the target and the
//! package, so they are unit-tested without Docker.

use crate::config::{Backend, Target};

/// Where things are inside the build container.
pub const SPEC_DIR: &str = "/spec";
pub const SOURCE_DIR: &str = "/src";
pub const OUT_DIR: &str = "/out";
pub const REPO_DIR: &str = "/repos";
/// File in OUT_DIR where the SRPM phase leaves the package's NEVR.
pub const NEVR_FILE: &str = ".nevr";
/// Marker the dependency phase prints before each capability it could not install.
pub const MISSING_MARK: &str = "packetary: missing build dependency: ";

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

pub fn script(target: &Target, spec_file: &str, repos: &[ContainerRepo]) -> Script {
    match target.backend {
        Backend::Rpmbuild => rpmbuild(target, spec_file, repos),
        Backend::Mock => mock(target, spec_file, repos),
    }
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
    let mut s = format!("exec 2>&1\nmkdir -p {OUT_DIR}\n");
    for (phase, body) in steps {
        s.push_str(&format!(
            // Not `( ... ) || ...`: that context would switch off `set -e` inside the body.
            "echo {begin}\n(\n{body}\n)\nrc=$?\necho \"{end} $rc\"\n[ \"$rc\" -eq 0 ] || {{ {oom}; exit \"$rc\"; }}\n",
            begin = sh_quote(&marker(nonce, "begin", phase)),
            end = marker(nonce, "end", phase),
            oom = oom_report(nonce),
        ));
    }
    vec!["bash".into(), "-c".into(), s]
}

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
const OMP_PASSIVE: &str = "OMP_WAIT_POLICY=PASSIVE";

/// Macros for every rpmbuild call: a flat output layout and reproducible headers.
/// `sourcedir` is the read-only mount for `-bs`; a rebuild unpacks the SRPM elsewhere.
fn rpm_defines(sourcedir: &str) -> String {
    [
        ("_topdir", "/builddir/build"),
        ("_sourcedir", sourcedir),
        ("_specdir", "/builddir/build/SPECS"),
        ("_srcrpmdir", OUT_DIR),
        ("_rpmdir", OUT_DIR),
        (
            "_build_name_fmt",
            "%%{NAME}-%%{VERSION}-%%{RELEASE}.%%{ARCH}.rpm",
        ),
        ("_buildhost", "packetary"),
        ("source_date_epoch_from_changelog", "1"),
        ("use_source_date_epoch_as_buildtime", "1"),
        ("clamp_mtime_to_source_epoch", "1"),
    ]
    .iter()
    .map(|(k, v)| format!("--define {}", sh_quote(&format!("{k} {v}"))))
    .collect::<Vec<_>>()
    .join(" ")
}

fn rpmbuild(target: &Target, spec_file: &str, repos: &[ContainerRepo]) -> Script {
    let defines = rpm_defines(SOURCE_DIR);
    let spec = sh_quote(&format!("{SPEC_DIR}/{spec_file}"));
    let srpm = format!(
        r#"set -eu
mkdir -p /builddir/build
rpmbuild -bs {defines} {spec}
set -- {OUT_DIR}/*.src.rpm
[ "$#" -eq 1 ] && [ -f "$1" ] || {{ echo "packetary: expected one SRPM in {OUT_DIR}, found: $*"; exit 1; }}
# One rpm call for the NEVR (first line) and the BuildRequires (the rest) read by deps.
rpm -qp --qf '%{{NAME}}\t%{{EPOCH}}\t%{{VERSION}}\t%{{RELEASE}}\n[%{{REQUIRENEVRS}}\n]' "$1" > {OUT_DIR}/{NEVR_FILE}
echo "packetary: wrote ${{1##*/}}""#
    );

    let releasever = target.releasever.as_deref().unwrap_or("packetary");
    let dnf = if repos.is_empty() {
        format!(
            r#"echo "packetary: target {} has no repositories to install them from""#,
            target.name
        )
    } else {
        let mut args = vec![
            "dnf".to_string(),
            "-y".into(),
            "builddep".into(),
            "--nogpgcheck".into(),
            format!("--releasever={}", sh_quote(releasever)),
            "--setopt=cachedir=/var/cache/packetary-dnf".into(),
            "--setopt=reposdir=/nonexistent".into(),
        ];
        for r in repos {
            args.push(format!(
                "--repofrompath={}",
                sh_quote(&format!("{},{}", r.name, r.url))
            ));
            args.push(format!("--repo={}", sh_quote(&r.name)));
        }
        args.push("\"$srpm\"".into());
        format!("{} && exit 0", args.join(" "))
    };
    // Checking with rpm first keeps the common case (nothing to install) free of dnf's start-up.
    // Bash builtins only until something is to be queried: each process start costs CPU
    // that parallel builds compete for.
    let deps = format!(
        r#"set -u
set -- {OUT_DIR}/*.src.rpm
srpm=$1
reqs=()
{{ read -r _ || true; while IFS= read -r r; do case "$r" in rpmlib\(*|"") ;; *) reqs+=("$r");; esac; done; }} < {OUT_DIR}/{NEVR_FILE}
missing=()
if [ "${{#reqs[@]}}" -gt 0 ]; then
  while IFS= read -r line; do
    case "$line" in "no package provides "*) missing+=("${{line#no package provides }}");; esac
  done < <(rpm -q --whatprovides "${{reqs[@]}}" 2>&1)
fi
if [ "${{#missing[@]}}" -eq 0 ]; then echo "packetary: all build dependencies are installed"; exit 0; fi
printf 'packetary: to install: %s\n' "${{missing[@]}}"
{dnf}
for dep in "${{missing[@]}}"; do
  rpm -q --whatprovides "$dep" >/dev/null 2>&1 || echo "{MISSING_MARK}$dep"
done
exit 1"#
    );
    let build = format!(
        r#"set -eu
rpmbuild --rebuild --target {arch} {defines} {OUT_DIR}/*.src.rpm"#,
        arch = sh_quote(&target.arch),
        defines = rpm_defines("/builddir/build/SOURCES")
    );
    Script {
        srpm,
        deps: Some(deps),
        build,
        offline_build: true,
        files: vec![],
        env: vec![
            "LANG=C.UTF-8".into(),
            "HOME=/builddir".into(),
            OMP_PASSIVE.into(),
        ],
        cap_add: vec![],
        security_opt: vec!["no-new-privileges".into()],
    }
}

/// Path of the generated Mock configuration inside the container.
pub const MOCK_CFG: &str = "/out/.packetary/packetary.cfg";

fn mock(target: &Target, spec_file: &str, repos: &[ContainerRepo]) -> Script {
    let cfg = mock_config(target, repos);
    let common = format!("mock -r {MOCK_CFG} --isolation=simple --no-bootstrap-chroot");
    let srpm = format!(
        r#"set -eu
{common} --buildsrpm --spec {spec} --sources {SOURCE_DIR} --resultdir {OUT_DIR}/.packetary/srpm
mv {OUT_DIR}/.packetary/srpm/*.src.rpm {OUT_DIR}/
set -- {OUT_DIR}/*.src.rpm
rpm -qp --qf '%{{NAME}}\t%{{EPOCH}}\t%{{VERSION}}\t%{{RELEASE}}\n' "$1" > {OUT_DIR}/{NEVR_FILE}"#,
        spec = sh_quote(&format!("{SPEC_DIR}/{spec_file}"))
    );
    let build = format!(
        r#"set -eu
{common} --rebuild {OUT_DIR}/*.src.rpm --resultdir {OUT_DIR}/.packetary/rebuild
find {OUT_DIR}/.packetary/rebuild -name '*.rpm' ! -name '*.src.rpm' -exec mv {{}} {OUT_DIR}/ \;"#
    );
    Script {
        srpm,
        deps: None,
        build,
        offline_build: false,
        files: vec![("packetary.cfg".into(), cfg)],
        // Mock refuses plain root; it drops to the user sudo would name (see images/mock-*).
        env: vec![
            "LANG=C.UTF-8".into(),
            "SUDO_USER=mockbuild".into(),
            "SUDO_UID=1000".into(),
            "SUDO_GID=1000".into(),
            OMP_PASSIVE.into(),
        ],
        // Least privilege instead of --privileged, which these hosts refuse.
        cap_add: vec!["SYS_ADMIN".into(), "SYS_CHROOT".into(), "MKNOD".into()],
        security_opt: vec!["seccomp=unconfined".into(), "apparmor=unconfined".into()],
    }
}

/// Mock's configuration for a target: Python assignments to `config_opts`.
pub fn mock_config(target: &Target, repos: &[ContainerRepo]) -> String {
    let releasever = target.releasever.as_deref().unwrap_or("0");
    let mut s = String::new();
    let mut set = |k: &str, v: String| {
        let path: String = k.split('/').map(|p| format!("[{}]", py_str(p))).collect();
        s.push_str(&format!("config_opts{path} = {v}\n"))
    };
    set("root", py_str(&format!("packetary-{}", target.name)));
    set("target_arch", py_str(&target.arch));
    set("legal_host_arches", format!("({},)", py_str(&target.arch)));
    set("chroot_setup_cmd", py_str(&target.chroot_setup));
    set("releasever", py_str(releasever));
    if let Some(dist) = &target.dist {
        set("dist", py_str(dist));
        set("macros/%dist", py_str(&format!(".{dist}")));
    }
    set("package_manager", py_str("dnf"));
    set("isolation", py_str("simple"));
    set("use_bootstrap", "False".into());
    set("use_bootstrap_image", "False".into());
    set("rpmbuild_networking", "False".into());
    set("use_host_resolv", "False".into());
    set("plugin_conf/root_cache_enable", "True".into());
    set("plugin_conf/ccache_enable", "False".into());
    let mut dnf = String::from(
        "[main]\nkeepcache=1\ndebuglevel=2\nreposdir=/dev/null\nlogfile=/var/log/yum.log\nretries=20\nobsoletes=1\ngpgcheck=0\nassumeyes=1\nsyslog_ident=mock\nsyslog_device=\ninstall_weak_deps=0\nmetadata_expire=0\nbest=1\nprotected_packages=\n",
    );
    for r in repos {
        dnf.push_str(&format!(
            "\n[packetary-{name}]\nname={name}\nbaseurl={url}\nenabled=1\ngpgcheck=0\nskip_if_unavailable=False\n",
            name = r.name,
            url = r.url
        ));
    }
    set(
        "dnf.conf",
        format!("\"\"\"\n{}\"\"\"", dnf.replace('"', "\\\"")),
    );
    s
}

/// A Python string literal.
fn py_str(s: &str) -> String {
    format!(
        "'{}'",
        s.replace('\\', "\\\\")
            .replace('\'', "\\'")
            .replace('\n', "\\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn target(name: &str) -> Target {
        let c = Config::parse(include_str!("../../config/packetary.example.toml"), None)
            .expect("example parses");
        c.targets
            .values()
            .find(|t| t.name.as_str() == name)
            .cloned()
            .expect("target exists")
    }

    fn repos() -> Vec<ContainerRepo> {
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

    #[test]
    fn rpmbuild_two_phases_and_repos() {
        let s = script(&target("bookworm-rpmbuild"), "hello world.spec", &repos());
        let srpm = &s.srpm;
        assert!(srpm.contains("rpmbuild -bs"), "{srpm}");
        assert!(srpm.contains("'/spec/hello world.spec'"), "{srpm}");
        assert!(srpm.contains("'_sourcedir /src'"));
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
        assert!(s.cap_add.is_empty());
    }

    #[test]
    fn rpmbuild_without_repos_never_calls_dnf() {
        let s = script(&target("bookworm-rpmbuild"), "a.spec", &[]);
        let deps = s.deps.expect("deps");
        assert!(!deps.contains("dnf"), "{deps}");
        assert!(deps.contains("has no repositories"));
    }

    #[test]
    fn mock_config_and_commands() {
        let t = target("fedora-43");
        let s = script(&t, "pkg.spec", &repos());
        assert!(s.deps.is_none());
        assert!(s.srpm.contains(&format!(
            "mock -r {MOCK_CFG} --isolation=simple --no-bootstrap-chroot"
        )));
        assert!(s
            .srpm
            .contains("--buildsrpm --spec /spec/pkg.spec --sources /src"));
        assert!(s
            .build
            .contains("--rebuild /out/*.src.rpm --resultdir /out/.packetary/rebuild"));
        assert_eq!(s.cap_add, ["SYS_ADMIN", "SYS_CHROOT", "MKNOD"]);
        assert!(s.env.contains(&"SUDO_UID=1000".to_string()));
        assert!(!s.security_opt.iter().any(|o| o.contains("privileged")));

        let (name, cfg) = &s.files[0];
        assert_eq!(name, "packetary.cfg");
        for line in [
            "config_opts['root'] = 'packetary-fedora-43'",
            "config_opts['target_arch'] = 'x86_64'",
            "config_opts['chroot_setup_cmd'] = 'install @buildsys-build'",
            "config_opts['releasever'] = '43'",
            "config_opts['dist'] = 'fc43'",
            "config_opts['macros']['%dist'] = '.fc43'",
            "config_opts['isolation'] = 'simple'",
            "config_opts['use_bootstrap'] = False",
            "config_opts['rpmbuild_networking'] = False",
        ] {
            assert!(cfg.lines().any(|l| l == line), "missing {line:?} in\n{cfg}");
        }
        assert!(cfg.contains("[packetary-fedora]\nname=fedora\nbaseurl=https://example.org/f43/\n"));
        assert!(cfg.contains("[packetary-local]\nname=local\nbaseurl=file:///repos/local\n"));
        // The dnf.conf block is one Python triple-quoted string.
        assert_eq!(cfg.matches("\"\"\"").count(), 2);
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

    #[test]
    fn python_strings_are_escaped() {
        assert_eq!(py_str("a'b\\c\nd"), r"'a\'b\\c\nd'");
    }
}

//! The mock backend: Mock in the target's image builds the SRPM, then rebuilds it in the
//! same buildroot (`--no-clean`): one buildroot per build, and none at all to make when the
//! build starts from a warm buildroot image (see `executor::mockroot`).
//!
//! Mock runs as root and drops to the user `sudo` would name; that user is read from the
//! image (`SUDO_USER`, else `mockbuild`) when the build starts, never assumed. Its
//! `--resultdir`s, under [`MOCK_LOGS`], belong to that user; Mock's logs there are taken
//! out of the container as the build's `logs/mock/<phase>/` (see `executor::results`).

use super::{
    sh_quote, ContainerRepo, Script, Verdict, MISSING_MARK, NEVR_FILE, OMP_PASSIVE, OUT_DIR,
    SOURCE_DIR, SPEC_DIR,
};
use crate::config::Target;

/// Path of the generated Mock configuration inside the container.
pub const MOCK_CFG: &str = "/out/.packetary/packetary.cfg";
/// Mock's result directories, one per call (`srpm`, `build`): Mock's logs stay there.
pub const MOCK_LOGS: &str = "/out/.packetary/logs";
/// Logs Mock writes into a result directory, kept as the build's.
pub const MOCK_LOG_NAMES: &[&str] = &[
    "build.log",
    "root.log",
    "state.log",
    "hw_info.log",
    "installed_pkgs.log",
];
/// Exit code of the scripts' own setup faults (no Mock, no user to drop to): infra.
pub const SETUP_FAULT: i64 = 97;
/// Prefix of the line naming a setup fault.
pub const SETUP_MARK: &str = "packetary: setup fault: ";
/// Where the setup puts the package managers Mock calls, wrapped to run without
/// `SYS_ADMIN` (see [`setup`]).
pub const WRAP_DIR: &str = "/run/packetary-mock";
/// Where Mock keeps the buildroot of a target (config `root`), inside the container.
pub const MOCK_BASEDIR: &str = "/var/lib/mock";

/// Capabilities Mock needs in a container beyond Docker's default set: mounts and
/// namespaces (`SYS_ADMIN`); chroot and device nodes are in the default set already but
/// named so that a daemon with a smaller default still works.
pub const CAPS: &[&str] = &["SYS_ADMIN", "SYS_CHROOT", "MKNOD"];
/// Docker's default seccomp profile allows mount/umount2/unshare/setns once `SYS_ADMIN`
/// is added, which is all Mock's simple isolation uses: no `seccomp=unconfined`. Mock drops
/// privileges with setresuid, never through a setuid binary: `no-new-privileges` holds.
/// AppArmor's `docker-default` profile denies every mount, so Mock cannot run under it.
pub const SECURITY_OPT: &[&str] = &["no-new-privileges", "apparmor=unconfined"];

/// Shell run first in every phase: finds the user Mock drops to in the image, checks that
/// Mock is there, and exports what Mock reads. A fault here is the image's, not the
/// package's: it exits [`SETUP_FAULT`].
fn setup() -> String {
    format!(
        r#"set -eu
fault() {{ echo "{SETUP_MARK}$*"; exit {SETUP_FAULT}; }}
command -v mock >/dev/null 2>&1 || fault "the image has no mock command (is it a Mock image?)"
user="${{SUDO_USER:-mockbuild}}"
uid=$(id -u "$user" 2>/dev/null) || fault "the image has no user $user for Mock to drop to (set SUDO_USER in the image, or create the user)"
gid=$(id -g "$user")
export SUDO_USER="$user" SUDO_UID="$uid" SUDO_GID="$gid"
# dnf (and the scriptlets of every package it installs, run as root) without SYS_ADMIN:
# only Mock's own mounts need it.
command -v setpriv >/dev/null 2>&1 || fault "the image has no setpriv (util-linux)"
install -d {WRAP_DIR}
for pm in dnf-3:dnf4 dnf5:dnf5; do
  real=$(command -v "${{pm%%:*}}" 2>/dev/null) || continue
  printf '#!/bin/sh\nexec setpriv --inh-caps=-sys_admin --bounding-set=-sys_admin -- %s "$@"\n' "$real" > {WRAP_DIR}/"${{pm#*:}}"
  chmod 0755 {WRAP_DIR}/"${{pm#*:}}"
done
# pk_mock RESULTDIR ARGS...: one Mock call; its result directory belongs to Mock's user.
# When dnf could not find a BuildRequires (exit 30), each capability is named.
pk_mock() {{
  rd=$1; shift
  install -d -o "$SUDO_UID" -g "$SUDO_GID" "$rd" || fault "cannot create $rd for $SUDO_USER"
  rc=0
  mock -r {MOCK_CFG} --isolation=simple --no-bootstrap-chroot --no-clean --resultdir "$rd" "$@" || rc=$?
  if [ "$rc" -eq 30 ] && [ -f "$rd/root.log" ]; then
    sed -n "s/.*No matching package to install: '\(.*\)'.*/{MISSING_MARK}\1/p" "$rd/root.log" | awk '!seen[$0]++'
  fi
  return "$rc"
}}"#
    )
}

pub(super) fn script(target: &Target, spec_file: &str, repos: &[ContainerRepo]) -> Script {
    let cfg = mock_config(target, repos);
    let srpm = format!(
        r#"{setup}
pk_mock {MOCK_LOGS}/srpm --buildsrpm --spec {spec} --sources {SOURCE_DIR}
mv {MOCK_LOGS}/srpm/*.src.rpm {OUT_DIR}/
set -- {OUT_DIR}/*.src.rpm
{check}
rpm -qp --qf '%{{NAME}}\t%{{EPOCH}}\t%{{VERSION}}\t%{{RELEASE}}\n' "$1" > {OUT_DIR}/{NEVR_FILE}"#,
        setup = setup(),
        check = super::unexpanded_nevr_check(),
        spec = sh_quote(&format!("{SPEC_DIR}/{spec_file}"))
    );
    let build = format!(
        r#"{setup}
set -- {OUT_DIR}/*.src.rpm
pk_mock {MOCK_LOGS}/build --rebuild "$1"
find {MOCK_LOGS}/build -name '*.rpm' ! -name '*.src.rpm' -exec mv {{}} {OUT_DIR}/ \;"#,
        setup = setup(),
    );
    Script {
        srpm,
        deps: None,
        build,
        offline_build: false,
        files: vec![("packetary.cfg".into(), cfg)],
        env: vec!["LANG=C.UTF-8".into(), OMP_PASSIVE.into()],
        cap_add: CAPS.iter().map(|c| c.to_string()).collect(),
        security_opt: SECURITY_OPT.iter().map(|c| c.to_string()).collect(),
    }
}

/// A Mock-specific reading of a failed phase: Mock's exit codes say whose fault it is
/// (`mockbuild/exception.py`). `None` leaves it to the generic reading.
pub(super) fn classify(code: i64, text: &str) -> Option<Verdict> {
    let mock_error = || {
        text.lines()
            .map(str::trim)
            .find(|l| l.starts_with("ERROR:"))
            .map(str::to_string)
    };
    match code {
        SETUP_FAULT => Some(Verdict::Infra(
            text.lines()
                .find_map(|l| l.strip_prefix(SETUP_MARK))
                .map(|m| format!("the Mock image cannot build: {m}"))
                .unwrap_or_else(|| "the Mock image cannot build (setup fault)".into()),
        )),
        30 => {
            let missing = super::super::classify::missing_capabilities(text);
            if !missing.is_empty() {
                return Some(Verdict::MissingDeps(missing));
            }
            let unreachable = text.lines().any(|l| {
                l.contains("Failed to download metadata")
                    || l.contains("Cannot download repomd.xml")
                    || l.contains("Curl error")
            });
            unreachable.then(|| {
                Verdict::Infra(format!(
                    "Mock could not reach a repository: {}",
                    mock_error().unwrap_or_else(|| "exit status 30".into())
                ))
            })
        }
        // Configuration, command line, lock, result directory, namespaces, bootstrap,
        // state: Packetary's or the image's, not the package's.
        2 | 3 | 5 | 6 | 20 | 60 | 65 | 70 | 80 | 90 | 110 => Some(Verdict::Infra(format!(
            "Mock failed to set up the build (exit {code}): {}",
            mock_error().unwrap_or_else(|| "see logs/root.log".into())
        ))),
        _ => None,
    }
}

/// Mock's configuration for a target: Python assignments to `config_opts`.
pub fn mock_config(target: &Target, repos: &[ContainerRepo]) -> String {
    let releasever = target.releasever.as_deref().unwrap_or("0");
    // The same distribution macros the spec queries that planned the build saw.
    let mut macros = String::new();
    for (k, v) in target.rpm_macros() {
        let v = if v.is_empty() {
            "%{nil}".to_string()
        } else {
            v
        };
        macros.push_str(&format!(
            "config_opts['macros'][{}] = {}\n",
            py_str(&format!("%{k}")),
            py_str(&v)
        ));
    }
    let mut s = String::new();
    let mut set = |k: &str, v: String| {
        let path: String = k.split('/').map(|p| format!("[{}]", py_str(p))).collect();
        s.push_str(&format!("config_opts{path} = {v}\n"))
    };
    set("root", py_str(&mock_root(target)));
    set("basedir", py_str(MOCK_BASEDIR));
    set("target_arch", py_str(&target.arch));
    set("legal_host_arches", format!("({},)", py_str(&target.arch)));
    set("chroot_setup_cmd", py_str(&target.chroot_setup));
    set("releasever", py_str(releasever));
    if let Some(dist) = &target.dist {
        set("dist", py_str(dist));
    }

    set("package_manager", py_str("dnf"));
    set("dnf4_command", py_str(&format!("{WRAP_DIR}/dnf4")));
    set("dnf5_command", py_str(&format!("{WRAP_DIR}/dnf5")));
    set("isolation", py_str("simple"));
    set("use_bootstrap", "False".into());
    set("use_bootstrap_image", "False".into());
    set("rpmbuild_networking", "False".into());
    set("use_host_resolv", "False".into());
    // The container is thrown away after the build: a root cache tarball would be made
    // for nobody (the warm buildroot image replaces it), and cleaning up is wasted time.
    set("plugin_conf/root_cache_enable", "False".into());
    set("plugin_conf/ccache_enable", "False".into());
    set("cleanup_on_success", "False".into());
    set("cleanup_on_failure", "False".into());
    // rpmbuild's output on Mock's console too: the build's log shows it live, and a
    // failure's first error line is read from it.
    set("print_main_output", "True".into());
    // Mock reads rpmbuild's stdout and stderr from two pipes and prints what is ready,
    // stdout first: a line written to stdout after a stderr line came out before it, or
    // in the middle of it (`+ test` / blank / ` 41 = 42`), and the summary named half a
    // command. One pipe keeps the spec's order. Mock runs this in `bash -c`; fd 3 holds
    // the stderr pipe open until rpmbuild ends, as Mock stops reading when either ends.
    set(
        "rpmbuild_command",
        py_str("exec 3>&2 2>&1 /usr/bin/rpmbuild"),
    );
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
    // Reproducible packages (see `rpmbuild::REPRODUCIBLE`): rpm inside the buildroot gets
    // the macros, and SOURCE_DATE_EPOCH from the container's environment (Mock passes
    // only `environment` into the chroot). Read when Mock loads the file, so the file
    // itself, part of the warm buildroot's key, is the same for every build.
    for (k, v) in super::rpmbuild::REPRODUCIBLE {
        s.push_str(&format!(
            "config_opts['macros'][{}] = {}\n",
            py_str(&format!("%{k}")),
            py_str(v)
        ));
    }
    s.push_str(&macros);
    s.push_str(
        "if __import__('os').environ.get('SOURCE_DATE_EPOCH', '').isdigit():\n    config_opts['environment']['SOURCE_DATE_EPOCH'] = __import__('os').environ['SOURCE_DATE_EPOCH']\n",
    );
    s
}

/// Mock's name for the target's buildroot (its directory under [`MOCK_BASEDIR`]).
pub fn mock_root(target: &Target) -> String {
    format!("packetary-{}", target.name)
}

/// The command that initializes a target's buildroot for a warm buildroot image: Mock's
/// `--init` with the build's own configuration (given hex-encoded, so no quoting is
/// involved; Mock brings python3), then nothing of it left in `OUT_DIR`.
pub fn init_command(cfg: &str) -> Vec<String> {
    let body = format!(
        r#"exec 2>&1
mkdir -p {OUT_DIR}/.packetary
python3 -c 'import sys; sys.stdout.buffer.write(bytes.fromhex(sys.argv[1]))' {hex} > {MOCK_CFG}
{setup}
pk_mock {MOCK_LOGS}/init --init
rm -rf {OUT_DIR}"#,
        hex = hex::encode(cfg),
        setup = setup()
    );
    vec!["bash".into(), "-c".into(), body]
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
    use super::super::script as backend_script;
    use super::super::tests::{repos, target};
    use super::*;

    #[test]
    fn mock_config_and_commands() {
        let t = target("fedora-43");
        let s = backend_script(&t, "pkg.spec", &repos());
        assert!(s.deps.is_none());
        assert!(s.srpm.contains(&format!(
            "mock -r {MOCK_CFG} --isolation=simple --no-bootstrap-chroot --no-clean --resultdir"
        )));
        assert!(s.srpm.contains(
            "pk_mock /out/.packetary/logs/srpm --buildsrpm --spec /spec/pkg.spec --sources /src"
        ));
        assert!(s
            .build
            .contains("pk_mock /out/.packetary/logs/build --rebuild \"$1\""));
        assert_eq!(s.cap_add, ["SYS_ADMIN", "SYS_CHROOT", "MKNOD"]);
        // The user comes from the image, not from here.
        assert!(!s.env.iter().any(|e| e.starts_with("SUDO_")), "{:?}", s.env);
        assert!(s.srpm.contains("id -u \"$user\""));
        assert!(!s.security_opt.iter().any(|o| o.contains("privileged")));
        assert!(!s.security_opt.iter().any(|o| o.contains("seccomp")));
        assert!(s.security_opt.contains(&"no-new-privileges".to_string()));

        let (name, cfg) = &s.files[0];
        assert_eq!(name, "packetary.cfg");
        for line in [
            "config_opts['root'] = 'packetary-fedora-43'",
            "config_opts['target_arch'] = 'x86_64'",
            "config_opts['chroot_setup_cmd'] = 'install @buildsys-build'",
            "config_opts['releasever'] = '43'",
            "config_opts['dist'] = 'fc43'",
            "config_opts['macros']['%dist'] = '.fc43'",
            "config_opts['macros']['%fedora'] = '43'",
            "config_opts['isolation'] = 'simple'",
            "config_opts['use_bootstrap'] = False",
            "config_opts['rpmbuild_networking'] = False",
            "config_opts['plugin_conf']['root_cache_enable'] = False",
            "config_opts['cleanup_on_success'] = False",
            "config_opts['print_main_output'] = True",
            "config_opts['rpmbuild_command'] = 'exec 3>&2 2>&1 /usr/bin/rpmbuild'",
        ] {
            assert!(cfg.lines().any(|l| l == line), "missing {line:?} in\n{cfg}");
        }
        assert!(cfg.contains("[packetary-fedora]\nname=fedora\nbaseurl=https://example.org/f43/\n"));
        assert!(cfg.contains("[packetary-local]\nname=local\nbaseurl=file:///repos/local\n"));
        // The dnf.conf block is one Python triple-quoted string.
        assert_eq!(cfg.matches("\"\"\"").count(), 2);
    }

    #[test]
    fn setup_runs_in_bash_and_finds_the_user() {
        // The setup's shell is valid and its fault path exits SETUP_FAULT with its mark.
        let body = format!("{}\nfault 'no user x'", setup());
        let out = std::process::Command::new("/bin/bash")
            .args(["-c", &body])
            .env("PATH", "/nonexistent")
            .output()
            .expect("bash runs");
        assert_eq!(out.status.code(), Some(SETUP_FAULT as i32));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.starts_with(SETUP_MARK), "{text}");
        assert!(text.contains("no mock command"), "{text}");
    }

    #[test]
    fn init_command_carries_the_config() {
        let cfg = "config_opts['root'] = 'a\"b'\n\u{e9}\n";
        let cmd = init_command(cfg);
        let body = &cmd[2];
        let line = body
            .lines()
            .find(|l| l.starts_with("python3 "))
            .expect("decode line");
        let decode = line.split(" > ").next().expect("command");
        let out = std::process::Command::new("bash")
            .args(["-c", decode])
            .output()
            .expect("python3");
        assert_eq!(String::from_utf8_lossy(&out.stdout), cfg);
        assert!(body.contains("pk_mock /out/.packetary/logs/init --init"));
    }

    #[test]
    fn exit_codes_say_whose_fault() {
        let t = format!("x\n{MISSING_MARK}foo-devel >= 2\n{MISSING_MARK}bar\n");
        assert_eq!(
            classify(30, &t),
            Some(Verdict::MissingDeps(vec![
                "foo-devel >= 2".into(),
                "bar".into()
            ]))
        );
        assert!(matches!(
            classify(30, "Errors during downloading metadata for repository 'x':\nCurl error (7): Couldn't connect\nERROR: Command failed"),
            Some(Verdict::Infra(m)) if m.contains("ERROR: Command failed")
        ));
        assert_eq!(classify(30, "Problem: conflicting requests\n"), None);
        assert!(matches!(
            classify(70, "ERROR: Could not create dir /out/x. Error: [Errno 13] Permission denied\n"),
            Some(Verdict::Infra(m)) if m.contains("Permission denied") && m.contains("exit 70")
        ));
        assert!(matches!(
            classify(SETUP_FAULT, &format!("{SETUP_MARK}the image has no user mockbuild\n")),
            Some(Verdict::Infra(m)) if m.contains("no user mockbuild")
        ));
        // rpmbuild's failure (Mock exits 1 or 10): the package's, read generically.
        assert_eq!(classify(1, "error: Bad exit status\n"), None);
        assert_eq!(classify(10, "error: Bad exit status\n"), None);
    }

    #[test]
    fn python_strings_are_escaped() {
        assert_eq!(py_str("a'b\\c\nd"), r"'a\'b\\c\nd'");
    }
}

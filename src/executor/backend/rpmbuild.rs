//! The rpmbuild backend: rpm and dnf in the target's image, one phase per rpmbuild call.

use super::{
    sh_quote, target_defines, ContainerRepo, Script, MISSING_MARK, NEVR_FILE, OMP_PASSIVE, OUT_DIR,
    SOURCE_DIR, SPEC_DIR,
};
use crate::config::Target;
use crate::docker::DROP_DEFAULT_CAPS;

/// Macros for every rpmbuild call: a flat output layout and reproducible packages
/// (`SOURCE_DATE_EPOCH`, set in the container's environment, as the build time and as
/// the upper bound of every file's mtime; one build host name).
/// `sourcedir` is the build user's copy of the sources for `-bs`; a rebuild unpacks the
/// SRPM elsewhere.
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
    ]
    .iter()
    .chain(REPRODUCIBLE)
    .map(|(k, v)| format!("--define {}", sh_quote(&format!("{k} {v}"))))
    .collect::<Vec<_>>()
    .join(" ")
}

/// Macros that make rpm's output a function of its inputs: with `SOURCE_DATE_EPOCH` in the
/// environment, rpm writes it as BUILDTIME and clamps newer file mtimes to it, in the SRPM
/// and in the binary packages; the build host is fixed; `%changelog` does not override the
/// epoch given. Shared with the mock backend.
pub(super) const REPRODUCIBLE: &[(&str, &str)] = &[
    ("_buildhost", "packetary"),
    ("source_date_epoch_from_changelog", "0"),
    ("use_source_date_epoch_as_buildtime", "1"),
    ("clamp_mtime_to_source_date_epoch", "1"),
];

/// The unprivileged user of the image (see images/rpmbuild/Dockerfile) that spec code runs as.
const BUILD_USER: &str = "builder";
/// Where the build user finds copies of the read-only inputs.
const BUILD_SPEC_DIR: &str = "/builddir/spec";
const BUILD_SOURCE_DIR: &str = "/builddir/src";
/// Root's own directory for the `.repo` file of repositories whose URLs carry credentials:
/// they are never on a command line (`/proc/*/cmdline`), and the build user cannot read
/// them.
const CRED_REPOS_DIR: &str = "/run/packetary-repos";
/// The generated file (under `OUT_DIR/.packetary/`) moved into [`CRED_REPOS_DIR`].
const CRED_REPOS_FILE: &str = "credentials.repo";
/// Mount point of the target's dependency cache volume (see [`cache_volume`]).
pub(super) const CACHE_DIR: &str = "/var/cache/packetary";

/// Capabilities of the container, for the dependency phase (root: apt, dpkg, dnf, rpm) and
/// the driver's own set-up; the srpm and build phases drop all of them (see [`as_builder`]).
/// Docker's defaults also hold NET_RAW, MKNOD, SYS_CHROOT, AUDIT_WRITE, NET_BIND_SERVICE,
/// SETFCAP: none is used.
pub(super) const CAPS: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "SETUID",
    "SETGID",
    "SETPCAP",
    "KILL",
];

/// Refuses to go on with any network interface but loopback up: spec code never runs
/// online, whatever the executor did with the container's networks (the local one removes
/// them, a Swarm job's agent switches their links down). Read from sysfs, which the
/// container cannot remount.
const OFFLINE_CHECK: &str = r#"for i in /sys/class/net/*; do [ "${i##*/}" = lo ] && continue; f=$(<"$i/flags"); (( f & 1 )) && { echo "packetary: refusing to run spec code with network interface ${i##*/} up"; exit 1; }; done; true"#;

/// Kills every process of the build user (bash's `kill -1` as that user: all it may signal).
const KILL_LEFTOVERS: &str = "setpriv --reuid=builder --regid=builder --clear-groups -- bash -c 'kill -KILL -1' 2>/dev/null || true";

/// A phase body run as the build user with no capabilities at all (effective, permitted,
/// inheritable, ambient and bounding sets empty), so that spec code (`%()` macros,
/// `%prep`, `%build`) has no root and nothing to regain it with.
fn as_builder(body: &str) -> String {
    format!(
        "setpriv --reuid={BUILD_USER} --regid={BUILD_USER} --init-groups --inh-caps=-all --ambient-caps=-all --bounding-set=-all --no-new-privs -- env HOME=/builddir USER={BUILD_USER} LOGNAME={BUILD_USER} bash -c {}",
        sh_quote(body)
    )
}

/// The named volume caching what the dependency phase downloads (apt's lists and archives,
/// resolved names), one per target, mounted at [`CACHE_DIR`]. Only root writes it: spec code
/// runs as the build user and cannot plant packages for later builds.
pub(super) fn cache_volume(target: &Target) -> String {
    let name: String = target
        .name
        .as_str()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("packetary-deps-cache-{name}")
}

pub(super) fn script(target: &Target, spec_file: &str, repos: &[ContainerRepo]) -> Script {
    let defines = format!(
        "{} {}",
        rpm_defines(BUILD_SOURCE_DIR),
        target_defines(target)
    );
    let spec = sh_quote(&format!("{BUILD_SPEC_DIR}/{spec_file}"));
    let cred_repos: Vec<&ContainerRepo> = repos
        .iter()
        .filter(|r| crate::model::has_userinfo(&r.url))
        .collect();
    let srpm_inner = format!(
        r#"set -eu
mkdir -p /builddir/build
rpmbuild -bs {defines} {spec}
set -- {OUT_DIR}/*.src.rpm
[ "$#" -eq 1 ] && [ -f "$1" ] || {{ echo "packetary: expected one SRPM in {OUT_DIR}, found: $*"; exit 1; }}
{check}
# One rpm call for the NEVR (first line) and the BuildRequires (the rest) read by deps.
rpm -qp --qf '%{{NAME}}\t%{{EPOCH}}\t%{{VERSION}}\t%{{RELEASE}}\n[%{{REQUIRENEVRS}}\n]' "$1" > {OUT_DIR}/{NEVR_FILE}
echo "packetary: wrote ${{1##*/}}""#,
        check = super::unexpanded_nevr_check()
    );
    // The inputs are mounted read-only from the host with the host's modes: copies give
    // the build user something it can read.
    let srpm = format!(
        r#"set -eu
{OFFLINE_CHECK}
id -u {BUILD_USER} >/dev/null 2>&1 || {{ echo "packetary: error: the image has no user {BUILD_USER} to build as (an image older than this packetary?)"; echo "  fix: rebuild it: packetary images build rpmbuild"; exit 1; }}
rm -rf {BUILD_SPEC_DIR} {BUILD_SOURCE_DIR}
mkdir -p {BUILD_SPEC_DIR} {OUT_DIR}
{move_creds}
cp -rT {SOURCE_DIR} {BUILD_SOURCE_DIR}
cp {in_spec} {BUILD_SPEC_DIR}/
chown -R {BUILD_USER}:{BUILD_USER} /builddir {OUT_DIR}
{run}
# Nothing the spec started lives on into the dependency phase, which may have network.
{KILL_LEFTOVERS}"#,
        in_spec = sh_quote(&format!("{SPEC_DIR}/{spec_file}")),
        move_creds = if cred_repos.is_empty() {
            String::new()
        } else {
            format!("mkdir -m 700 -p {CRED_REPOS_DIR}\nmv {OUT_DIR}/.packetary/{CRED_REPOS_FILE} {CRED_REPOS_DIR}/")
        },
        run = as_builder(&srpm_inner),
    );

    let releasever = target.releasever.as_deref().unwrap_or("packetary");
    let dnf = if repos.is_empty() {
        format!(
            r#"echo "packetary: target {} has no repositories to install them from; trying Debian""#,
            target.name
        )
    } else {
        let mut args = vec![
            "dnf".to_string(),
            "-y".into(),
            "builddep".into(),
            "--skip-unavailable".into(),
            "--nogpgcheck".into(),
            format!("--releasever={}", sh_quote(releasever)),
            "--setopt=cachedir=/var/cache/packetary-dnf".into(),
            format!(
                "--setopt=reposdir={}",
                if cred_repos.is_empty() {
                    "/nonexistent"
                } else {
                    CRED_REPOS_DIR
                }
            ),
        ];
        for r in repos {
            if !crate::model::has_userinfo(&r.url) {
                args.push(format!(
                    "--repofrompath={}",
                    sh_quote(&format!("{},{}", r.name, r.url))
                ));
            }
            args.push(format!("--repo={}", sh_quote(&r.name)));
        }
        args.push("\"$srpm\"".into());
        let needs_network = repos
            .iter()
            .any(|r| r.url.starts_with("http://") || r.url.starts_with("https://"));
        format!(
            "{}{}",
            if needs_network {
                "online || return 1\n"
            } else {
                ""
            },
            args.join(" ")
        )
    };
    let deps = format!(
        "OUT_DIR={OUT_DIR}\nNEVR_FILE={NEVR_FILE}\nMISSING_MARK={mark}\ninstall_from_repos() {{\n{dnf}\n}}\n{body}",
        mark = sh_quote(MISSING_MARK),
        body = include_str!("rpmbuild-deps.sh"),
    );
    let build = format!(
        "set -eu\n{OFFLINE_CHECK}\n{}",
        as_builder(&format!(
            r#"set -eu
rpmbuild --rebuild --target {arch} {defines} {macros} {OUT_DIR}/*.src.rpm"#,
            arch = sh_quote(&target.arch),
            defines = rpm_defines("/builddir/build/SOURCES"),
            macros = target_defines(target)
        ))
    );
    Script {
        srpm,
        deps: Some(deps),
        build,
        offline_build: true,
        files: if cred_repos.is_empty() {
            vec![]
        } else {
            vec![(CRED_REPOS_FILE.to_string(), cred_repo_file(&cred_repos))]
        },
        env: vec![
            "LANG=C.UTF-8".into(),
            "HOME=/builddir".into(),
            OMP_PASSIVE.into(),
        ],
        cap_add: std::iter::once(DROP_DEFAULT_CAPS)
            .chain(CAPS.iter().copied())
            .map(String::from)
            .collect(),
        security_opt: vec!["no-new-privileges".into()],
    }
}

/// A dnf `.repo` file for `repos` (their names are the executor's, their URLs written
/// as given: dnf reads the credentials from them).
fn cred_repo_file(repos: &[&ContainerRepo]) -> String {
    repos
        .iter()
        .map(|r| {
            format!(
                "[{0}]\nname={0}\nbaseurl={1}\nenabled=1\ngpgcheck=0\n\n",
                r.name,
                r.url.replace('\n', "")
            )
        })
        .collect()
}
